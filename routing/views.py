"""The proxy's hot path, top to bottom.

    authenticate (JWT, cached tenant context) -> validate the body -> resolve the route
    -> choose a pooled key -> admit (caps, rate limits, reserve) -> forward
    -> answer (JSON) or relay (SSE) -> settle the bill (exactly once, whatever happens)

Everything here is async and makes no blocking call: the tenant context comes from an
in-process cache, admission and settlement are one Redis script each, the provider is
called through the shared httpx client, and the ledger row is written off the response
path from the settlement's Redis stream entry.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator

import httpx
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from routing.adapters import StreamTranslator, adapter_for
from routing.adapters.base import sse_data
from routing.errors import ProxyError, error_body, error_response
from routing.schema import parse_chat_request
from routing.sse import SSEParser
from routing.upstream import asend, choose_key
from tenants.auth import aauthenticate
from usage.limits import aadmit, estimate
from usage.metering import Meter
from usage.models import UsageRecord

logger = logging.getLogger(__name__)


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
    chat = parse_chat_request(raw, max_messages=settings.PROXY_MAX_MESSAGES)
    routes = context.routes_for(chat.model)
    if not routes:
        # The same answer whether the model exists in another tier or nowhere.
        raise ProxyError(
            404,
            f"The model `{chat.model}` does not exist or you do not have access to it.",
            code="model_not_found",
            param="model",
        )
    route = routes[0]
    key = choose_key(route.provider.keys)
    adapter = adapter_for(route.provider.kind)
    max_tokens = chat.max_tokens or context.limits.default_max_tokens
    # Built before admission: a request the adapter refuses reserves nothing.
    url, payload, extra_headers = adapter.build(route=route, chat=chat, max_tokens=max_tokens)

    tokens, nanos = estimate(route=route, body_bytes=len(raw), max_tokens=max_tokens)
    admission = await aadmit(
        context=context, request_id=request_id, tokens=tokens, nanos=nanos, now=timezone.now()
    )
    headers.update(admission.headers)
    logger.debug(
        "%s: %s %s -> %s/%s with key %s",
        request_id,
        context.slug,
        chat.model,
        route.provider.slug,
        route.upstream_model,
        key.label,
    )
    meter = Meter(
        admission=admission,
        context=context,
        route=route,
        key=key,
        stream=chat.stream,
        prompt_estimate=tokens - max_tokens,
    )
    try:
        upstream = await asend(
            adapter=adapter, route=route, key=key, url=url, payload=payload, headers=extra_headers
        )
    except ProxyError as error:
        status = UsageRecord.Status.UPSTREAM_ERROR
        if error.status == 504:
            status = UsageRecord.Status.UPSTREAM_TIMEOUT
        meter.failed(status=status, http_status=error.status)
        await meter.asettle()
        raise
    except asyncio.CancelledError:
        meter.failed(status=UsageRecord.Status.CLIENT_DISCONNECTED, http_status=499)
        await asyncio.shield(meter.asettle())
        raise

    if not chat.stream:
        try:
            body = await upstream.aread()
            content, meter.usage = adapter.completion(route=route, raw=body)
        except httpx.HTTPError:
            meter.failed(status=UsageRecord.Status.UPSTREAM_ERROR, http_status=502)
            raise ProxyError(502, "The answer broke off.", code="upstream_error") from None
        except ProxyError as error:
            meter.failed(status=UsageRecord.Status.UPSTREAM_ERROR, http_status=error.status)
            raise
        except asyncio.CancelledError:
            meter.failed(status=UsageRecord.Status.CLIENT_DISCONNECTED, http_status=499)
            raise
        finally:
            await upstream.aclose()
            await asyncio.shield(meter.asettle())
        return HttpResponse(content, content_type="application/json")

    response = StreamingHttpResponse(
        _relay(upstream, adapter.stream(route=route, chat=chat), meter),
        content_type="text/event-stream; charset=utf-8",
    )
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx: do not buffer the stream
    return response


async def _relay(
    upstream: httpx.Response, translator: StreamTranslator, meter: Meter
) -> AsyncIterator[bytes]:
    """Pass each provider event on the moment it arrives; settle whatever happens."""
    parser = SSEParser()
    try:
        try:
            async for chunk in upstream.aiter_bytes():
                out = b"".join(translator.feed(event) for event in parser.feed(chunk))
                if out:
                    yield out
        except httpx.HTTPError:
            pass  # the provider broke off: reported to the client just below
        if not translator.complete:
            meter.failed(status=UsageRecord.Status.UPSTREAM_ERROR, http_status=502)
            error = ProxyError(502, "The provider's stream broke off.", code="upstream_error")
            # OpenAI's own mid-stream failure shape: an error event, and no [DONE].
            yield sse_data(error_body(error))
    except asyncio.CancelledError:
        meter.failed(status=UsageRecord.Status.CLIENT_DISCONNECTED, http_status=499)
        raise
    finally:
        await upstream.aclose()
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
