"""Forget service and deletion ledger.

- :mod:`promptforget.service.durable` -- the one forget path (CLI, Python, HTTP): crash-consistent
  artefact + ledger with an intent/commit protocol and recovery.
- :mod:`promptforget.service.ledger` -- the hash-chained, append-only ledger and its verification.
- :mod:`promptforget.service.app` -- the FastAPI service (``promptforget serve RUN_DIR``).
"""

from promptforget.service.durable import ForgetError, ForgetResult, forget, recover
from promptforget.service.ledger import LEDGER_NAME, Ledger, LedgerError, verify

__all__ = ["forget", "recover", "verify", "Ledger", "LedgerError", "ForgetError", "ForgetResult", "LEDGER_NAME"]
