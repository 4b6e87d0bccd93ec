"""Async-native middleware for the proxy API (see PROXY_MIDDLEWARE)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from asgiref.sync import markcoroutinefunction
from django.http import HttpRequest
from django.http.response import HttpResponseBase

GetResponse = Callable[[HttpRequest], Awaitable[HttpResponseBase]]

_API_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


def api_headers_middleware(get_response: GetResponse) -> Callable[..., Awaitable[HttpResponseBase]]:
    """Security headers on every API response, without leaving the event loop."""

    async def middleware(request: HttpRequest) -> HttpResponseBase:
        response = await get_response(request)
        for name, value in _API_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    markcoroutinefunction(middleware)
    middleware.async_capable = True  # type: ignore[attr-defined]
    middleware.sync_capable = False  # type: ignore[attr-defined]
    return middleware


api_headers_middleware.async_capable = True  # type: ignore[attr-defined]
api_headers_middleware.sync_capable = False  # type: ignore[attr-defined]
