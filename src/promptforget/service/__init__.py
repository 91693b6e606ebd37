"""The forget service over HTTP (``promptforget serve RUN_DIR``).

- :mod:`promptforget.service.app`      routes (FastAPI)
- :mod:`promptforget.service.host`     the served model, kept in step with the run directory (RCU swaps)
- :mod:`promptforget.service.inputs`   request bodies, image decoding, body size limit
- :mod:`promptforget.service.responses` response models and documented error codes (the OpenAPI schema)
- :mod:`promptforget.service.metrics`  Prometheus metrics (``GET /metrics``)
- :mod:`promptforget.service.logs`     text or JSON logs
- :mod:`promptforget.service.settings` limits and tokens

The durable forget and the ledger it calls are in :mod:`promptforget.store`.
"""
