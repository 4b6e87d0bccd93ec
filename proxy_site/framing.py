"""The request's framing and body size, refused in Daphne's HTTP protocol, before any read.

Daphne calls the ASGI application only once a request's whole body has arrived, and until
then Twisted holds the body: ``twisted.web.http.Request.gotLength`` puts any body over
100 000 bytes, or of unknown length (chunked), into a ``tempfile.TemporaryFile`` on disk,
and ``HTTPChannel.allHeadersReceived`` answers ``Expect: 100-continue`` at once. So no
ASGI-level guard (handlers.BodySizeLimit) can refuse early: a client declaring 100 MiB would
be told to go on and be read to disk first. This module moves both checks into the
protocol, through a subclass of Daphne's HTTP factory that builds guarded channels and
requests:

- a body whose declared Content-Length is over the cap is refused (413) as soon as the
  headers end: before authentication or anything else reads it, without a
  ``100 Continue``;
- a body is held in memory (never a temporary file) and counted as it arrives; a chunked
  one is refused the moment it crosses the cap, so at most the cap is ever buffered;
- a request whose framing headers are repeated or contradictory is refused (400) before it
  reaches the view: a second Content-Length or Transfer-Encoding line, both together, or a
  Transfer-Encoding other than ``chunked``. Twisted reads ``chunked`` then ``identity`` as
  chunked, and a front proxy reading it otherwise would see a request smuggled behind.

The cap is PROXY_MAX_BODY_BYTES under /v1/ and DATA_UPLOAD_MAX_MEMORY_SIZE elsewhere (the
admin, whose forms Django caps at that size anyway). A refusal answers in the API's error
shape, closes the connection and never looks at the rest of it: a request pipelined behind
a refused one never runs. The answer goes out first and the client's further bytes are
read and dropped for REFUSAL_LINGER_SECONDS, so that closing on unread data does not reset
the connection before the client has read why (as a lingering close does).

Written for and verified on daphne 4.2.3 and Twisted 26.10.0 (requirements.lock;
VERIFIED_ON). It relies on these internals:

- daphne: ``daphne.server.Server.run`` builds its factory from the module global
  ``daphne.server.HTTPFactory`` (``install()`` replaces that global with GuardedHTTPFactory);
  ``daphne.http_protocol.HTTPFactory.buildProtocol`` sets the protocol's ``requestFactory``;
- Twisted: ``HTTPChannel.headerReceived`` passes every header, canonically named, through
  ``_maybeChooseTransferDecoder`` before storing it; ``lineReceived`` calls
  ``allHeadersReceived`` after the last header, with ``length`` (None: chunked) and
  ``_path`` set, and that calls ``Request.gotLength`` then sends ``100 Continue``; body bytes
  reach ``Request.handleContentChunk``; a complete body ``allContentReceived``; Twisted's own
  refusals go through ``_respondToBadRequestAndDisconnect``.

``check()`` verifies these on the installed versions (asgi.py calls ``install()`` once, at
start-up), by driving a guarded channel over a fake transport through each refusal. When
anything is off it logs one loud WARNING and installs nothing: Daphne then serves as it
does by itself (BodySizeLimit still refuses, but after reading).
"""

from __future__ import annotations

import io
import logging
from http import HTTPStatus
from typing import Any, Final
from urllib.parse import unquote

from daphne.http_protocol import HTTPFactory as DaphneHTTPFactory
from daphne.http_protocol import WebRequest
from django.conf import settings
from twisted.internet.tcp import Connection as TCPConnection
from twisted.web.http import HTTPChannel, Request, _GenericHTTPChannelProtocol

from proxy_site.backpressure import installed_versions
from proxy_site.handlers import API_PREFIX, api_error_body, too_large_message

logger = logging.getLogger(__name__)

# The versions this module was written for and verified on (by tests/test_framing.py, each
# of whose live tests fails with the guard off); that file fails when the installed differ.
VERIFIED_ON: Final = {"daphne": "4.2.3", "Twisted": "26.10.0"}
# How long a refused connection keeps reading (and dropping) what the client still sends,
# after the answer and a half-close, before it is dropped: time for the client to read the
# answer instead of meeting a reset. Bounded in time, not bytes: dropping bytes costs little.
REFUSAL_LINGER_SECONDS: Final = 2.0

CONSEQUENCE = (
    "an oversized or chunked body is read in full (Twisted spools it to a temporary file on "
    "disk, after a 100 Continue) before the 413, and repeated or contradictory "
    "Content-Length/Transfer-Encoding headers are left to Twisted, which reads "
    "'chunked' then 'identity' as chunked"
)

