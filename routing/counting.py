"""``POST /v1/messages/count_tokens``: how many input tokens a Messages request would use.

On an Anthropic route the question goes to the provider (with a pooled key, like any call,
trying the next key and route when one fails); on an OpenAI-compatible route, which has no
such endpoint, the proxy answers from its own estimate, the one a reservation uses
(usage.limits.tokens_in). Counting is free at Anthropic, so it is not admitted against the
caps, not billed and not in the ledger.
"""

from __future__ import annotations

import asyncio
import json
import time

import httpx
from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.http.response import HttpResponseBase

from core.decoding import aread_capped
from core.errors import ProxyError, error_response
from routing.codecs.anthropic_messages import parse_count_tokens_request
from routing.codecs.base import UpstreamRequest
from routing.context import aauthenticate, model_not_found
from routing.health import key_health
from routing.upstream import UpstreamError, asend_once
from usage.limits import tokens_in

_MAX_ANSWER = 64 * 1024  # {"input_tokens": N} and nothing more is expected


async def acount_tokens(request: HttpRequest) -> HttpResponseBase:
    try:
        return await _acount(request)
    except ProxyError as error:
        return error_response(error, anthropic=True)


async def _acount(request: HttpRequest) -> HttpResponseBase:
    if request.method != "POST":
        raise ProxyError(405, "Use POST.", code="method_not_allowed", headers={"Allow": "POST"})
    context = await aauthenticate(request)
    raw = request.body
    call = parse_count_tokens_request(raw, headers=request.headers)
    routes = context.routes_for(call.model)
    if not routes:
        raise model_not_found(call.model)
    await key_health.arefresh()
    failure: ProxyError | None = None
    deadline = time.monotonic() + routes[0].provider.total_timeout
    for route in routes:
        if route.provider.kind != "anthropic":
            # The proxy's own count, as it reserves: no OpenAI-compatible API counts tokens.
            return JsonResponse({"input_tokens": tokens_in(len(raw))})
        headers = {"anthropic-version": call.version or settings.PROXY_ANTHROPIC_VERSION}
        allowed: frozenset[str] | None = settings.PROXY_ANTHROPIC_BETAS
        betas = [beta for beta in call.betas if allowed is None or beta in allowed]
        if betas:
            headers["anthropic-beta"] = ",".join(betas)
        outgoing = UpstreamRequest(
            f"{route.provider.base_url}/v1/messages/count_tokens",
            {**call.body, "model": route.upstream_model},
            headers,
        )
        tried: set[int] = set()
        while (key := key_health.choose(route.provider.keys, exclude=tried)) is not None:
            tried.add(key.id)
            try:
                response = await asend_once(
                    route=route, key=key, outgoing=outgoing, deadline=deadline
                )
            except UpstreamError as error:
                failure = error
                if not error.transient:
                    raise
                continue
            try:
                async with asyncio.timeout(max(0.1, deadline - time.monotonic())):
                    body = await aread_capped(response, limit=_MAX_ANSWER)
            except (TimeoutError, httpx.HTTPError):
                raise ProxyError(
                    502, "The provider's answer broke off.", code="upstream_error"
                ) from None
            finally:
                await response.aclose()
            return JsonResponse({"input_tokens": _input_tokens(body)})
    if failure is not None:
        raise failure
    raise ProxyError(503, "No provider key is available for this model.", code="no_provider_key")


def _input_tokens(body: bytes) -> int:
    """The provider's count (only the count: nothing else of its answer is passed on)."""
    try:
        count = json.loads(body).get("input_tokens")
    except (ValueError, AttributeError):
        count = None
    if type(count) is not int or count < 0:
        raise ProxyError(502, "The provider sent a malformed response.", code="upstream_error")
    return count
