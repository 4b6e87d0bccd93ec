"""Backpressure for streamed API answers under Daphne: a bounded buffer per stream.

ASGI has no flow control. Daphne writes every body message straight into Twisted's
transport, which buffers without limit, so a client that reads slowly would make the proxy
hold a whole answer in memory for it. SlowClientGuard bounds that by watching the
transport's buffer, which ASGI gives no way to ask about, through Daphne's and Twisted's
internals.

Written for and verified on daphne 4.2.3 and Twisted 26.10.0 (requirements.lock;
VERIFIED_ON). It relies on these internals:

- daphne: ``daphne.server.Server.create_application`` hands the application
  ``send=functools.partial(server.handle_reply, protocol)``, ``protocol`` being the request
  (``daphne.http_protocol.WebRequest``, a ``twisted.web.http.Request``);
- Twisted: ``protocol.channel.transport`` is the connection's ``twisted.internet.tcp.Server``,
  a ``twisted.internet.abstract.FileDescriptor`` whose unsent bytes are
  ``len(dataBuffer) - offset + _tempDataLen`` and whose ``abortConnection()`` drops the
  connection at once, buffered bytes included.

``check_support()`` verifies these on the installed versions at start-up (asgi.py calls it
once), and the guard looks through each request's ``send`` again. Whenever either cannot
see through, it logs one loud WARNING per process (slow clients are then NOT cut off) and
serves the request unguarded rather than failing it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from functools import partial
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Final, NoReturn, cast

from django.conf import settings

from proxy_site.handlers import API_PREFIX, ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger(__name__)

# The versions this module was written for and verified on (by the slow-reader test in
# tests/test_faults.py); tests/test_backpressure.py fails when the installed ones differ.
VERIFIED_ON: Final = {"daphne": "4.2.3", "Twisted": "26.10.0"}
# What the guard uses of the Twisted transport behind Daphne's send.
TRANSPORT_ATTRIBUTES: Final = ("dataBuffer", "offset", "_tempDataLen", "abortConnection")

CONSEQUENCE = (
    "slow clients will NOT be cut off, and a stream may hold a whole answer in memory for "
    "a client that reads slowly"
)


def installed_versions() -> str:
    """The installed versions of what the guard relies on, e.g. ``daphne 4.2.3, Twisted 25.5.0``."""
    found = []
    for name in VERIFIED_ON:
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            found.append(f"{name} not installed")
    return ", ".join(found)


def _warn(reason: str, *, when: str) -> None:
    verified = ", ".join(f"{name} {v}" for name, v in VERIFIED_ON.items())
    logger.warning(
        "SLOW-CLIENT GUARD OFF (%s): %s. So %s. Found %s; the guard was written for and "
        "verified on %s (proxy_site/backpressure.py).",
        when,
        reason,
        CONSEQUENCE,
        installed_versions(),
        verified,
    )


def unsent_bytes(transport: Any) -> int:
    """Bytes a Twisted FileDescriptor holds that the kernel has not taken yet."""
    return int(len(transport.dataBuffer) - transport.offset + transport._tempDataLen)


@dataclass(frozen=True)
class OutboundBuffer:
    """One connection's Twisted transport: what waits unsent, and how to drop it."""

    transport: Any

    def buffered(self) -> int:
        return unsent_bytes(self.transport)

    def abort(self) -> None:
        # Abort, not close: a close would wait for the client to read what is buffered.
        self.transport.abortConnection()


class UnsupportedServer(Exception):
    """The guard cannot see through this ``send`` to a transport buffer; says what it met."""


def _describe(thing: object) -> str:
    """A function's, method's or class's dotted name; of anything else, its type's."""
    named = thing if hasattr(thing, "__qualname__") else type(thing)
    return f"{getattr(named, '__module__', '?')}.{getattr(named, '__qualname__', '?')}"


