"""promptforget: machine unlearning by design.

Knowledge is bound to prompt tokens, so it can be removed on request:
- :mod:`promptforget.pfm`  Pre-Forgettable Models (one prompt per class; forget = delete the prompt)
- :mod:`promptforget.spul` Soft Prompting for UnLearning in frozen causal LLMs
- :mod:`promptforget.audit`, :mod:`promptforget.service`: proof and deployment around both.
"""

__version__ = "0.1.0"
