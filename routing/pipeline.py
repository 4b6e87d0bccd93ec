"""A request's whole journey, top to bottom, whatever wire format the client speaks.

    authenticate (JWT, cached tenant context) -> parse with the client's codec -> routes
    -> admit (caps, rate limits, reserve) -> open an answer (healthy key, failover)
    -> answer (JSON) or relay (SSE) -> settle the bill

Everything after admission runs inside one ``async with meter:``: the :class:`Meter` is the
single owner of the request's bill. Whatever ends the exchange (an answer, a provider
failure, a bug, the client leaving, a stream cut off as too slow) passes through its exit,
which records how the request ended and settles it, exactly once.

Everything here is async and makes no blocking call: the tenant context comes from an
in-process cache, admission and settlement are one Redis script each, the provider is
called through the shared httpx client, and the ledger row is written off the response
path from the settlement's Redis stream entry.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from types import TracebackType
from typing import Any, Protocol, cast

import httpx
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.utils import timezone

from core import logs, metrics
from core.decoding import aread_capped, decoded
from core.errors import ProxyError
from routing.codecs.base import Call, ClientCodec, StreamTranslator, Usage
from routing.context import Route, TenantContext, aauthenticate, model_not_found
from routing.redaction import redact_error
from routing.sse import SSEParser
from routing.upstream import Attempt, Opened, aopen
from usage.bill import NANOS, Bill, Tokens
from usage.limits import Admission, aadmit, asettle, estimate, tokens_in
from usage.models import UsageRecord
from usage.softcap import asoft_capped
from usage.weeks import week_of

logger = logging.getLogger(__name__)

KEEPALIVE = b": keep-alive\n\n"
Status = UsageRecord.Status


def new_request_id() -> str:
    return f"req_{uuid.uuid4().hex}"


class _Journey(Protocol):
    def __call__(
        self,
        request: HttpRequest,
        *,
        codec: ClientCodec[Any],
        request_id: str,
        headers: dict[str, str],
        scope: metrics.RequestScope,
    ) -> Awaitable[HttpResponseBase]: ...


async def aserve(request: HttpRequest, *, codec: ClientCodec[Any]) -> HttpResponseBase:
    """Serve one API request in ``codec``'s wire format; every answer has an x-request-id."""
    return await _aanswer(request, codec=codec, journey=_ajourney)


async def acount_tokens(request: HttpRequest, *, codec: ClientCodec[Any]) -> HttpResponseBase:
    """Count a request's input tokens (Anthropic's ``/v1/messages/count_tokens``).

    On an Anthropic route the provider counts, with a pooled key: free there, so nothing is
    reserved and the ledger row costs nothing, but the tenant's rate and concurrency limits
    hold and failover and key health work as for any call. On an OpenAI-compatible route,
    which has no such endpoint, the proxy answers from its own estimate (the prompt's bytes
    at the rate reservations use) and nothing reaches a provider.
    """
    return await _aanswer(request, codec=codec, journey=_acount)


async def _aanswer(
    request: HttpRequest, *, codec: ClientCodec[Any], journey: _Journey
) -> HttpResponseBase:
    # The API middleware gave the request its id (proxy_site/middleware.py); it is on every
    # line logged while serving it, a stream's included (its events are sent from this same
    # task, after the view returned).
    request_id = logs.request_id.get() or new_request_id()
    logs.request_id.set(request_id)
    # What the metrics learn of the request as it goes (usage's recorders read it too).
    scope = metrics.RequestScope(request_id=request_id, wire_format=codec.name)
    metrics.scope.set(scope)
    # Filled in at admission: the rate-limit headers every later answer carries.
    headers: dict[str, str] = {"x-request-id": request_id}
    try:
        response = await journey(
            request, codec=codec, request_id=request_id, headers=headers, scope=scope
        )
    except ProxyError as error:
        response = codec.error_response(error)
        if not scope.admitted:
            _log_refusal(request_id, codec=codec, error=error)
    except Exception:
        # A bug, not a verdict on the request: logged in full, answered in the API's shape.
        logger.exception("%s failed", request_id)
        failure = ProxyError(500, "The proxy failed.", code="internal_error")
        response = codec.error_response(failure)
    for name, value in headers.items():
        response.headers.setdefault(name, value)
    if not scope.admitted:
        # An admitted request is counted when its bill is settled (usage/metrics.py).
        metrics.count_unadmitted(scope, code=response.status_code)
    return response