def outbound_buffer(send: Send) -> OutboundBuffer | None:
    """The Twisted transport behind Daphne's ``send``, or None if the client already left.

    Raises UnsupportedServer, naming what it met, when ``send`` is not Daphne's partial of
    its server's handle_reply (another ASGI server) or the transport behind it lacks
    TRANSPORT_ATTRIBUTES (other Twisted internals, or TLS).
    """
    func = getattr(send, "func", None)
    if not (
        isinstance(send, partial)
        and getattr(func, "__name__", None) == "handle_reply"
        and len(send.args) == 1
    ):
        raise UnsupportedServer(
            f"the ASGI server's send ({_describe(func or send)}) is not Daphne's "
            "functools.partial(server.handle_reply, protocol)"
        )
    protocol = send.args[0]
    if not hasattr(protocol, "channel"):
        raise UnsupportedServer(f"Daphne's protocol ({_describe(protocol)}) has no channel")
    # Twisted drops the request's channel (and the channel its transport) once the
    # connection is lost: nothing is left to guard.
    transport = getattr(protocol.channel, "transport", None)
    if transport is None:
        return None
    missing = [name for name in TRANSPORT_ATTRIBUTES if not hasattr(transport, name)]
    if missing:
        raise UnsupportedServer(
            f"the transport behind Daphne's send ({_describe(transport)}) has no "
            + ", ".join(missing)
        )
    return OutboundBuffer(transport)


# --- the start-up check ----------------------------------------------------------------------


class _ProbeReactor:
    """Enough of a reactor for a FileDescriptor that is written to and never run."""

    def addReader(self, reader: object) -> None:
        pass

    def addWriter(self, writer: object) -> None:
        pass

    def removeReader(self, reader: object) -> None:
        pass

    def removeWriter(self, writer: object) -> None:
        pass


def twisted_problems() -> list[str]:
    """What the installed Twisted lacks of what the guard uses (empty: nothing)."""
    try:
        from twisted.internet.abstract import FileDescriptor
        from twisted.internet.tcp import Server
    except ImportError as exc:
        return [f"Twisted cannot be imported ({exc})"]
    problems = []
    if not issubclass(Server, FileDescriptor):
        problems.append("twisted.internet.tcp.Server is not a FileDescriptor")
    if not callable(getattr(Server, "abortConnection", None)):
        problems.append("twisted.internet.tcp.Server has no abortConnection()")
    try:
        probe = FileDescriptor(cast(Any, _ProbeReactor()))
    except Exception as exc:
        return [*problems, f"twisted.internet.abstract.FileDescriptor() failed ({exc!r})"]
    missing = [name for name in TRANSPORT_ATTRIBUTES[:3] if not hasattr(probe, name)]
    if missing:
        problems.append(f"twisted.internet.abstract.FileDescriptor has no {', '.join(missing)}")
        return problems
    try:
        probe.connected = 1
        probe.write(b"probe")
        counted = unsent_bytes(probe)
    except Exception as exc:
        problems.append(f"a FileDescriptor's buffer could not be measured ({exc!r})")
    else:
        if counted != len(b"probe"):
            problems.append(
                f"a FileDescriptor holding 5 unsent bytes counts {counted} "
                "(len(dataBuffer) - offset + _tempDataLen)"
            )
    return problems


class _Captured(Exception):
    def __init__(self, send: object) -> None:
        super().__init__()
        self.send = send


