"""The ASGI layer in front of Django: path routing and the request-body guard."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from contextlib import contextmanager
from typing import IO, Any

from django.conf import settings
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler
from django.http.response import HttpResponseBase

from core.errors import ProxyError, error_body

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
# Loose on purpose: Django's handlers annotate scope as dict and messages as Mapping.
ASGIApp = Callable[..., Awaitable[None]]

API_PREFIX = "/v1/"


@contextmanager
def _middleware_setting(middleware: list[str]) -> Iterator[None]:
    # BaseHandler.load_middleware reads settings.MIDDLEWARE and nothing else; this swaps it
    # only while the API handler builds its chain, once, at start-up.
    saved = settings.MIDDLEWARE
    settings.MIDDLEWARE = middleware
    try:
        yield
    finally:
        settings.MIDDLEWARE = saved


class ProxyAPIHandler(ASGIHandler):
    """Django's ASGI handler, trimmed for the proxy API: nothing in it leaves the event loop.

    Three things differ from the stock handler, whose per-request costs (measured by
    bench/: two new OS threads and two thread hops per request) are there for sync code the
    API does not have:

    - the lean, async-native PROXY_MIDDLEWARE chain instead of MIDDLEWARE;
    - no ThreadSensitiveContext, which gives every request a fresh single-thread executor;
    - no request_started signal, and the response closed in the loop: their receivers look
      after database connections of the thread serving the request, and this one has none.
      The API's few database calls run through channels' database_sync_to_async, which
      does that housekeeping around each call instead.
    """

    def load_middleware(self, is_async: bool = False) -> None:
        with _middleware_setting(list(settings.PROXY_MIDDLEWARE)):
            super().load_middleware(is_async=is_async)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            raise ValueError(f"The API serves HTTP only, not {scope['type']}.")
        await self.handle(scope, receive, send)

    async def read_body(self, receive: Any) -> IO[bytes]:
        """The body, in memory: Django's own read_body spools one over
        FILE_UPLOAD_MAX_MEMORY_SIZE (2.5 MiB) to a temporary file on disk, and an API body may
        be up to PROXY_MAX_BODY_BYTES (4 MiB), which BodySizeLimit and the server's framing
        guard (proxy_site/framing.py) have already enforced."""
        body = io.BytesIO()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise RequestAborted()
            body.write(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body.seek(0)
        return body

    async def handle(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        request, error_response = self.create_request(scope, body_file)
        if request is None:
            assert error_response is not None
            body_file.close()
            await self.send_response(error_response, send)
            error_response.close()
            return

        async def process_request() -> HttpResponseBase:
            response = await self.run_get_response(request)
            try:
                await self.send_response(response, send)
            except asyncio.CancelledError:
                pass  # the client left while the response was being sent
            return response

        # As Django does: a disconnect while the view works cancels it (the view settles).
        listener = asyncio.ensure_future(self.listen_for_disconnect(receive))
        responder = asyncio.ensure_future(process_request())
        await asyncio.wait({listener, responder}, return_when=asyncio.FIRST_COMPLETED)
        for task in (listener, responder):
            if task.done():
                try:
                    task.result()
                except RequestAborted:
                    pass
            else:
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
        if not responder.cancelled() and responder.exception() is None:
            responder.result().close()
        body_file.close()


def lifespan(*, on_startup: Callable[[], Awaitable[None]] | None) -> ASGIApp:
    """The ASGI lifespan protocol, for servers that speak it (uvicorn, granian; not Daphne):
    `on_startup` runs to its end before the server is told it may listen."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if on_startup is not None:
                    await on_startup()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    return app


def route_by_path(*, api: ASGIApp, default: ASGIApp) -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(API_PREFIX):
            await api(scope, receive, send)
        else:
            await default(scope, receive, send)

    return app


def too_large_message(limit: int) -> str:
    return f"Request body is larger than the limit of {limit} bytes."


def api_error_body(*, path: str, status: int, message: str, code: str) -> bytes:
    """An error body in the API's shape: Anthropic's under /v1/messages, else OpenAI's."""
    error = ProxyError(status, message, code=code)
    return json.dumps(error_body(error, anthropic=path.startswith("/v1/messages"))).encode()


async def send_json_error(send: Send, *, path: str, status: int, message: str, code: str) -> None:
    body = api_error_body(path=path, status=status, message=message, code=code)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodySizeLimit:
    """Refuse API bodies over PROXY_MAX_BODY_BYTES, at the ASGI level.

    A declared Content-Length over the limit is refused before one body byte is read; a
    chunked body is counted as it arrives and refused the moment it crosses the limit.
    Under Daphne nothing reaches this far: the server calls the application only once the
    whole body has arrived, so the framing guard (proxy_site/framing.py) refuses both cases
    in the HTTP protocol itself, before Twisted buffers the body. This stays as the
    server-independent check, for when that guard could not be installed.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(API_PREFIX):
            await self.app(scope, receive, send)
            return
        limit: int = settings.PROXY_MAX_BODY_BYTES
        path: str = scope["path"]
        too_big = too_large_message(limit)
        for name, value in scope["headers"]:
            if name == b"content-length":
                if not value.isdigit():
                    await send_json_error(
                        send,
                        path=path,
                        status=400,
                        message="Bad Content-Length.",
                        code="bad_request",
                    )
                    return
                if int(value) > limit:
                    await send_json_error(
                        send, path=path, status=413, message=too_big, code="request_too_large"
                    )
                    return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await send_json_error(
                    send, path=path, status=413, message=too_big, code="request_too_large"
                )
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
