"""Model code shipped inside an exported PFM directory (``promptforget.pfm.export``).

The files here are copied next to ``config.json`` and loaded by ``transformers`` with
``trust_remote_code=True``; they import only torch and transformers, never promptforget.
"""
