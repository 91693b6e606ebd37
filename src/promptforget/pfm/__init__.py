"""Pre-Forgettable Models: one learnable prompt per class; forgetting a class = deleting its prompt.

Names are imported lazily so that commands which need no torch (ledger, forget) start fast.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "PFMConfig": "promptforget.pfm.config",
    "PFMModel": "promptforget.pfm.model",
    "UnknownClassError": "promptforget.pfm.model",
    "forget_run": "promptforget.pfm.model",
    "fit": "promptforget.pfm.train",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'promptforget.pfm' has no attribute {name!r}")