class _ServerProbe:
    """Just enough of a daphne Server for create_application to hand an application a send."""

    def __init__(self, protocol: object) -> None:
        self.connections: dict[object, dict[str, Any]] = {protocol: {}}

    def application(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise _Captured(kwargs.get("send", args[2] if len(args) > 2 else None))

    async def handle_reply(self, protocol: object, message: Message) -> None:
        pass


def daphne_problems() -> list[str]:
    """What the installed Daphne does differently from what the guard expects (empty: nothing)."""
    try:
        from daphne.http_protocol import WebRequest
        from daphne.server import Server
        from twisted.web.http import HTTPChannel, Request
    except ImportError as exc:
        return [f"daphne cannot be imported ({exc})"]
    problems = []
    if not (issubclass(WebRequest, Request) and hasattr(HTTPChannel, "transport")):
        problems.append(
            "daphne's WebRequest is no longer a twisted.web.http.Request on an HTTPChannel"
        )
    protocol = object()
    probe = _ServerProbe(protocol)
    try:
        Server.create_application(probe, protocol, {"type": "http"})
    except _Captured as captured:
        send = captured.send
    except Exception as exc:
        return [*problems, f"daphne.server.Server.create_application failed ({exc!r})"]
    else:
        return [*problems, "daphne.server.Server.create_application did not call the app"]
    if not (
        isinstance(send, partial)
        and send.func == probe.handle_reply
        and send.args == (protocol,)
        and not send.keywords
    ):
        problems.append(
            "daphne.server.Server.create_application no longer passes "
            f"send=functools.partial(server.handle_reply, protocol) (it passed {send!r})"
        )
    return problems


class ServerSupport:
    """Whether the guard can see the server's transport buffers; says so, once, when not.

    The process has one, SUPPORT: at most one warning from the start-up check and one from
    requests, however many requests meet an unsupported server.
    """

    def __init__(self) -> None:
        self.startup_warned = False
        self.request_warned = False

    def check(self) -> bool:
        """True when the installed Twisted and Daphne have what the guard uses."""
        problems = [*twisted_problems(), *daphne_problems()]
        if problems and not self.startup_warned:
            self.startup_warned = True
            _warn("; ".join(problems), when="start-up check")
        return not problems

    def outbound_buffer(self, send: Send) -> OutboundBuffer | None:
        """outbound_buffer(send), or None (and a warning, the first time) when unsupported."""
        try:
            return outbound_buffer(send)
        except UnsupportedServer as exc:
            if not self.request_warned:
                self.request_warned = True
                _warn(str(exc), when="request; logged once per process")
            return None


SUPPORT: Final = ServerSupport()


def check_support() -> bool:
    """The start-up check: True when the guard will work; else one WARNING, and False."""
    return SUPPORT.check()


class SlowClientGuard:
    """Backpressure for streamed API answers: a bounded buffer per stream.

    After each body message, while more than PROXY_STREAM_BUFFER_BYTES wait unsent to the
    client, the stream pauses (and so does its reading from the provider); a client that
    stays that far behind for PROXY_SLOW_CLIENT_TIMEOUT seconds is cut off, as if it had
    disconnected: the view settles what the provider produced and closes the provider's
    stream. Under a server it cannot see through, it serves unguarded and warns once.
    """

    def __init__(self, app: ASGIApp, *, support: ServerSupport = SUPPORT) -> None:
        self.app = app
        self.support = support

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(API_PREFIX):
            await self.app(scope, receive, send)
            return
        buffer = self.support.outbound_buffer(send)
        if buffer is None:
            await self.app(scope, receive, send)
            return
        limit: int = settings.PROXY_STREAM_BUFFER_BYTES
        patience: float = settings.PROXY_SLOW_CLIENT_TIMEOUT

        async def guarded_send(message: Message) -> None:
            await send(message)
            if message["type"] != "http.response.body" or buffer.buffered() <= limit:
                return
            give_up = time.monotonic() + patience
            while buffer.buffered() > limit:
                if time.monotonic() > give_up:
                    logger.warning(
                        "client too slow to read its stream (%s): cut off", scope["path"]
                    )
                    buffer.abort()
                    # Django treats this as the client going away during the response.
                    raise asyncio.CancelledError
                await asyncio.sleep(0.01)

        await self.app(scope, receive, guarded_send)


def complete_reason_phrases() -> None:
    """Teach Twisted the standard reason phrase of every status (the other thing this module
    fixes in the server under the proxy).

    An ASGI response start carries a status code and no reason phrase, so Daphne writes the
    status line from Twisted's own table (``twisted.web.http.RESPONSES``), which lacks 429
    (and 422, 428, 431, 451, 511, ...): Twisted writes "Unknown Status" for those. The gaps
    are filled from the standard library's HTTPStatus; codes Twisted knows keep its phrases.
    """
    from http import HTTPStatus

    try:
        from twisted.web import http
    except ImportError:  # not served by Daphne: nothing to teach
        return
    for status in HTTPStatus:
        http.RESPONSES.setdefault(status.value, status.phrase.encode("ascii"))