def _model_label(context: TenantContext, asked: str) -> str:
    """The name a request's model goes by in the metrics: its route's or an exact alias's,
    else the route a pattern led to; a name the client made up never becomes a label."""
    if asked in context.routes or asked in context.aliases:
        return asked
    return next((target for prefix, target in context.patterns if asked.startswith(prefix)), "")


async def _aresolve(
    request: HttpRequest, *, codec: ClientCodec[Any], scope: metrics.RequestScope
) -> tuple[TenantContext, bytes, Call, tuple[Route, ...]]:
    """Who asks, what, and which routes may serve it: the start of every journey."""
    if request.method != "POST":
        raise ProxyError(405, "Use POST.", code="method_not_allowed", headers={"Allow": "POST"})
    context = await aauthenticate(request)
    scope.tier, scope.tenant = context.tier_slug, context.slug
    raw = request.body
    call: Call = codec.parse(raw, request.headers)
    routes = context.routes_for(call.model)
    if not routes:
        raise model_not_found(call.model)
    scope.model = _model_label(context, call.model)
    return context, raw, call, routes


async def _ajourney(
    request: HttpRequest,
    *,
    codec: ClientCodec[Any],
    request_id: str,
    headers: dict[str, str],
    scope: metrics.RequestScope,
) -> HttpResponseBase:
    context, raw, call, routes = await _aresolve(request, codec=codec, scope=scope)
    now = timezone.now()
    downgraded_from = ""
    downgrade = context.limits.downgrade_model
    if downgrade and downgrade != call.model and await asoft_capped(account=context, now=now):
        # Past the tier's soft cap: its cheaper model serves (the answer names it), and the
        # client and the ledger are told which model was asked for.
        cheaper = context.routes_for(downgrade)
        if cheaper:
            routes, downgraded_from = cheaper, call.model
            scope.model = _model_label(context, downgrade)
            headers["x-llm-proxy-downgraded-from"] = call.model
    max_tokens = call.max_tokens or context.limits.default_max_tokens
    tokens, nanos = estimate(
        prices=[route.price for route in routes],
        body_bytes=len(raw),
        max_tokens=max_tokens,
        completions=call.completions,
    )
    if tokens > settings.PROXY_MAX_REQUEST_TOKENS:
        raise ProxyError(
            400,
            f"This request could use up to {tokens} tokens, more than the proxy's limit of "
            f"{settings.PROXY_MAX_REQUEST_TOKENS}; lower max_tokens or shorten the prompt.",
            code="request_too_large",
        )
    first = Attempt(route=routes[0], key=routes[0].provider.keys[0])
    # The ledger row this request gets should its worker die before settling it (stored with
    # the reservation, billed by usage's lost-request policy, refreshed from progress below).
    pending = _bill(
        request_id=request_id,
        context=context,
        attempt=first,
        stream=call.stream,
        tokens=Tokens(input=tokens - max_tokens * call.completions),
        status=Status.LOST,
        http_status=0,
        latency_ms=0,
        created_at=now,
        week=week_of(now).id,
        wire_format=codec.name,
        downgraded_from=downgraded_from,
    )
    admission = await aadmit(
        account=context,
        request_id=request_id,
        tokens=tokens,
        nanos=nanos,
        now=now,
        max_tokens=max_tokens,
        completions=call.completions,
        pending=pending,
    )
    scope.admitted = True
    headers.update(admission.headers)
    meter = Meter(
        admission=admission,
        context=context,
        attempt=first,
        stream=call.stream,
        prompt_estimate=tokens - max_tokens * call.completions,
        allowance=max_tokens * call.completions,
        wire_format=codec.name,
        downgraded_from=downgraded_from,
        scope=scope,
    )
    # Read by the lease heartbeat: what the request would be billed now, should it go no
    # further (the provider's counts where it gave them, else the proxy's, as for a cut stream).
    admission.progress = lambda: _tokens(meter.billed_usage())
    exchange = _aexchange(meter, call=call, codec=codec, routes=routes, max_tokens=max_tokens)
    # Up to the first item, failures are raised here (already billed): the client gets an
    # HTTP error. After it, they end the stream with an error event instead.
    reply = await anext(exchange)
    assert isinstance(reply, Reply)
    if reply.body is not None:
        await _finish(exchange)
        return HttpResponse(reply.body, content_type="application/json")
    response = StreamingHttpResponse(
        EventStream(exchange, meter), content_type="text/event-stream; charset=utf-8"
    )
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx: do not buffer the stream
    return response


