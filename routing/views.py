"""The proxy's hot path, top to bottom.

    authenticate (JWT, cached tenant context) -> validate the body -> resolve the routes
    -> admit (caps, rate limits, reserve) -> open an answer (healthy key, failover)
    -> answer (JSON) or relay (SSE) -> settle the bill (exactly once, whatever happens)

Everything here is async and makes no blocking call: the tenant context comes from an
in-process cache, admission and settlement are one Redis script each, the provider is
called through the shared httpx client, and the ledger row is written off the response
path from the settlement's Redis stream entry.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator

import httpx
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from routing.adapters.base import sse_data
from routing.context import Route
from routing.errors import ProxyError, error_body, error_response
from routing.schema import ChatRequest, parse_chat_request
from routing.sse import SSEParser
from routing.upstream import Attempt, Opened, aopen
from tenants.auth import aauthenticate
from usage.limits import aadmit, estimate
from usage.metering import Meter
from usage.models import UsageRecord

logger = logging.getLogger(__name__)

KEEPALIVE = b": keep-alive\n\n"


def _new_request_id() -> str:
    return f"req_{uuid.uuid4().hex}"


@csrf_exempt
async def chat_completions(request: HttpRequest) -> HttpResponseBase:
    request_id = _new_request_id()
    # Filled in at admission: the rate-limit headers every later answer carries.
    headers: dict[str, str] = {"x-request-id": request_id}
    try:
        response = await _chat_completions(request, request_id, headers)
    except ProxyError as error:
        response = error_response(error)
    except Exception:
        # A bug, not a verdict on the request: logged in full, answered in the API's shape.
        logger.exception("%s failed", request_id)
        response = error_response(ProxyError(500, "The proxy failed.", code="internal_error"))
    for name, value in headers.items():
        response.headers.setdefault(name, value)
    return response


async def _chat_completions(
    request: HttpRequest, request_id: str, headers: dict[str, str]
) -> HttpResponseBase:
    if request.method != "POST":
        raise ProxyError(405, "Use POST.", code="method_not_allowed", headers={"Allow": "POST"})
    context = await aauthenticate(request)
    raw = request.body
    chat = parse_chat_request(
        raw, max_messages=settings.PROXY_MAX_MESSAGES, extra_fields=settings.PROXY_EXTRA_CHAT_FIELDS
    )
    routes = context.routes_for(chat.model)
    if not routes:
        # The same answer whether the model exists in another tier or nowhere.
        raise ProxyError(
            404,
            f"The model `{chat.model}` does not exist or you do not have access to it.",
            code="model_not_found",
            param="model",
        )
    max_tokens = chat.max_tokens or context.limits.default_max_tokens
    completions = chat.body.get("n") or 1  # n answers of up to max_tokens each
    tokens, nanos = estimate(
        routes=routes, body_bytes=len(raw), max_tokens=max_tokens, completions=completions
    )
    if tokens > settings.PROXY_MAX_REQUEST_TOKENS:
        raise ProxyError(
            400,
            f"This request could use up to {tokens} tokens, more than the proxy's limit of "
            f"{settings.PROXY_MAX_REQUEST_TOKENS}; lower max_tokens or shorten the prompt.",
            code="request_too_large",
        )
    admission = await aadmit(
        context=context, request_id=request_id, tokens=tokens, nanos=nanos, now=timezone.now()
    )
    headers.update(admission.headers)

    attempt = Attempt(route=routes[0], key=routes[0].provider.keys[0])
    meter = Meter(
        admission=admission,
        context=context,
        attempt=attempt,
        stream=chat.stream,
        prompt_estimate=tokens - max_tokens * completions,
    )
    deadline = time.monotonic() + routes[0].provider.total_timeout
    opening = asyncio.ensure_future(
        aopen(chat=chat, routes=routes, max_tokens=max_tokens, attempt=attempt, deadline=deadline)
    )
    try:
        if chat.stream:
            # A slow provider does not keep the client waiting in silence: after a while the
            # stream opens anyway and keep-alive comments hold it until the answer starts.
            done, _ = await asyncio.wait({opening}, timeout=settings.PROXY_STREAM_KEEPALIVE)
            if not done:
                relay = _relay_when_open(opening, chat, meter, deadline)
                return _event_stream(relay, meter, opening=opening)
        opened = await opening
    except BaseException as error:  # settled whatever stopped it; a bug too, then re-raised
        opening.cancel()
        if opening.done() and not opening.cancelled() and opening.exception() is None:
            await opening.result().response.aclose()  # it opened just as we were cancelled
        if isinstance(error, ProxyError):
            meter.failed(status=_status_of(error), http_status=error.status)
        elif isinstance(error, asyncio.CancelledError):
            meter.failed(status=UsageRecord.Status.CLIENT_DISCONNECTED, http_status=499)
        else:
            meter.failed(status=UsageRecord.Status.UPSTREAM_ERROR, http_status=500)
        await asyncio.shield(meter.asettle())
        raise
    logger.debug(
        "%s: %s %s -> %s/%s with key %s after %d attempt(s)",
        request_id,
        context.slug,
        chat.model,
        opened.route.provider.slug,
        opened.route.upstream_model,
        opened.key.label,
        attempt.count,
    )
    if chat.stream:
        return _event_stream(_relay(opened, chat, meter, deadline), meter, opened=opened)
    return await _complete(opened, meter, deadline)


def _status_of(error: ProxyError) -> str:
    if error.status == 504:
        return UsageRecord.Status.UPSTREAM_TIMEOUT
    return UsageRecord.Status.UPSTREAM_ERROR


class _EventStream:
    """A relay that is closed properly however its client leaves.

    Django closes a response once it is done with it, and calls close() on streaming content
    that has one. That is where the relay is closed too: Django itself closes only its own
    wrapper around it, leaving the relay's finally (close the provider's stream, bill what
    was produced) to whenever the garbage collector gets to it. And a client that leaves
    after the view returned but before the first event was pulled never starts the relay at
    all, so there is no finally to run: then close() does that work itself.
    """

    def __init__(
        self,
        events: AsyncGenerator[bytes, None],
        meter: Meter,
        opened: Opened | None,
        opening: asyncio.Future[Opened] | None,
    ) -> None:
        self.events, self.meter, self.opened, self.opening = events, meter, opened, opening
        self._closing: asyncio.Task[None] | None = None

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self.events

    def close(self) -> None:
        if not self.meter.settled and self._closing is None:
            self._closing = asyncio.get_running_loop().create_task(self._aclose())

    async def _aclose(self) -> None:
        await self.events.aclose()  # a relay that started settles in its own finally
        if self.meter.settled:
            return
        if self.opening is not None:
            self.opening.cancel()
        if self.opened is not None:
            await self.opened.response.aclose()
        self.meter.failed(status=UsageRecord.Status.CLIENT_DISCONNECTED, http_status=499)
        await self.meter.asettle()


def _event_stream(
    events: AsyncGenerator[bytes, None],
    meter: Meter,
    *,
    opened: Opened | None = None,
    opening: asyncio.Future[Opened] | None = None,
) -> StreamingHttpResponse:
    response = StreamingHttpResponse(
        _EventStream(events, meter, opened, opening),
        content_type="text/event-stream; charset=utf-8",
    )
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx: do not buffer the stream
    return response


async def _complete(opened: Opened, meter: Meter, deadline: float) -> HttpResponse:
    """A non-streamed answer: read it within the deadline, translate it, bill it."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout_at(loop.time() + deadline - time.monotonic()):
            body = await opened.response.aread()
        content, meter.usage = opened.adapter.completion(route=opened.route, raw=body)
    except (TimeoutError, httpx.TimeoutException):
        meter.failed(status=UsageRecord.Status.UPSTREAM_TIMEOUT, http_status=504)
        raise ProxyError(
            504, "The provider's answer took too long.", code="upstream_timeout"
        ) from None
    except httpx.HTTPError:
        meter.failed(status=UsageRecord.Status.UPSTREAM_ERROR, http_status=502)
        raise ProxyError(502, "The provider's answer broke off.", code="upstream_error") from None
    except ProxyError as error:
        meter.failed(status=UsageRecord.Status.UPSTREAM_ERROR, http_status=error.status)
        raise
    except asyncio.CancelledError:
        meter.failed(status=UsageRecord.Status.CLIENT_DISCONNECTED, http_status=499)
        raise
    finally:
        await opened.response.aclose()
        await asyncio.shield(meter.asettle())
    return HttpResponse(content, content_type="application/json")


