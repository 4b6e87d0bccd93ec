"""Log lines: plain text for development, one JSON object per line in production.

``LOG_FORMAT=json`` switches the root handler to :class:`JsonFormatter`. Every line logged
while a request is served carries its request id (:data:`request_id`, a context variable the
pipeline sets; :class:`RequestIdFilter` copies it onto each record).
"""

from __future__ import annotations

import contextvars
import json
import logging
from datetime import UTC, datetime
from typing import Any

# The id of the request this task serves (``req_…``), or "" outside one.
request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")

# What a LogRecord has anyway: not copied into a JSON line as extra fields.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "request_id",
}


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "request_id", ""):
            record.request_id = request_id.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the request id, and the
    fields a caller passed in ``extra``."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = getattr(record, "request_id", "")
        if rid:
            line["request_id"] = rid
        for name, value in vars(record).items():
            if name not in _STANDARD and not name.startswith("_"):
                line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)
