"""Opening a provider's answer, with failover before the first byte.

Attempts go to a healthy pooled key of the first route; a key the provider rate-limits (429)
rests and one it refuses (401/403) is switched off, and the next key is tried; a provider
that fails (5xx) gets one more key, then the next route by priority takes over, as does a
connection refused or a provider too slow to start. All of it within the first route's total
deadline, and never once a byte of an answer has reached the client: this module only opens
answers; relaying them is the pipeline's.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import httpx
from django.conf import settings

from core import metrics
from core.decoding import aread_capped, content_encoding
from core.errors import ProxyError
from core.http import upstream_client
from routing.codecs.base import (
    Call,
    ClientCodec,
    ProviderCodec,
    UpstreamRequest,
    error_message_of,
    upstream_error,
)
from routing.context import PooledKey, Route
from routing.health import key_health
from routing.redaction import MAX_MESSAGE, redact

# An error body is read for its message only; a provider that answers an error with
# megabytes, or with a gzip bomb, is cut here (after decoding: core/decoding.py).
_MAX_ERROR_BODY = 64 * 1024


class UpstreamError(ProxyError):
    """A provider's failure, with what failover needs to know about it."""

    def __init__(
        self,
        error: ProxyError,
        *,
        upstream_status: int | None = None,
        retry_after: float | None = None,
        request_too_large: bool = False,
    ) -> None:
        super().__init__(
            error.status,
            error.message,
            code=error.code,
            type=error.type,
            headers=error.headers,
            transient=error.transient,
        )
        self.upstream_status = upstream_status
        self.retry_after = retry_after
        # OpenAI answers 429 "Request too large ... tokens per min" for a request bigger than
        # the whole per-minute budget: that says nothing about the key.
        self.request_too_large = request_too_large


@dataclass
class Attempt:
    """Where a request went last: what the bill names."""

    route: Route
    key: PooledKey
    count: int = 0
    # Seconds spent waiting on providers for answers' headers, every attempt's (the
    # proxy's overhead is what a request takes besides: core/metrics.py).
    waited: float = 0.0


@dataclass
class Opened:
    response: httpx.Response
    codec: ProviderCodec[Any]  # how this route's answer becomes the client's
    route: Route
    key: PooledKey


def _retry_after(value: str | None) -> float | None:
    try:
        seconds = float(value) if value else None
    except ValueError:
        return None
    return seconds if seconds is not None and 0 < seconds <= 3600 else None


async def asend_once(
    *,
    route: Route,
    key: PooledKey,
    outgoing: UpstreamRequest,
    deadline: float,
) -> httpx.Response:
    """One attempt: the provider's answer with its headers read, or UpstreamError."""
    client = upstream_client()
    provider = route.provider
    # No read timeout in httpx: the first byte, the idle limit (streams) and the total
    # deadline are each enforced by the proxy itself, each with its own error.
    timeout = httpx.Timeout(
        connect=provider.connect_timeout,
        read=None,
        write=provider.idle_timeout,
        pool=provider.connect_timeout,
    )
    request = client.build_request(
        "POST", outgoing.url, json=outgoing.payload, headers=outgoing.headers, timeout=timeout
    )
    loop = asyncio.get_running_loop()
    first_byte_by = min(deadline, time.monotonic() + provider.first_byte_timeout)
    try:
        async with asyncio.timeout_at(loop.time() + (first_byte_by - time.monotonic())):
            response = await client.send(request, auth=key.auth, stream=True)
    except (TimeoutError, httpx.TimeoutException):
        raise UpstreamError(
            ProxyError(
                504, "The provider did not answer in time.", code="upstream_timeout", transient=True
            )
        ) from None
    except httpx.HTTPError:
        raise UpstreamError(
            ProxyError(
                502,
                "The provider could not be reached.",
                code="upstream_unreachable",
                transient=True,
            )
        ) from None
    if response.status_code < 300:
        try:
            # Refused before a byte of it is read (or a stream opened to the client): an
            # encoding the proxy never asked for and cannot decode within bounds. Another
            # route may answer properly.
            content_encoding(response.headers)
        except ProxyError as error:
            await response.aclose()
            raise UpstreamError(error) from None
        return response
    try:
        async with asyncio.timeout(min(5.0, max(0.1, deadline - time.monotonic()))):
            raw = await aread_capped(response, limit=_MAX_ERROR_BODY, truncate=True)
    except (httpx.HTTPError, TimeoutError, ProxyError):
        raw = b""  # no message then: the status still says what happened
    finally:
        await response.aclose()
    message = error_message_of(raw)
    retry_after = response.headers.get("retry-after")
    raise UpstreamError(
        upstream_error(
            status=response.status_code,
            # A provider may echo the key it was sent, or name its address, the key or the
            # upstream model, in its error text: never pass that on.
            message=redact(message, route=route, key=key)[:MAX_MESSAGE] if message else None,
            retry_after=retry_after,
        ),
        upstream_status=response.status_code,
        retry_after=_retry_after(retry_after),
        request_too_large="too large" in (message or "").lower(),
    )