async def _acount(
    request: HttpRequest,
    *,
    codec: ClientCodec[Any],
    request_id: str,
    headers: dict[str, str],
    scope: metrics.RequestScope,
) -> HttpResponseBase:
    context, raw, call, routes = await _aresolve(request, codec=codec, scope=scope)
    if routes[0].provider.kind != "anthropic":
        return JsonResponse({"input_tokens": tokens_in(len(raw))})
    # Failover stays among the routes that can count.
    routes = tuple(route for route in routes if route.provider.kind == "anthropic")
    now = timezone.now()
    admission = await aadmit(
        account=context, request_id=request_id, tokens=0, nanos=0, now=now, max_tokens=0
    )
    scope.admitted = True
    headers.update(admission.headers)
    first = Attempt(route=routes[0], key=routes[0].provider.keys[0])
    meter = Meter(
        admission=admission,
        context=context,
        attempt=first,
        stream=False,
        prompt_estimate=0,
        allowance=0,
        wire_format=codec.name,
        scope=scope,
    )
    exchange = _aexchange(meter, call=call, codec=codec, routes=routes, max_tokens=0)
    reply = await anext(exchange)
    assert isinstance(reply, Reply) and reply.body is not None
    await _finish(exchange)
    return HttpResponse(reply.body, content_type="application/json")


@dataclass(frozen=True, slots=True)
class Reply:
    """How the client's answer starts: a whole JSON body, or (body None) events to follow."""

    body: bytes | None


async def _finish(exchange: AsyncGenerator[Reply | bytes, None]) -> None:
    # Resumed past its last item, the exchange leaves its meter normally: billed as answered.
    async for _ in exchange:
        raise AssertionError("a JSON answer has nothing after its body")