def _stream_error(meter: Meter, error: ProxyError, status: str) -> bytes:
    """OpenAI's own mid-stream failure: an error event, and no [DONE] after it."""
    meter.failed(status=status, http_status=error.status)
    return sse_data(error_body(error))


async def _relay_when_open(
    opening: asyncio.Future[Opened], chat: ChatRequest, meter: Meter, deadline: float
) -> AsyncGenerator[bytes, None]:
    try:
        while True:
            done, _ = await asyncio.wait({opening}, timeout=settings.PROXY_STREAM_KEEPALIVE)
            if done:
                break
            yield KEEPALIVE
        try:
            opened = opening.result()
        except ProxyError as error:
            yield _stream_error(meter, error, _status_of(error))
            await asyncio.shield(meter.asettle())
            return
        except Exception:
            logger.exception("opening an answer failed")
            failure = ProxyError(500, "The proxy failed.", code="internal_error")
            yield _stream_error(meter, failure, UsageRecord.Status.UPSTREAM_ERROR)
            await asyncio.shield(meter.asettle())
            return
    except asyncio.CancelledError:
        opening.cancel()
        meter.failed(status=UsageRecord.Status.CLIENT_DISCONNECTED, http_status=499)
        await asyncio.shield(meter.asettle())
        raise
    relay = _relay(opened, chat, meter, deadline)
    try:
        async for part in relay:
            yield part
    finally:
        # Closed here, not left to the garbage collector: its finally bills the stream.
        await relay.aclose()


