"""The one place that builds the upstream HTTP client.

One pooled ``httpx.AsyncClient`` per event loop (Daphne runs one), shared by every request:
connections to a provider are kept alive and reused instead of paying a TCP and TLS
handshake per request. Timeouts are set per request, from the provider's settings
(routing/upstream.py).

Its transport is chosen by ``PROXY_UPSTREAM_TRANSPORT``:

- ``aiohttp`` (the default): aiohttp's connector under httpx's request and response
  objects. httpcore's pool (httpx's own transport) walks every connection it holds, polling
  each idle socket, whenever a request queues or a response closes; with 64 requests open
  that walk was 60 % of the proxy's CPU and the cost per request grew with concurrency
  (README, "Where the time goes"). aiohttp hands out a pooled connection in constant time
  and parses HTTP in C.
- ``httpx``: httpx's own transport (httpcore), kept for comparison and as a fallback.

Either way the client keeps no cookies: the pool is shared by every tenant, and a cookie
one provider answer sets must not ride along on another tenant's request.
"""

from __future__ import annotations

import asyncio
import http.cookiejar
import weakref
from collections.abc import AsyncIterator

import aiohttp
import httpx
from django.conf import settings
from multidict import CIMultiDict
from yarl import URL

from core.decoding import ACCEPT_ENCODING

_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = (
    weakref.WeakKeyDictionary()
)

KEEPALIVE_EXPIRY = 30.0


def upstream_client() -> httpx.AsyncClient:
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None or client.is_closed:
        client = _build_client()
        _clients[loop] = client
    return client


def _build_client() -> httpx.AsyncClient:
    limits = httpx.Limits(
        max_connections=settings.PROXY_UPSTREAM_MAX_CONNECTIONS,
        max_keepalive_connections=settings.PROXY_UPSTREAM_MAX_CONNECTIONS,
        keepalive_expiry=KEEPALIVE_EXPIRY,
    )
    transport: httpx.AsyncBaseTransport | None = None
    if settings.PROXY_UPSTREAM_TRANSPORT == "aiohttp":
        transport = AiohttpTransport(
            max_connections=settings.PROXY_UPSTREAM_MAX_CONNECTIONS,
            keepalive_expiry=KEEPALIVE_EXPIRY,
        )
    return httpx.AsyncClient(
        transport=transport,
        limits=limits,
        # The jar itself, not httpx.Cookies: httpx copies a Cookies into a jar of its own.
        cookies=_NoCookies(),
        # Redirects from a provider API are never expected; following one could send
        # the pooled key to another host.
        follow_redirects=False,
        # Proxies from the environment are an operator's choice, not a default.
        trust_env=False,
        # Only the encodings core/decoding.py inflates within bounds (why: see there).
        headers={"user-agent": "llm-proxy", "accept-encoding": ACCEPT_ENCODING},
    )


class _NoCookies(http.cookiejar.CookieJar):
    """A jar that keeps nothing: Set-Cookie is dropped, no Cookie header is ever added."""

    def extract_cookies(self, response: object, request: object) -> None:
        return None

    def set_cookie(self, cookie: http.cookiejar.Cookie) -> None:
        return None

    def add_cookie_header(self, request: object) -> None:
        return None