class Meter:
    """The bill of one admitted request, and the one place that decides how it ended.

    ``async with meter:`` around everything that may reach the provider: on the way out the
    exception, if any, says how the request ended (a ProxyError its status, a cancellation
    or a closed generator that the client left, anything else a bug), and the bill is
    settled, shielded from the cancellation that may be under way.
    """

    def __init__(
        self,
        *,
        admission: Admission,
        context: TenantContext,
        attempt: Attempt,
        stream: bool,
        prompt_estimate: int,
        allowance: int,
        wire_format: str,
        downgraded_from: str = "",
        scope: metrics.RequestScope | None = None,
    ) -> None:
        self.admission, self.context, self.attempt = admission, context, attempt
        self.scope = scope
        # Seconds spent waiting on the provider's answer or stream (its headers are the
        # attempt's) and on the client taking a stream's events: what is not overhead.
        self.provider_wait = self.client_wait = 0.0
        self.stream_opened = False
        self.wire_format, self.downgraded_from = wire_format, downgraded_from
        self.first_byte_at: float | None = None  # when the client got the answer's first byte
        # What the client was told, when it failed: the words only, never the exception,
        # whose traceback would keep the failed exchange's frames (a refused 32 MiB answer
        # among them) alive until the garbage collector finds the cycle.
        self.error_code = self.error_message = ""
        self.stream, self.prompt_estimate = stream, prompt_estimate
        self.allowance = allowance  # output tokens the provider was allowed (max_tokens * n)
        self.usage = Usage()
        self.translator: StreamTranslator | None = None
        self.status: str = Status.OK
        self.http_status = 200
        self.created_at = timezone.now()
        self.started = time.monotonic()
        self.settled = False

    @property
    def request_id(self) -> str:
        return self.admission.request_id

    async def __aenter__(self) -> Meter:
        metrics.IN_FLIGHT.inc()
        return self

    def open_stream(self) -> None:
        """The client's stream opens now (it closes at settlement)."""
        if not self.stream_opened:
            self.stream_opened = True
            metrics.OPEN_STREAMS.inc()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc is not None:
            self.record_failure(exc)
        await asyncio.shield(self._asettle())

    def record_failure(self, exc: BaseException) -> None:
        """How the request ended, from what ended it; the first failure is the one billed."""
        if self.status != Status.OK:
            return
        if isinstance(exc, ProxyError):
            status = Status.UPSTREAM_TIMEOUT if exc.status == 504 else Status.UPSTREAM_ERROR
            self.status, self.http_status = status, exc.status
            self.error_code, self.error_message = exc.code or "", exc.message
        elif isinstance(exc, asyncio.CancelledError | GeneratorExit):
            # Cancelled: the client left while this waited on the provider. GeneratorExit:
            # it left (or was cut off as too slow) while the stream waited to send.
            self.status, self.http_status = Status.CLIENT_DISCONNECTED, 499
        else:
            self.status, self.http_status = Status.UPSTREAM_ERROR, 500

    def billed_usage(self) -> Usage:
        """What the request is billed, as things stand: the provider's figures when they are
        possible. Reads only (the heartbeat calls it too).

        The proxy's own estimate stands in for figures the provider never gave (a stream cut
        short) or gave wrong (negative, not integers, absurd, more output than the limit
        sent, missing from a whole answer or a complete stream): the prompt estimate, and the
        output it produced by the proxy's count (content deltas of a stream, the text of an
        answer), never past the allowance.
        """
        translator = self.translator
        usage = self.usage if translator is None else translator.usage
        invalid = (
            usage.invalid
            or (translator is not None and translator.complete and not usage.reported)
            or (usage.reported and usage.output_tokens > self.allowance)
        )
        if invalid:
            produced = usage.output_estimate if translator is None else translator.content_deltas
            return Usage(
                input_tokens=self.prompt_estimate,
                output_tokens=min(produced, self.allowance),
                invalid=True,
            )
        if translator is not None and not usage.reported:
            # Cut short: providers stream about one token per content delta, and the prompt
            # estimate stands in where the provider never said (OpenAI-style APIs report
            # usage only at the end).
            deltas = translator.content_deltas
            return replace(
                usage,
                input_tokens=usage.input_tokens or (self.prompt_estimate if deltas else 0),
                output_tokens=min(max(usage.output_tokens, deltas), self.allowance),
            )
        return usage

    def bill(self) -> Bill:
        usage = self.billed_usage()
        if usage.invalid:
            logger.warning(
                "%s: the provider's usage figures are impossible; billing the proxy's estimate",
                self.request_id,
            )
        return _bill(
            request_id=self.request_id,
            context=self.context,
            attempt=self.attempt,
            stream=self.stream,
            tokens=_tokens(usage),
            status=self.status,
            http_status=self.http_status,
            latency_ms=int((time.monotonic() - self.started) * 1000),
            created_at=self.created_at,
            week=self.admission.week.id,
            wire_format=self.wire_format,
            ttft_ms=None
            if self.first_byte_at is None
            else int((self.first_byte_at - self.started) * 1000),
            error_code=self.error_code,
            error_message=self.error_message,
            downgraded_from=self.downgraded_from,
        )

    async def _asettle(self) -> None:
        if self.settled:
            return
        self.settled = True
        try:
            bill = self.bill()
            await asettle(self.admission, bill)
            _log_request(bill, context=self.context, key_label=self.attempt.key.label)
            if self.scope is not None:
                route = self.attempt.route
                metrics.observe_timings(
                    self.scope,
                    provider=route.provider.slug,
                    operation=metrics.OPERATIONS.get(self.wire_format, "chat"),
                    upstream_model=route.upstream_model,
                    waited=self.attempt.waited + self.provider_wait + self.client_wait,
                    first_byte_at=self.first_byte_at,
                    ok=self.status == Status.OK,
                )
        finally:
            metrics.IN_FLIGHT.dec()
            if self.stream_opened:
                metrics.OPEN_STREAMS.dec()


def _log_refusal(request_id: str, *, codec: ClientCodec[Any], error: ProxyError) -> None:
    """The one INFO line of a request refused before admission (bad token, body or model,
    a cap or rate limit): nothing was billed, so only what the client was told."""
    logger.info(
        "%s %s refused: %d %s",
        request_id,
        codec.name,
        error.status,
        error.code,
        extra={
            "event": "request",
            "request_id": request_id,
            "wire_format": codec.name,
            "status": "refused",
            "http_status": error.status,
            "error_code": error.code,
        },
    )