FRAMING_HEADERS: Final = (b"Content-Length", b"Transfer-Encoding")


def request_path(raw: bytes) -> str:
    """The path as Daphne puts it in the ASGI scope (so /v1/ is told apart as routing does)."""
    return unquote(raw.split(b"?", 1)[0].decode("ascii", "replace"))


def body_limit(path: str) -> int:
    """The most body bytes a request to ``path`` may send."""
    if path.startswith(API_PREFIX):
        return int(settings.PROXY_MAX_BODY_BYTES)
    # Elsewhere (the admin) Django's own cap on what it reads of a form; never below the
    # API's, as settings.py makes it (and DATA_UPLOAD_MAX_MEMORY_SIZE = None is "no cap" to
    # Django, not to this guard).
    return max(int(settings.PROXY_MAX_BODY_BYTES), int(settings.DATA_UPLOAD_MAX_MEMORY_SIZE or 0))


def refusal(raw_path: bytes, status: int, message: str, code: str) -> bytes:
    """A complete response that closes the connection: in the API's error shape under /v1/."""
    path = request_path(raw_path)
    if path.startswith(API_PREFIX):
        body = api_error_body(path=path, status=status, message=message, code=code)
        content_type = b"application/json"
    else:
        body = f"{message}\n".encode()
        content_type = b"text/plain; charset=utf-8"
    phrase = HTTPStatus(status).phrase.encode("ascii")
    head = b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\nConnection: close\r\n"
    return head % (status, phrase, content_type, len(body)) + b"\r\n" + body


# Most of HTTPChannel is untyped (and daphne wholly): the guard's classes extend them as Any.
_Channel: Any = HTTPChannel


class FramedHTTPChannel(_Channel):  # type: ignore[misc]
    """Twisted's HTTP/1.1 channel, refusing bad framing and oversized bodies up front."""

    refused = False
    _linger: Any = None  # the IDelayedCall that drops a lingering refused connection

    def body_limit(self, path: str) -> int:
        return body_limit(path)

    # --- refusing ------------------------------------------------------------------------

    def refuse(self, status: int, message: str, code: str) -> None:
        """Answer ``status``, stop reading requests from this connection, and close it."""
        if self.refused:
            return
        self.refused = True
        transport: Any = self.transport
        # No request line yet when it was the request line that was malformed.
        path: bytes = getattr(self, "_path", b"")
        self.log_refusal(status, request_path(path), message)
        if transport is None:
            return
        transport.write(refusal(path, status, message, code))
        # What was read behind this request (a pipelined or smuggled one) is never parsed.
        self.clearLineBuffer()
        self._networkProducer.unregisterProducer()
        if isinstance(transport, TCPConnection):
            # Half-close once the answer is out, and drop what still comes in for a while:
            # closing with unread bytes would send a reset that can destroy the answer.
            transport.loseWriteConnection()  # type: ignore[no-untyped-call]  # untyped in Twisted
            self._linger = self.callLater(REFUSAL_LINGER_SECONDS, transport.abortConnection)
        else:  # TLS (whose half-close would skip close_notify) and the start-up probe:
            # close once the answer is written, as Twisted does.
            transport.loseConnection()

    def log_refusal(self, status: int, path: str, message: str) -> None:
        # Daphne's access log never sees a request refused here.
        logger.info("refused a request (%d, %s): %s", status, path, message)

    def _respondToBadRequestAndDisconnect(self) -> None:
        # Twisted's own refusals (malformed request line, header or chunk, a second
        # Content-Length, ...): the same answer and close as ours.
        self.refuse(400, "Malformed HTTP request.", "bad_request")

    def dataReceived(self, data: bytes) -> None:
        if self.refused:
            return  # lingering after a refusal: dropped
        super().dataReceived(data)

    def lineReceived(self, line: bytes) -> None:
        if not self.refused:
            super().lineReceived(line)

    def rawDataReceived(self, data: bytes) -> None:
        if not self.refused:
            super().rawDataReceived(data)

    def allContentReceived(self) -> None:
        # A refused request's body may still complete in the chunk decoder's loop: it must
        # not be handed to Daphne (which would run it).
        if not self.refused:
            super().allContentReceived()

    def connectionLost(self, reason: Any) -> None:
        if self._linger is not None and self._linger.active():
            self._linger.cancel()
        self._linger = None
        super().connectionLost(reason)

    # --- the checks ----------------------------------------------------------------------

    def _maybeChooseTransferDecoder(self, header: bytes, data: bytes) -> bool:
        if header in FRAMING_HEADERS:
            # Twisted stores a header only after this returns True: any framing header
            # already stored is one this request has sent before.
            seen = self.requests[-1].requestHeaders
            if any(seen.hasHeader(name) for name in FRAMING_HEADERS):
                return self._refuse_framing(
                    "Invalid request framing: repeated or conflicting Content-Length and "
                    "Transfer-Encoding headers."
                )
            # Transfer-coding names are case-insensitive (RFC 9112), as Twisted reads them;
            # a list ("gzip, chunked") or any other coding is refused.
            if header == b"Transfer-Encoding" and data.lower() != b"chunked":
                return self._refuse_framing(
                    "Invalid request framing: the only Transfer-Encoding accepted is chunked."
                )
        return bool(super()._maybeChooseTransferDecoder(header, data))

    def _refuse_framing(self, message: str) -> bool:
        self.refuse(400, message, "bad_request")
        self.length = None  # as Twisted's _failChooseTransferDecoder leaves it
        return False

    def allHeadersReceived(self) -> None:
        limit = self.body_limit(request_path(getattr(self, "_path", b"")))
        if self.length is not None and self.length > limit:
            # Before Twisted's allHeadersReceived: no content file, no 100 Continue.
            self.refuse(413, too_large_message(limit), "request_too_large")
            return
        request = self.requests[-1]
        if isinstance(request, GuardedWebRequest):
            request.body_limit = limit
        super().allHeadersReceived()


