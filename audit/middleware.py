"""Name the request's user as the actor of every audit row the request writes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from asgiref.sync import iscoroutinefunction
from django.http import HttpRequest
from django.http.response import HttpResponseBase
from django.utils.decorators import sync_and_async_middleware

from audit.context import bind_request, unbind

SyncGetResponse = Callable[[HttpRequest], HttpResponseBase]
AsyncGetResponse = Callable[[HttpRequest], Awaitable[HttpResponseBase]]


@sync_and_async_middleware
def audit_actor_middleware(
    get_response: SyncGetResponse | AsyncGetResponse,
) -> Callable[[HttpRequest], HttpResponseBase | Awaitable[HttpResponseBase]]:
    """After AuthenticationMiddleware. Both sync and async, so it never adds a thread hop;
    the user is looked up only when a row is written (in the thread of the save)."""
    if iscoroutinefunction(get_response):
        async_get_response: AsyncGetResponse = get_response

        async def async_middleware(request: HttpRequest) -> HttpResponseBase:
            token = bind_request(request)
            try:
                return await async_get_response(request)
            finally:
                unbind(token)

        return async_middleware

    sync_get_response: SyncGetResponse = get_response  # type: ignore[assignment]

    def middleware(request: HttpRequest) -> HttpResponseBase:
        token = bind_request(request)
        try:
            return sync_get_response(request)
        finally:
            unbind(token)

    return middleware