def _log_request(bill: Bill, *, context: TenantContext, key_label: str) -> None:
    """The request's one INFO line: with LOG_FORMAT=json, one object a log pipeline can
    index (no token, key or prompt in it: the key's label only)."""
    if not logger.isEnabledFor(logging.INFO):
        return  # the fields below are built for every request: not when nobody reads them
    tokens = bill.tokens
    logger.info(
        "%s %s %s -> %s %s %d tokens in %d ms",
        bill.request_id,
        bill.wire_format,
        bill.model,
        bill.provider_slug,
        bill.status,
        tokens.total,
        bill.latency_ms,
        extra={
            "event": "request",
            # Explicit: settlement may run after the request's own context (a stream closed
            # by its client is settled by a task of its own).
            "request_id": bill.request_id,
            "tenant": context.slug,
            "tenant_id": bill.tenant_id,
            "tier": context.tier_slug,
            "model": bill.model,
            "route_id": bill.route_id,
            "provider": bill.provider_slug,
            "upstream_model": bill.upstream_model,
            "key_label": key_label,
            "wire_format": bill.wire_format,
            "stream": bill.stream,
            "status": bill.status,
            "http_status": bill.http_status,
            "input_tokens": tokens.input,
            "output_tokens": tokens.output,
            "cache_read_tokens": tokens.cache_read,
            "cache_write_tokens": tokens.cache_write,
            "reasoning_tokens": tokens.reasoning,
            "cost_usd": str(Decimal(bill.cost_nanos) / NANOS),
            "latency_ms": bill.latency_ms,
            "ttft_ms": bill.ttft_ms,
            "attempts": bill.attempts,
            "error_code": bill.error_code or None,
            "downgraded_from": bill.downgraded_from or None,
        },
    )


def _tokens(usage: Usage) -> Tokens:
    return Tokens(
        input=usage.input_tokens,
        output=usage.output_tokens,
        cache_read=usage.cache_read_tokens,
        cache_write=usage.cache_write_tokens,
        reasoning=usage.reasoning_tokens,
        reported=usage.reported,
        invalid=usage.invalid,
    )


def _bill(
    *,
    request_id: str,
    context: TenantContext,
    attempt: Attempt,
    stream: bool,
    tokens: Tokens,
    status: str,
    http_status: int,
    latency_ms: int,
    created_at: datetime,
    week: str,
    wire_format: str,
    ttft_ms: int | None = None,
    error_code: str = "",
    error_message: str = "",
    downgraded_from: str = "",
) -> Bill:
    """A request's bill, charged to the route and key of its (latest) attempt."""
    route, key = attempt.route, attempt.key
    return Bill(
        request_id=request_id,
        tenant_id=context.tenant_id,
        tier_id=context.tier_id,
        route_id=route.id,
        provider_key_id=key.id,
        model=route.model,
        provider_slug=route.provider.slug,
        upstream_model=route.upstream_model,
        stream=stream,
        tokens=tokens,
        price=route.price,
        status=status,
        http_status=http_status,
        attempts=attempt.count,
        latency_ms=latency_ms,
        created_at=created_at,
        week=week,
        wire_format=wire_format,
        ttft_ms=ttft_ms,
        error_code=error_code,
        error_message=error_message[:500],
        downgraded_from=downgraded_from,
    )