async def _relay(
    opened: Opened, chat: ChatRequest, meter: Meter, deadline: float
) -> AsyncGenerator[bytes, None]:
    """Pass each provider event on the moment it arrives; settle whatever happens.

    A provider that stops sending content for the route's idle limit (keep-alive comments
    do not count), or runs past the total deadline, is cut with an error event.
    """
    route: Route = opened.route
    translator = opened.adapter.stream(route=route, chat=chat)
    parser = SSEParser()
    chunks = opened.response.aiter_bytes()
    loop = asyncio.get_running_loop()
    idle = route.provider.idle_timeout
    content_by = time.monotonic() + idle
    try:
        while True:
            now = time.monotonic()
            try:
                async with asyncio.timeout_at(loop.time() + min(content_by, deadline) - now):
                    chunk = await anext(chunks)
            except StopAsyncIteration:
                break
            except (TimeoutError, httpx.TimeoutException):
                cause = "went silent" if content_by < deadline else "ran past its deadline"
                error = ProxyError(504, f"The provider's stream {cause}.", code="upstream_timeout")
                yield _stream_error(meter, error, UsageRecord.Status.UPSTREAM_TIMEOUT)
                return
            except httpx.HTTPError:
                break  # the provider broke off: reported just below
            events = parser.feed(chunk)
            if any(event.data is not None for event in events):
                content_by = time.monotonic() + idle
            try:
                out = b"".join(translator.feed(event) for event in events)
            except (ValueError, KeyError, TypeError, AttributeError):
                # An event not shaped as the provider's API says: the stream cannot be trusted.
                error = ProxyError(
                    502, "The provider sent a malformed event.", code="upstream_error"
                )
                yield _stream_error(meter, error, UsageRecord.Status.UPSTREAM_ERROR)
                return
            if out:
                yield out
        if not translator.complete:
            error = ProxyError(502, "The provider's stream broke off.", code="upstream_error")
            yield _stream_error(meter, error, UsageRecord.Status.UPSTREAM_ERROR)
    except (asyncio.CancelledError, GeneratorExit):
        # Cancelled: the client went away while this waited on the provider. GeneratorExit:
        # it went away (or was cut off as too slow) while this waited to send.
        meter.failed(status=UsageRecord.Status.CLIENT_DISCONNECTED, http_status=499)
        raise
    finally:
        await opened.response.aclose()
        meter.take_stream_usage(translator)
        # Shielded: a client gone away must not cancel its own billing.
        await asyncio.shield(meter.asettle())


@csrf_exempt
async def list_models(request: HttpRequest) -> HttpResponseBase:
    try:
        if request.method != "GET":
            raise ProxyError(405, "Use GET.", code="method_not_allowed", headers={"Allow": "GET"})
        context = await aauthenticate(request)
    except ProxyError as error:
        return error_response(error)
    return JsonResponse(
        {
            "object": "list",
            "data": [
                {"id": model, "object": "model", "created": 0, "owned_by": "llm-proxy"}
                for model in context.models
            ],
        }
    )
