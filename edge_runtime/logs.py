"""Logging for EdgeLoop processes: plain text for people, or JSON lines for a log pipeline.

``EDGELOOP_LOG_FORMAT=json`` (or ``setup_logging("json")``) writes one JSON object a line: ``ts`` (epoch
seconds), ``time`` (ISO 8601, UTC), ``level``, ``logger``, ``message``, ``process``, ``thread``, the
exception when there is one, and any ``extra={...}`` fields given to the call. ``EDGELOOP_LOG_LEVEL`` sets
the level (default INFO).
"""

from __future__ import annotations

import json
import logging
import os
import time

__all__ = ["JsonFormatter", "setup_logging"]

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {"ts": round(record.created, 6),
               "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
               "level": record.levelname, "logger": record.name, "message": record.getMessage(),
               "process": record.process, "thread": record.threadName}
        for k, v in vars(record).items():
            if k not in _STANDARD and not k.startswith("_") and k not in doc:  # extras never overwrite ts, level...
                doc[k] = v
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str, ensure_ascii=False)


def setup_logging(fmt: str | None = None, level: str | None = None) -> None:
    """Configure the root logger once for a process (text or JSON lines on stderr)."""
    fmt = (fmt or os.environ.get("EDGELOOP_LOG_FORMAT") or "text").lower()
    if fmt not in ("text", "json"):
        raise ValueError(f"EDGELOOP_LOG_FORMAT={fmt!r}: expected text or json")
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel((level or os.environ.get("EDGELOOP_LOG_LEVEL") or "INFO").upper())