async def _aexchange(
    meter: Meter,
    *,
    call: Call,
    codec: ClientCodec[Any],
    routes: tuple[Route, ...],
    max_tokens: int,
) -> AsyncGenerator[Reply | bytes, None]:
    """Open an answer and deliver it: first a :class:`Reply`, then (streams) its events."""
    async with meter:
        deadline = time.monotonic() + routes[0].provider.total_timeout
        opening = asyncio.ensure_future(
            aopen(
                call=call,
                codec=codec,
                routes=routes,
                max_tokens=max_tokens,
                attempt=meter.attempt,
                deadline=deadline,
            )
        )
        started = False  # whether the client already has the stream's first bytes
        try:
            if call.stream:
                # A slow provider does not keep the client waiting in silence: after a while
                # the stream opens anyway and keep-alive comments hold it until it starts.
                done, _ = await asyncio.wait({opening}, timeout=settings.PROXY_STREAM_KEEPALIVE)
                if not done:
                    started = True
                    meter.open_stream()
                    yield Reply(body=None)
                while not done:
                    done, _ = await asyncio.wait({opening}, timeout=settings.PROXY_STREAM_KEEPALIVE)
                    if not done:
                        yield KEEPALIVE
            opened = await opening
        except Exception as error:
            if not started:
                await _abandon(opening)
                raise  # the client gets it as an HTTP error
            # The stream had started on keep-alives: the failure becomes its last event.
            if not isinstance(error, ProxyError):
                logger.exception("%s: opening an answer failed", meter.request_id)
                error = ProxyError(500, "The proxy failed.", code="internal_error")
            meter.record_failure(error)
            yield codec.stream_error(error)
            return
        except BaseException:
            await _abandon(opening)
            raise
        logger.debug(
            "%s: %s %s -> %s/%s with key %s after %d attempt(s)",
            meter.request_id,
            meter.context.slug,
            call.model,
            opened.route.provider.slug,
            opened.route.upstream_model,
            opened.key.label,
            meter.attempt.count,
        )
        try:
            if not call.stream:
                body = await _aread_answer(opened, call=call, meter=meter, deadline=deadline)
                meter.first_byte_at = time.monotonic()
                yield Reply(body=body)
                return
            if not started:
                meter.open_stream()
                yield Reply(body=None)
            relay = _arelay(opened, call=call, codec=codec, meter=meter, deadline=deadline)
            try:
                async for part in relay:
                    handed = time.monotonic()
                    yield part
                    meter.client_wait += time.monotonic() - handed
            finally:
                await relay.aclose()
        finally:
            await opened.response.aclose()


async def _abandon(opening: asyncio.Future[Opened]) -> None:
    """An opening no longer wanted (the client left, or a bug): stop it, close its answer."""
    if not opening.done():
        opening.cancel()
    elif not opening.cancelled() and opening.exception() is None:
        await opening.result().response.aclose()  # it opened just as the exchange ended


