"""Log lines: plain text for development, one JSON object per line in production.

``LOG_FORMAT=json`` switches the root handler to :class:`JsonFormatter`. Every line logged
while a request is served carries its request id (:data:`request_id`, a context variable the
pipeline sets; :class:`RequestIdFilter` copies it onto each record). A task created while
serving a request inherits the id (asyncio copies the context into it, asgiref into the
threads of ``sync_to_async``); a task that outlives the request it was started from (a
worker started lazily by the first request) must be started with a context of its own,
``loop.create_task(coro, context=contextvars.Context())``, or it logs that request's id for
ever.

What does not log through :mod:`logging` on its own, Daphne's access log and Twisted's log,
is routed into it by :func:`route_server_logs`, called once at start-up, so that with JSON
every line the process writes is an object.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import threading
import uuid
from collections.abc import Mapping
from datetime import UTC, date, datetime
from datetime import time as time_of_day
from decimal import Decimal
from types import TracebackType
from typing import Any, cast

from django.http import HttpRequest

# The id of the request this task serves (``req_…``), or "" outside one.
request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")


def new_request_id() -> str:
    """A request's id (``req_`` and 32 hex digits): its response's x-request-id, its log
    lines' and its ledger row's."""
    return f"req_{uuid.uuid4().hex}"


# What a LogRecord has anyway: not copied into a JSON line as extra fields.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "request_id",
}
# The keys a JSON line always has (or may have): an ``extra`` field of the same name is kept
# under ``extra_<name>`` rather than replacing them.
_OWN = frozenset({"time", "level", "logger", "message", "request_id", "exception", "stack"})

# Characters str.splitlines() and some log shippers take for line ends, which JSON allows raw
# inside strings: escaped, so that one record is always one line. (ensure_ascii=True below
# escapes every non-ASCII character anyway; this keeps the guarantee should that change.)
_LINE_BREAKS = {"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"}


class RequestIdFilter(logging.Filter):
    """Puts the id of the request being served (or "") on every record, as ``request_id``;
    a record that already has one (``extra={"request_id": ...}``) keeps it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "request_id", ""):
            record.request_id = request_id.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the request id (when there is
    one), the fields a caller passed in ``extra``, and the exception's traceback.

    It never fails: a value JSON cannot hold is written as its ``str`` (or ``repr``), a
    message whose arguments do not fit its format is written as it stands, since a
    formatter that raises makes :mod:`logging` print a plain-text traceback instead of the
    line, the one thing a log pipeline cannot parse.
    """

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": _message(record),
        }
        rid = getattr(record, "request_id", "") or request_id.get()
        if rid:
            line["request_id"] = rid
        for name, value in vars(record).items():
            if name not in _STANDARD and not name.startswith("_"):
                line[f"extra_{name}" if name in _OWN else name] = value
        if record.exc_info:
            # Cached on the record as logging.Formatter does: other handlers reuse it.
            if not record.exc_text:
                record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return _dumps(line)


def _message(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except Exception:
        return f"{_text(record.msg)} (unformatted; args: {_text(record.args)})"


def _dumps(line: Mapping[str, Any]) -> str:
    try:
        text = json.dumps(line, default=_plain, ensure_ascii=True, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        # One value spoils the line (a NaN, a circular structure, a key that is not a
        # string): each value on its own, the spoiled ones as their text.
        safe: dict[str, Any] = {}
        for name, value in line.items():
            try:
                json.dumps(value, default=_plain, allow_nan=False)
                safe[name] = value
            except (TypeError, ValueError, RecursionError):
                safe[name] = _text(value)
        text = json.dumps(safe, default=_plain, ensure_ascii=True, allow_nan=False)
    for char, escaped in _LINE_BREAKS.items():
        text = text.replace(char, escaped)
    return text


def _plain(value: object) -> object:
    """What JSON writes for a value it has no type for."""
    if isinstance(value, datetime | date | time_of_day):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    if isinstance(value, HttpRequest):
        # Django's own lines pass the request (django.request's "request" field); its repr
        # has the query string, which may hold what a client should not have put there.
        return f"{value.method} {value.path}"
    return _text(value)


def _text(value: object) -> str:
    try:
        return str(value)
    except Exception:
        try:
            return repr(value)
        except Exception:
            return f"<unprintable {type(value).__name__}>"


# --- the server's own output, through logging ------------------------------------------------

access_logger = logging.getLogger("access")
_twisted_observer: Any = None  # the bridge route_server_logs() added to Twisted's log


def route_server_logs() -> None:
    """Once, at start-up, before Daphne builds its server (proxy_site/asgi.py): send what
    Daphne and Twisted write on their own through :mod:`logging`, so that it is formatted
    like every other line (one JSON object each with LOG_FORMAT=json).

    - Daphne's access log (one NCSA line per response, written to stdout at the default
      verbosity): a line of the ``access`` logger at INFO, with method, path (without the
      query string, which may hold what a client should not have put there), status, bytes,
      duration and client as fields. Daphne writes it from the application's last ``send``,
      in the request's own task, so an API request's access line has its request id.
    - Twisted's log, which Daphne discards at its default verbosity: its warnings and
      errors, to the ``twisted`` logger (a failure in the server's own code would otherwise
      be lost). Not its INFO events: factories starting and stopping, and a second access
      line per request (twisted.web's own, with the query string and the User-Agent).
      With ``daphne -v 2`` or more Daphne adds its own bridge, and those lines come twice.
    - An exception nothing caught, in the main thread or another: one ERROR line of the
      ``uncaught`` logger instead of a traceback printed to stderr.
    """
    from daphne.access import AccessLogGenerator
    from twisted.logger import (
        FilteringLogObserver,
        ILogFilterPredicate,
        ILogObserver,
        LogLevel,
        LogLevelFilterPredicate,
        STDLibLogObserver,
        globalLogPublisher,
    )

    # Daphne builds its AccessLogGenerator after importing the application, so replacing
    # the method on the class covers it.
    AccessLogGenerator.__call__ = _log_access
    global _twisted_observer
    if _twisted_observer is not None:  # called again: one bridge, not two
        globalLogPublisher.removeObserver(_twisted_observer)
    # zope.interface declarations, which mypy does not read: these do provide them.
    bridge = cast(ILogObserver, STDLibLogObserver(name="twisted"))
    warnings_and_worse = cast(
        ILogFilterPredicate, LogLevelFilterPredicate(defaultLogLevel=LogLevel.warn)
    )
    _twisted_observer = FilteringLogObserver(bridge, [warnings_and_worse])
    globalLogPublisher.addObserver(_twisted_observer)
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_uncaught_in_thread


def _log_access(generator: object, protocol: str, action: str, details: Mapping[str, Any]) -> None:
    """Daphne's action logger (daphne.access.AccessLogGenerator.__call__), through logging."""
    path = str(details.get("path", "")).partition("?")[0]
    client = details.get("client") or "-"
    if protocol == "http" and action == "complete":
        status, size = details.get("status"), details.get("size")
        access_logger.info(
            '%s "%s %s" %s %s',
            client,
            details.get("method", "-"),
            path,
            status or "-",
            size or "-",
            extra={
                "event": "access",
                "client": client,
                "method": details.get("method"),
                "path": path,
                "status_code": status,
                "size": size,
                "duration_ms": _milliseconds(details.get("time_taken")),
            },
        )
    elif protocol == "websocket" and action in _WEBSOCKET_ACTIONS:
        access_logger.info(
            '%s "%s %s"',
            client,
            _WEBSOCKET_ACTIONS[action],
            path,
            extra={"event": "access", "client": client, "method": action, "path": path},
        )


# What Daphne's own access log calls each WebSocket step.
_WEBSOCKET_ACTIONS = {
    "connecting": "WSCONNECTING",
    "rejected": "WSREJECT",
    "connected": "WSCONNECT",
    "disconnected": "WSDISCONNECT",
}


def _milliseconds(seconds: object) -> int | None:
    return int(seconds * 1000) if isinstance(seconds, int | float) else None


def _log_uncaught(
    kind: type[BaseException], error: BaseException, traceback: TracebackType | None
) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, error, traceback)
        return
    logging.getLogger("uncaught").error(
        "uncaught %s", kind.__name__, exc_info=(kind, error, traceback)
    )


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_value is None or issubclass(args.exc_type, SystemExit):
        return
    thread = args.thread.name if args.thread is not None else "?"
    logging.getLogger("uncaught").error(
        "uncaught %s in thread %s",
        args.exc_type.__name__,
        thread,
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
    )
