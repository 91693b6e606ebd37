"""The run directory, lowest layer, torch-free: its layout, the safetensors artefact at byte level, the
deletion ledger, and the one durable forget path that keeps artefact and ledger consistent.

- :mod:`promptforget.store.layout`   file names, class-key encoding, active classes, the recorded split
- :mod:`promptforget.store.artefact` byte-level access to ``model.safetensors``
- :mod:`promptforget.store.ledger`   the hash-chained, append-only ledger and its verification
- :mod:`promptforget.store.durable`  the crash-consistent forget (CLI, Python, HTTP all use it)
"""

from promptforget.store.durable import ForgetError, ForgetResult, forget, recover
from promptforget.store.layout import LEDGER_NAME
from promptforget.store.ledger import Ledger, LedgerError, verify

__all__ = ["forget", "recover", "verify", "Ledger", "LedgerError", "ForgetError", "ForgetResult", "LEDGER_NAME"]