async def _aread_answer(opened: Opened, *, call: Call, meter: Meter, deadline: float) -> bytes:
    """A non-streamed answer, read within the deadline and translated for the client."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout_at(loop.time() + deadline - time.monotonic()):
            # Decoded step by step and refused past the cap (core/decoding.py): a gzip bomb
            # or a 50 MB body costs the worker at most PROXY_MAX_ANSWER_BYTES.
            reading = time.monotonic()
            try:
                raw = await aread_capped(opened.response, limit=settings.PROXY_MAX_ANSWER_BYTES)
            finally:
                meter.provider_wait += time.monotonic() - reading
    except (TimeoutError, httpx.TimeoutException):
        raise ProxyError(
            504, "The provider's answer took too long.", code="upstream_timeout"
        ) from None
    except httpx.HTTPError:
        raise ProxyError(502, "The provider's answer broke off.", code="upstream_error") from None
    try:
        body, meter.usage = opened.codec.completion(route=opened.route, call=call, raw=raw)
        # A pooled key never leaves the proxy, whatever the provider quoted in its answer.
        body = opened.key.auth.scrub_bytes(body)
    except ProxyError as error:
        # Its message may quote the provider (an error sent as a 200): nothing of the set-up.
        raise redact_error(error, route=opened.route, key=opened.key) from None
    except Exception:
        # A translation bug is the proxy's, never "the provider sent a malformed answer".
        logger.exception("%s: translating the provider's answer failed", meter.request_id)
        raise ProxyError(
            502, "The provider's answer could not be translated.", code="translation_error"
        ) from None
    return body


async def _arelay(
    opened: Opened, *, call: Call, codec: ClientCodec[Any], meter: Meter, deadline: float
) -> AsyncGenerator[bytes, None]:
    """Pass each provider event on the moment it arrives, translated for the client.

    A provider that stops sending content for the route's idle limit (keep-alive comments
    do not count), or runs past the total deadline, is cut with an error event; so is one
    that breaks off, or whose events cannot be translated.
    """
    route = opened.route
    translator = meter.translator = opened.codec.stream(route=route, call=call)
    parser = SSEParser(max_event_bytes=settings.PROXY_MAX_EVENT_BYTES)
    chunks = decoded(opened.response)
    loop = asyncio.get_running_loop()
    idle = route.provider.idle_timeout
    content_by = time.monotonic() + idle
    failure: ProxyError | None = None
    while failure is None:
        now = time.monotonic()
        try:
            async with asyncio.timeout_at(loop.time() + min(content_by, deadline) - now):
                chunk = await anext(chunks)
        except StopAsyncIteration:
            break
        except (TimeoutError, httpx.TimeoutException):
            cause = "went silent" if content_by < deadline else "ran past its deadline"
            failure = ProxyError(504, f"The provider's stream {cause}.", code="upstream_timeout")
            break
        except httpx.HTTPError:
            break  # the provider broke off: reported just below
        except ProxyError as error:
            failure = error  # a body that does not decode
            break
        finally:
            meter.provider_wait += time.monotonic() - now  # waiting on the provider
        # One network read may carry several events, the last of them a failure: what the
        # events before it produced still goes out, ahead of the error.
        pieces: list[bytes] = []
        try:
            events = parser.feed(chunk)  # ProxyError past PROXY_MAX_EVENT_BYTES
            if any(event.data is not None for event in events):
                content_by = time.monotonic() + idle
            for event in events:
                pieces.append(translator.feed(event))
        except ProxyError as error:
            failure = error
        except Exception:
            # Logged with the request id: a bug in a translator must not pass for the
            # provider's fault, and the stream cannot go on either way.
            logger.exception("%s: translating the provider's stream failed", meter.request_id)
            failure = ProxyError(
                502, "The provider's stream could not be translated.", code="upstream_error"
            )
        out = b"".join(pieces)
        if out:
            if meter.first_byte_at is None and translator.content_deltas:
                meter.first_byte_at = time.monotonic()  # the first content the client gets
            # Events are whole here (the parser cuts at their ends), so a key quoted in one,
            # an error event as much as content, is found and removed before it is sent.
            yield opened.key.auth.scrub_bytes(out)
        if failure is not None:
            break
        if translator.complete:
            # The provider ended its answer: whatever it might send after is not relayed (nor
            # can it turn a complete answer into a failure, or follow its last event). The
            # body is read to its end, briefly, so that the connection can be used again.
            await _adrain(chunks, seconds=1.0)
            break
    if failure is None and not translator.complete:
        failure = ProxyError(502, "The provider's stream broke off.", code="upstream_error")
    if failure is not None:
        # The provider's words may be in it (its own error event): nothing of the set-up.
        failure = redact_error(failure, route=route, key=opened.key)
        meter.record_failure(failure)
        # A format whose events are numbered (Responses) ends the stream in its own sequence;
        # b"": the translator already relayed the provider's own terminal failure event.
        ending = translator.error_event(failure)
        yield codec.stream_error(failure) if ending is None else ending


async def _adrain(chunks: AsyncIterator[bytes], *, seconds: float) -> None:
    try:
        async with asyncio.timeout(seconds):
            async for _ in chunks:
                pass
    except (TimeoutError, httpx.HTTPError, ProxyError):
        pass  # a provider holding the connection open, or breaking it: it is closed then


class EventStream:
    """A stream's events, closed properly however its client leaves.

    Django closes a response once it is done with it, and calls close() on streaming content
    that has one; left to the garbage collector, the exchange's exit (close the provider's
    stream, bill what was produced) would run whenever it got to it. So close() closes the
    exchange at once, which bills it as left by its client unless it had already ended.
    """

    def __init__(self, exchange: AsyncGenerator[Reply | bytes, None], meter: Meter) -> None:
        self.exchange, self.meter = exchange, meter
        self._closing: asyncio.Task[None] | None = None
        # The request's context (its request id, its metrics scope): close() may be called
        # from the server's task, whose context has neither, and settles the bill.
        self._context = contextvars.copy_context()

    def __aiter__(self) -> AsyncIterator[bytes]:
        # Past its Reply, an exchange yields only the stream's bytes.
        return cast(AsyncIterator[bytes], self.exchange)

    def close(self) -> None:
        if not self.meter.settled and self._closing is None:
            self._closing = asyncio.get_running_loop().create_task(
                self.exchange.aclose(), context=self._context
            )
