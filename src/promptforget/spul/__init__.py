"""SPUL: soft-prompt unlearning for frozen causal LLMs (Bhaila et al., NAACL 2025).

Stage 1 (:func:`finetune`) teaches a causal LM the task with LoRA and merges it; :class:`SPUL` then
trains a P-tuning soft prompt so that the frozen model answers a generic label on the forget set and
keeps its behaviour on the retain set. Heavy imports (torch, peft) happen on first attribute access.
"""

from promptforget.spul.config import FinetuneConfig, SPULConfig

__all__ = ["FinetuneConfig", "SPULConfig", "SPUL", "finetune"]


def __getattr__(name):
    if name == "SPUL":
        from promptforget.spul.model import SPUL

        return SPUL
    if name == "finetune":
        from promptforget.spul.train import finetune

        return finetune
    raise AttributeError(name)
