"""The ASGI layer in front of Django: path routing and the request-body guard."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any

from django.conf import settings
from django.core.handlers.asgi import ASGIHandler

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
    """Django's ASGI handler with the lean, async-native PROXY_MIDDLEWARE chain."""

    def load_middleware(self, is_async: bool = False) -> None:
        with _middleware_setting(list(settings.PROXY_MIDDLEWARE)):
            super().load_middleware(is_async=is_async)


def route_by_path(*, api: ASGIApp, default: ASGIApp) -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(API_PREFIX):
            await api(scope, receive, send)
        else:
            await default(scope, receive, send)

    return app


async def send_json_error(send: Send, *, path: str, status: int, message: str, code: str) -> None:
    from routing.errors import ProxyError, error_body

    error = ProxyError(status, message, code=code)
    body = json.dumps(error_body(error, anthropic=path.startswith("/v1/messages"))).encode()
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
    """Refuse API bodies over PROXY_MAX_BODY_BYTES before they are held in memory.

    A declared Content-Length over the limit is refused before one body byte is read; a
    chunked body is counted as it arrives and refused the moment it crosses the limit.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(API_PREFIX):
            await self.app(scope, receive, send)
            return
        limit: int = settings.PROXY_MAX_BODY_BYTES
        path: str = scope["path"]
        too_big = f"Request body is larger than the limit of {limit} bytes."
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