class AiohttpTransport(httpx.AsyncBaseTransport):
    """httpx requests sent through an aiohttp session (one per transport, so per loop).

    Its errors are httpx's, so callers handle one family: a connection that cannot be made
    is ``ConnectError`` (``ConnectTimeout`` when slow), one that breaks is ``ReadError`` or
    ``RemoteProtocolError``. Bodies come back undecoded (``aiter_raw``): core/decoding.py
    inflates them within bounds.
    """

    def __init__(self, *, max_connections: int, keepalive_expiry: float) -> None:
        self._max_connections = max_connections
        self._keepalive_expiry = keepalive_expiry
        # Built once: a default SSL context costs tens of milliseconds (certificates).
        self._ssl = httpx.create_ssl_context(trust_env=False)
        self._session: aiohttp.ClientSession | None = None

    def _open_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self._max_connections,
                limit_per_host=0,
                keepalive_timeout=self._keepalive_expiry,
                ssl=self._ssl,
                ttl_dns_cache=10,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
                trust_env=False,
                # No total timeout of aiohttp's own: each request brings its own.
                timeout=aiohttp.ClientTimeout(total=None),
                # httpx has set every header the request needs; aiohttp must add none.
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
            )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        session = self._open_session()
        timeout = request.extensions.get("timeout", {})
        headers = CIMultiDict(
            (name.decode("latin-1"), value.decode("latin-1")) for name, value in request.headers.raw
        )
        try:
            response = await session.request(
                request.method,
                URL(str(request.url), encoded=True),
                headers=headers,
                data=request.content or None,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    # httpx's pool timeout bounds the wait for a free connection; aiohttp's
                    # connect timeout covers that wait and the connection itself.
                    connect=_sum(timeout.get("pool"), timeout.get("connect")),
                    sock_connect=timeout.get("connect"),
                    sock_read=timeout.get("read"),
                ),
            )
        except aiohttp.ConnectionTimeoutError as exc:
            raise httpx.ConnectTimeout(str(exc), request=request) from exc
        except aiohttp.ServerTimeoutError as exc:
            raise httpx.ReadTimeout(str(exc), request=request) from exc
        except aiohttp.ClientConnectorError as exc:
            raise httpx.ConnectError(str(exc), request=request) from exc
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientResponseError) as exc:
            raise httpx.RemoteProtocolError(str(exc), request=request) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise httpx.ReadError(str(exc), request=request) from exc
        extensions: dict[str, object] = {"http_version": b"HTTP/1.1"}
        if response.reason:
            extensions["reason_phrase"] = response.reason.encode("latin-1", "replace")
        return httpx.Response(
            status_code=response.status,
            headers=list(response.raw_headers),
            stream=_AiohttpStream(response, request),
            request=request,
            extensions=extensions,
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


def _sum(*parts: float | None) -> float | None:
    return None if any(p is None for p in parts) else sum(p for p in parts if p is not None)


class _AiohttpStream(httpx.AsyncByteStream):
    def __init__(self, response: aiohttp.ClientResponse, request: httpx.Request) -> None:
        self._response = response
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        content = self._response.content
        try:
            # Whatever has arrived, as soon as it has: a stream's events are relayed one
            # network read at a time, never held back to fill a buffer.
            async for chunk in content.iter_any():
                yield chunk
        except (aiohttp.ClientError, OSError) as exc:
            # aiohttp raises the break ahead of what arrived before it; those bytes were
            # sent (and billed by the provider), so the client gets them, then the error.
            arrived = _arrived_before_the_break(content)
            if arrived:
                yield arrived
            if isinstance(exc, aiohttp.ClientPayloadError):
                raise httpx.RemoteProtocolError(str(exc), request=self._request) from exc
            if isinstance(exc, aiohttp.ServerTimeoutError):
                raise httpx.ReadTimeout(str(exc), request=self._request) from exc
            raise httpx.ReadError(str(exc), request=self._request) from exc

    async def aclose(self) -> None:
        # aiohttp returns the connection to the pool only if its answer was read to the end
        # and closes one left mid-answer (tests/test_http_client.py checks both).
        self._response.release()


def _arrived_before_the_break(content: aiohttp.StreamReader) -> bytes:
    """What the reader holds unread after its connection broke. aiohttp's public reads raise
    the stored error first, whatever is buffered; its own buffer read does not (checked on
    the locked aiohttp by tests/test_http_client.py, which fails should that change)."""
    read_buffered = getattr(content, "_read_nowait", None)
    if read_buffered is None or not getattr(content, "_buffer", None):
        return b""
    data: bytes = read_buffered(-1)
    return data