async def aopen(
    *,
    call: Call,
    codec: ClientCodec[Any],
    routes: tuple[Route, ...],
    max_tokens: int,
    attempt: Attempt,
    deadline: float,
) -> Opened:
    """Open an answer from the first route and key that gives one, or raise ProxyError."""
    await key_health.arefresh()
    refusal: ProxyError | None = None  # a route that could not take the request at all
    failure: UpstreamError | None = None  # the last provider failure
    for route in routes:
        provider_codec = codec.provider_codec(route.provider)
        try:
            outgoing = provider_codec.build(route=route, call=call, max_tokens=max_tokens)
        except ProxyError as error:
            # This route's provider cannot take the request (say, tools on Anthropic); a
            # fallback may. If none can, the client hears why from the first.
            refusal = refusal or error
            continue
        tried: set[int] = set()
        server_errors = 0
        while (key := key_health.choose(route.provider.keys, exclude=tried)) is not None:
            if time.monotonic() >= deadline:
                raise ProxyError(
                    504, "The provider did not answer in time.", code="upstream_timeout"
                )
            tried.add(key.id)
            attempt.route, attempt.key = route, key
            attempt.count += 1
            provider = route.provider.slug
            metrics.upstream_attempt(provider=provider, key=key.label)
            sent = time.monotonic()
            try:
                response = await asend_once(
                    route=route,
                    key=key,
                    outgoing=outgoing,
                    deadline=deadline,
                )
            except UpstreamError as error:
                attempt.waited += time.monotonic() - sent
                metrics.upstream_error(provider=provider, key=key.label, error=error.code or "")
                failure = error
                status = error.upstream_status
                if status == 429 and error.request_too_large:
                    raise  # the request is over a rate limit on its own: no key will take it
                if status == 429:
                    seconds = error.retry_after or settings.PROXY_KEY_COOLDOWN
                    await key_health.arest(
                        key,
                        seconds=seconds,
                        error=f"429 from the provider; resting {seconds:.0f}s",
                        provider=provider,
                    )
                    continue
                if status == 401:
                    # The provider does not know the key: no point in trying it again.
                    await key_health.aswitch_off(
                        key, error="401 from the provider: key refused", provider=provider
                    )
                    continue
                if status == 403:
                    # Forbidden can be about this request as much as the key (a content
                    # filter, a WAF): the key rests rather than being switched off for good.
                    await key_health.arest(
                        key,
                        seconds=settings.PROXY_KEY_COOLDOWN,
                        error="403 from the provider; resting",
                        provider=provider,
                    )
                    continue
                if status is not None and status >= 500 and server_errors == 0:
                    server_errors += 1
                    continue  # once more on another key, then the next route
                if not error.transient and status != 404:
                    raise  # the request itself is wrong: no other provider will like it better
                break  # unreachable, too slow, failing, or not knowing the model: next route
            attempt.waited += time.monotonic() - sent
            return Opened(response=response, codec=provider_codec, route=route, key=key)
    if failure is not None:
        raise failure
    if refusal is not None:
        raise refusal
    wait = min(
        (w for r in routes if (w := key_health.seconds_until_usable(r.provider.keys)) is not None),
        default=None,
    )
    if wait is not None:
        raise ProxyError(
            429,
            "Every provider key for this model is resting after rate limits; retry shortly.",
            code="upstream_rate_limited",
            type="rate_limit_exceeded",
            headers={"Retry-After": str(wait)},
        )
    raise ProxyError(503, "No provider key is available for this model.", code="no_provider_key")