class GuardedWebRequest(WebRequest):  # type: ignore[misc]  # daphne is untyped
    """Daphne's request, holding its body in memory and refusing it past its cap."""

    body_limit: int | None = None  # set by FramedHTTPChannel.allHeadersReceived
    body_received = 0

    def gotLength(self, length: int | None) -> None:
        # Never Twisted's temporary file: the channel has already refused a declared length
        # over the cap, and handleContentChunk refuses any other body crossing it.
        self.content = io.BytesIO()

    def handleContentChunk(self, data: bytes) -> None:
        channel = self.channel
        if channel is None or getattr(channel, "refused", False):
            return
        self.body_received += len(data)
        if self.body_limit is not None and self.body_received > self.body_limit:
            self.content = io.BytesIO()  # what was held goes now, not with the connection
            channel.refuse(413, too_large_message(self.body_limit), "request_too_large")
            return
        self.content.write(data)


def _guarded_channel_protocol(factory: Any) -> _GenericHTTPChannelProtocol:
    # What twisted.web.http.HTTPFactory.protocol builds, with the guarded channel inside.
    return _GenericHTTPChannelProtocol(factory.channel_class())


class GuardedHTTPFactory(DaphneHTTPFactory):  # type: ignore[misc]  # daphne is untyped
    """Daphne's HTTP factory, building FramedHTTPChannels that make GuardedWebRequests."""

    channel_class: type[FramedHTTPChannel] = FramedHTTPChannel
    protocol = _guarded_channel_protocol

    def buildProtocol(self, addr: Any) -> Any:
        protocol = super().buildProtocol(addr)
        protocol.requestFactory = GuardedWebRequest
        return protocol


# --- the start-up check ----------------------------------------------------------------------

# Methods the guard overrides: when Twisted no longer has one, the override is never called.
OVERRIDDEN: Final = {
    HTTPChannel: (
        "_maybeChooseTransferDecoder",
        "allHeadersReceived",
        "allContentReceived",
        "_respondToBadRequestAndDisconnect",
        "lineReceived",
        "rawDataReceived",
        "clearLineBuffer",
    ),
    Request: ("gotLength", "handleContentChunk"),
}
# What a refusal's lingering close uses of a TCP transport (the probe has none).
LINGER_USES: Final = ("loseWriteConnection", "abortConnection")
PROBE_LIMIT: Final = 10


class _ProbeChannel(FramedHTTPChannel):
    def body_limit(self, path: str) -> int:
        return PROBE_LIMIT

    def log_refusal(self, status: int, path: str, message: str) -> None:
        pass  # the probe's refusals are expected


class _ProbeFactory(GuardedHTTPFactory):
    channel_class = _ProbeChannel


class _ProbeServer:
    """Just enough of a daphne Server for its WebRequests; records any request it would run."""

    proxy_forwarded_address_header = None
    root_path = ""
    server_name = ""
    request_buffer_size = 8192

    def __init__(self) -> None:
        self.ran: list[object] = []

    def protocol_connected(self, protocol: object) -> None:
        pass

    def protocol_disconnected(self, protocol: object) -> None:
        pass

    def create_application(self, protocol: object, scope: dict[str, Any]) -> None:
        self.ran.append(scope["path"])
        return None  # Daphne's process() then abandons the request


