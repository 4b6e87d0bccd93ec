"""Async-native middleware for the proxy API (see PROXY_MIDDLEWARE)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest
from django.http.response import HttpResponseBase

from core import logs

GetResponse = Callable[[HttpRequest], Awaitable[HttpResponseBase]]

_API_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


def api_headers_middleware(get_response: GetResponse) -> Callable[..., Awaitable[HttpResponseBase]]:
    """Security headers and a request id on every API response, without leaving the event
    loop. The id is on every line logged while serving it (core/logs.py), whatever the
    endpoint (the pipeline's requests, /v1/models, unknown paths)."""

    async def middleware(request: HttpRequest) -> HttpResponseBase:
        request_id = logs.request_id.get() or logs.new_request_id()
        logs.request_id.set(request_id)
        response = await get_response(request)
        for name, value in _API_HEADERS.items():
            response.headers.setdefault(name, value)
        response.headers.setdefault("x-request-id", request_id)
        return response

    markcoroutinefunction(middleware)
    middleware.async_capable = True  # type: ignore[attr-defined]
    middleware.sync_capable = False  # type: ignore[attr-defined]
    return middleware


api_headers_middleware.async_capable = True  # type: ignore[attr-defined]
api_headers_middleware.sync_capable = False  # type: ignore[attr-defined]


def request_id_middleware(get_response: Any) -> Any:
    """The request id for the full Django stack (the admin, the provisioning API, the probes):
    on every line logged while serving a request, and its response's x-request-id. The API
    under /v1/ gets its id from api_headers_middleware instead."""
    if iscoroutinefunction(get_response):

        async def amiddleware(request: HttpRequest) -> HttpResponseBase:
            request_id = logs.new_request_id()
            logs.request_id.set(request_id)
            response: HttpResponseBase = await get_response(request)
            response.headers.setdefault("x-request-id", request_id)
            return response

        markcoroutinefunction(amiddleware)
        return amiddleware

    def middleware(request: HttpRequest) -> HttpResponseBase:
        request_id = logs.new_request_id()
        token = logs.request_id.set(request_id)
        try:
            response: HttpResponseBase = get_response(request)
        finally:
            # A sync request runs in a pooled thread: the next one there must not inherit it.
            logs.request_id.reset(token)
        response.headers.setdefault("x-request-id", request_id)
        return response

    return middleware


request_id_middleware.async_capable = True  # type: ignore[attr-defined]
request_id_middleware.sync_capable = True  # type: ignore[attr-defined]
