"""The run directory, lowest layer, torch-free: its layout, the safetensors artefact at byte level, the
deletion ledger, and the one durable forget path that keeps artefact and ledger consistent.

- :mod:`promptforget.store.layout`   file names, class-key encoding, active classes, the recorded split
- :mod:`promptforget.store.artefact` byte-level access to ``model.safetensors``
- :mod:`promptforget.store.ledger`   the hash-chained, append-only ledger and its verification
- :mod:`promptforget.store.durable`  the crash-consistent forget (CLI, Python, HTTP all use it) and the
  install of an exact forget's retrained artefact
"""

from __future__ import annotations

import importlib

# Exported lazily: reading a file name from ``store.layout`` must not load the forget machinery.
_EXPORTS = {
    "forget": "durable", "recover": "durable", "ForgetError": "durable", "ForgetResult": "durable",
    "verify": "ledger", "Ledger": "ledger", "LedgerError": "ledger", "LEDGER_NAME": "layout",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"promptforget.store.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'promptforget.store' has no attribute {name!r}")