class _Probe:
    """A guarded channel, from _ProbeFactory, over an in-memory transport."""

    def __init__(self, data: bytes) -> None:
        from twisted.internet.task import Clock
        from twisted.internet.testing import StringTransport

        transport: Any = StringTransport

        self.server = _ProbeServer()
        factory = _ProbeFactory(self.server)
        protocol = factory.buildProtocol(None)
        protocol.callLater = Clock().callLater  # never the real reactor's timers
        self.transport = transport()
        protocol.makeConnection(self.transport)
        self.channel = protocol._channel
        protocol.dataReceived(data)

    @property
    def written(self) -> bytes:
        return bytes(self.transport.value())


def _probe_problems() -> list[str]:
    problems = []
    head = b"POST /v1/probe HTTP/1.1\r\nHost: probe\r\n"
    declared = _Probe(head + b"Content-Length: 11\r\nExpect: 100-continue\r\n\r\n")
    if not declared.written.startswith(b"HTTP/1.1 413 "):
        problems.append("a declared Content-Length over the cap was not refused at once")
    if b"100 Continue" in declared.written:
        problems.append("a refused request was sent 100 Continue")
    chunked = _Probe(head + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
    content = (
        getattr(chunked.channel.requests[-1], "content", None) if chunked.channel.requests else None
    )
    if not isinstance(content, io.BytesIO) or content.getvalue() != b"hello":
        problems.append(f"a chunked body is not held in memory (Twisted gave it {content!r})")
    over = _Probe(
        head + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\nworld!\r\n0\r\n\r\n"
    )
    if not over.written.startswith(b"HTTP/1.1 413 ") or over.server.ran:
        problems.append("a chunked body crossing the cap was not refused")
    for framing in (
        b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n",
        b"Transfer-Encoding: identity\r\nContent-Length: 5\r\n",
    ):
        smuggled = _Probe(
            head + framing + b"\r\n0\r\n\r\nGET /v1/smuggled HTTP/1.1\r\nHost: probe\r\n\r\n"
        )
        if not smuggled.written.startswith(b"HTTP/1.1 400 ") or smuggled.server.ran:
            name = framing.replace(b"\r\n", b"; ").decode().strip("; ")
            problems.append(f"a request with {name} was not refused before it ran")
    return problems


def problems() -> list[str]:
    """What the installed Daphne and Twisted do differently from what the guard expects."""
    import daphne.server

    found = []
    if daphne.server.HTTPFactory not in (DaphneHTTPFactory, GuardedHTTPFactory) or (
        "HTTPFactory" not in daphne.server.Server.run.__code__.co_names
    ):
        found.append("daphne.server.Server.run no longer builds daphne.server.HTTPFactory")
    missing_tcp = [n for n in LINGER_USES if not callable(getattr(TCPConnection, n, None))]
    if missing_tcp:
        found.append(f"twisted.internet.tcp.Connection has no {', '.join(missing_tcp)}")
    for base, names in OVERRIDDEN.items():
        missing = [name for name in names if not callable(getattr(base, name, None))]
        if missing:
            found.append(f"twisted.web.http.{base.__name__} has no {', '.join(missing)}")
    try:
        found.extend(_probe_problems())
    except Exception as exc:
        found.append(f"a guarded channel failed on a probe request ({exc!r})")
    return found


class FramingSupport:
    """Whether the guard can be installed; says so, once, when not."""

    def __init__(self) -> None:
        self.warned = False

    def check(self) -> bool:
        found = problems()
        if found and not self.warned:
            self.warned = True
            verified = ", ".join(f"{name} {v}" for name, v in VERIFIED_ON.items())
            logger.warning(
                "FRAMING GUARD OFF (start-up check): %s. So %s. Found %s; the guard was "
                "written for and verified on %s (proxy_site/framing.py).",
                "; ".join(found),
                CONSEQUENCE,
                installed_versions(),
                verified,
            )
        return not found


SUPPORT: Final = FramingSupport()


def install(*, support: FramingSupport = SUPPORT) -> bool:
    """Make Daphne serve through GuardedHTTPFactory; False (and a WARNING) when unsupported.

    Called at import of the ASGI application, which Daphne's command line does before it
    builds its server, so every connection it accepts gets a guarded channel.
    """
    if not support.check():
        return False
    import daphne.server

    daphne.server.HTTPFactory = GuardedHTTPFactory
    return True
