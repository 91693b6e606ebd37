"""The service's logs: plain text (the default) or one JSON object per line (``serve --log-format json``)
with ``time``, ``level``, ``logger``, ``message`` and the record's extra fields (``route``, ``status``,
``latency_ms``, ``request_id``, ...). uvicorn's own loggers go through the same handler."""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Attributes every LogRecord has; anything else on a record came from ``extra=``.
RECORD_FIELDS = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "color_message",
                                                                              "taskName"}
ACCESS_ARGS = ("client", "method", "path", "http_version", "status")  # uvicorn.access's record.args


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {"time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
               "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        if record.name == "uvicorn.access" and isinstance(record.args, tuple) and len(record.args) == len(ACCESS_ARGS):
            out.update(zip(ACCESS_ARGS, record.args))
        out.update((k, v) for k, v in vars(record).items() if k not in RECORD_FIELDS and not k.startswith("_"))
        if record.exc_info:
            out["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def configure_logging(level: str = "info", fmt: str = "text", stream=None) -> dict | None:
    """Send every logger to one handler on ``stream`` (stderr) in ``fmt``; return the ``log_config`` for
    uvicorn: its own default for text, None for JSON (its loggers then propagate to this handler)."""
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {LOG_FORMATS}, got {fmt!r}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    package = logging.getLogger("promptforget")  # the CLI's own message-only handler gives way to this one
    package.handlers.clear()
    package.propagate = True
    package.setLevel(logging.NOTSET)
    if fmt == "text":
        import uvicorn.config

        return uvicorn.config.LOGGING_CONFIG
    logging.captureWarnings(True)
    try:  # transformers writes through a handler of its own, and progress bars, to stderr
        from transformers.utils import logging as hf_logging

        hf_logging.disable_default_handler()
        hf_logging.enable_propagation()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass
    return None
