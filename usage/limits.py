"""Admission and settlement on the hot path: weekly caps, rate limits, reservations.

Before a request is forwarded, :func:`aadmit` runs one Lua script that checks concurrency,
requests per minute and both weekly caps and, if all pass, reserves the request's worst
case: its estimated prompt plus its completion allowance, in tokens and in cost. When the
answer is over (completed, failed, or the client gone), :func:`asettle` releases the
reservation and adds the actual usage, once per request id, in the same atomic step that
appends the ledger entry. Since a reservation is an upper bound of what the request can
use, the week's usage never exceeds a cap.

Leases are short (PROXY_LEASE_TTL, 30 s): one task per process, :class:`_Heartbeat`, renews
those of all its live admissions every third of that, one script call per tenant. A worker
that dies (kill -9) stops renewing: its leases are free within PROXY_LEASE_TTL, and each of
its requests is billed by the pending record admission stored (status ``lost``: see
:func:`_lost_bill` for the policy) by the next admission of its tenant or any process's
ledger sweep, exactly once: a settlement that comes after that is a no-op.

Redis unreachable: caps fail closed (503 at once, nothing forwarded) unless the tier chose
fail-open, which serves without rate limits and checks caps against the database ledger.
A settlement that cannot reach Redis is written straight to the database.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import math
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings

from core import metrics
from core.errors import ProxyError
from core.redis import RedisFailure
from core.singleflight import SingleFlight
from tenants.limits import Account, Limits
from usage import counters
from usage.bill import NANOS, Bill, Price, Tokens, to_nanos
from usage.ledger import (
    LockBusy,
    drain_all,
    drain_tenant,
    reconcile,
    record_to_json,
    seed_week,
    sweep_all,
    sweep_tenant,
    week_usage,
)
from usage.signals import bill_settled
from usage.weeks import Week, week_of

logger = logging.getLogger(__name__)

_WINDOW_MS = 60_000
# The admission script's verdicts as the refusal metric names them.
_REASONS = {
    "tokens": "weekly_token_cap",
    "cost": "weekly_cost_cap",
    "rpm": "requests_per_minute",
    "concurrency": "concurrency",
}
_UNREACHABLE = (*RedisFailure, LockBusy)


@dataclass
class Admission:
    request_id: str
    tenant_id: int
    week: Week
    headers: dict[str, str] = field(default_factory=dict)
    # False when admitted while Redis was unreachable (fail-open): nothing is reserved, and
    # there is no lease to renew.
    reserved: bool = True
    # The bill if the worker dies before settling (status lost), as stored at admission;
    # the heartbeat refreshes it from ``progress`` (what the request has produced so far).
    pending: Bill | None = None
    progress: Callable[[], Tokens] | None = None
    reserved_tokens: int = 0
    # The tenant's limits it was admitted under (its cached context's): what bill_settled's
    # receivers compare the week with, without a database read of their own.
    limits: Limits | None = None
    admitted_at: float = field(default_factory=time.monotonic)


def _headers(
    account: Account,
    week: Week,
    now: datetime,
    used: int | None,
    held: int,
    in_window: int,
) -> dict[str, str]:
    """The x-ratelimit-* headers; the token ones only when the week's usage is known."""
    limits = account.limits
    headers = {}
    if limits.requests_per_minute:
        headers["x-ratelimit-limit-requests"] = str(limits.requests_per_minute)
        headers["x-ratelimit-remaining-requests"] = str(
            max(0, limits.requests_per_minute - in_window)
        )
    if limits.weekly_token_cap is not None and used is not None:
        headers["x-ratelimit-limit-tokens"] = str(limits.weekly_token_cap)
        headers["x-ratelimit-remaining-tokens"] = str(max(0, limits.weekly_token_cap - used - held))
        headers["x-ratelimit-reset-tokens"] = f"{week.seconds_left(now)}s"
    return headers


def _usd(nanos: int, rounding: str) -> str:
    """Dollars for a message: cents, or finer when cents would read $0.00."""
    usd = Decimal(nanos) / NANOS
    cents = usd.quantize(Decimal("0.01"), rounding=rounding)
    if cents == 0 and nanos > 0:
        return f"${usd.quantize(Decimal('0.000001'), rounding=rounding).normalize():f}"
    return f"${cents}"


def _quota_message(
    kind: str, *, left: int, asked: int, max_tokens: int | None, completions: int
) -> str:
    """Why a request is over a weekly cap: used up, or more reserved than what is left.

    ``left`` and ``asked`` are tokens (kind "tokens") or nano-dollars (kind "cost"): what
    the week has left (cap - used - held by requests in flight) and what this request
    reserves. ``max_tokens`` (with ``completions``, OpenAI's ``n``) is the completion
    allowance inside ``asked``, when the caller says.
    """
    what = "token" if kind == "tokens" else "cost"
    if left <= 0:
        return f"This tenant has used its weekly {what} allowance; it renews when the week resets."
    later = "or wait for the week to reset"
    if kind == "cost":
        return (
            f"Only {_usd(left, ROUND_FLOOR)} remains of this tenant's weekly cost allowance, "
            f"and this request may cost up to {_usd(asked, ROUND_CEILING)} (its prompt "
            "estimate and completion allowance at the dearest route's prices): a smaller "
            f"max_tokens or a shorter prompt may fit, {later}."
        )
    head = f"Only {left} tokens remain of this tenant's weekly allowance, and this request reserves"
    if max_tokens is None:
        return (
            f"{head} {asked} (its prompt estimate plus its max_tokens allowance): a smaller "
            f"max_tokens or a shorter prompt may fit, {later}."
        )
    prompt = asked - max_tokens * completions
    each = f" for each of {completions} answers" if completions > 1 else ""
    head = (
        f"{head} {asked} (a prompt estimate of {prompt} plus a max_tokens allowance of "
        f"{max_tokens}{each})"
    )
    fits = (left - prompt) // completions
    if fits > 0:
        return f"{head}: send max_tokens of at most {fits} to fit, {later}."
    if prompt >= left:
        return f"{head}: its prompt alone is larger than that; shorten it, {later}."
    return f"{head}: ask for fewer answers (n), {later}."


def _quota_refusal(
    kind: str,
    retry_after: int,
    headers: dict[str, str],
    *,
    left: int,
    asked: int,
    max_tokens: int | None,
    completions: int,
) -> ProxyError:
    return ProxyError(
        429,
        _quota_message(
            kind, left=left, asked=asked, max_tokens=max_tokens, completions=completions
        ),
        code="insufficient_quota",
        type="insufficient_quota",
        headers={**headers, "Retry-After": str(max(1, retry_after))},
    )


def _refusal(kind: str, retry_after: int, headers: dict[str, str]) -> ProxyError:
    headers = {**headers, "Retry-After": str(max(1, retry_after))}
    what = "concurrent requests" if kind == "concurrency" else "requests per minute"
    return ProxyError(
        429,
        f"Too many {what} for this tenant; retry after the Retry-After delay.",
        code="rate_limit_exceeded",
        type="requests",
        headers=headers,
    )


def tokens_in(text_bytes: int) -> int:
    """The proxy's estimate of the tokens in ``text_bytes`` bytes of text (a prompt, or an
    answer whose provider gave no usable count)."""
    return math.ceil(text_bytes / settings.PROXY_PROMPT_BYTES_PER_TOKEN)


def estimate(
    *, prices: Sequence[Price], body_bytes: int, max_tokens: int, completions: int = 1
) -> tuple[int, int]:
    """The worst case to reserve: (tokens, nano-dollars).

    ``completions`` answers (OpenAI's ``n``) of up to ``max_tokens`` each, priced at the
    dearest route the request may fail over to: it is reserved once, before anyone knows
    which route will answer.
    """
    prompt = tokens_in(body_bytes)
    output = max_tokens * completions
    # Every prompt token at the dearest input price (a cache write costs more than plain
    # input at Anthropic): the reservation is a ceiling, whatever the provider caches.
    cost = max(
        (prompt * price.dearest_input + output * price.output_usd_per_mtok) / 1_000_000
        for price in prices
    )
    return prompt + output, to_nanos(cost, ceiling=True)


async def aadmit(
    *,
    account: Account,
    request_id: str,
    tokens: int,
    nanos: int,
    now: datetime,
    max_tokens: int | None = None,
    completions: int = 1,
    pending: Bill | None = None,
) -> Admission:
    """Admit and reserve, or raise ProxyError (429 over a limit, 503 store unreachable).

    ``tokens`` and ``nanos`` are the request's worst case (:func:`estimate`); given the
    ``max_tokens`` and ``completions`` it was estimated with, a refusal over a weekly cap
    names the largest max_tokens that would fit. ``pending`` is the request's bill should
    its worker die before settling it (status lost), stored with the reservation.
    """
    limits = account.limits
    week = week_of(now)
    cap_nanos = -1 if limits.weekly_cost_cap_usd is None else to_nanos(limits.weekly_cost_cap_usd)
    admission = Admission(
        request_id=request_id,
        tenant_id=account.tenant_id,
        week=week,
        pending=pending,
        reserved_tokens=tokens,
        limits=limits,
    )
    call = counters.admit_call(
        tenant_id=account.tenant_id,
        week_id=week.id,
        now_ms=int(now.timestamp() * 1000),
        request_id=request_id,
        tokens=tokens,
        nanos=nanos,
        cap_tokens=-1 if limits.weekly_token_cap is None else limits.weekly_token_cap,
        cap_nanos=cap_nanos,
        requests_per_minute=limits.requests_per_minute,
        max_concurrent=limits.max_concurrent_requests,
        lease_ms=_lease_ms(),
        window_ms=_WINDOW_MS,
        pending="" if pending is None else _pending_value(_lost_bill(admission)),
    )
    try:
        scripts = counters.async_scripts(counters.async_client())
        result = await scripts.admit(**call)
        if result[0] == b"seed":
            # First request of the week, or Redis lost the counters: rebuild from the ledger.
            # One rebuild per tenant-week at a time in this process: a new week starts with
            # every counter unseeded, and a burst must not send them all to the database.
            await _seeds.run(
                (account.tenant_id, week.id),
                lambda: database_sync_to_async(_seed, thread_sensitive=False)(
                    account.tenant_id, week
                ),
            )
            result = await scripts.admit(**call)
    except _UNREACHABLE as exc:
        if not account.limits.rate_limits_fail_open:
            # The script may have run even though its answer never came (a timeout): undo
            # whatever it reserved once Redis answers again, or its TTL will.
            _release_soon(account.tenant_id, week, request_id)
        return await _admit_degraded(
            account=account,
            request_id=request_id,
            tokens=tokens,
            nanos=nanos,
            now=now,
            exc=exc,
            max_tokens=max_tokens,
            completions=completions,
        )
    except asyncio.CancelledError:
        _release_soon(account.tenant_id, week, request_id)  # the client left mid-admission
        raise

    outcome = result[0].decode()
    if outcome != "seed" and int(result[-1]):
        _drainer.note(account.tenant_id)  # it billed expired requests as lost: store them
    if outcome == "ok":
        used, held, in_window = int(result[1]), int(result[2]), int(result[3])
        admission.headers = _headers(account, week, now, used, held, in_window)
        _heartbeat().add(admission)
        return admission
    if outcome in ("tokens", "cost"):
        # The week's usage and what requests in flight hold: tokens, or nanos for cost (the
        # token headers are left out then).
        used, held = int(result[1]), int(result[2])
        if outcome == "tokens":
            headers = _headers(account, week, now, used, held, int(result[3]))
            left = (limits.weekly_token_cap or 0) - used - held
        else:
            headers = _headers(account, week, now, None, 0, int(result[3]))
            left = cap_nanos - used - held
        metrics.refused(_REASONS[outcome])
        raise _quota_refusal(
            outcome,
            week.seconds_left(now),
            headers,
            left=left,
            asked=tokens if outcome == "tokens" else nanos,
            max_tokens=max_tokens,
            completions=completions,
        )
    headers = _headers(account, week, now, None, 0, int(result[2]))
    metrics.refused(_REASONS.get(outcome, outcome))
    raise _refusal(outcome, math.ceil(int(result[1]) / 1000), headers)


_releases: set[asyncio.Task[None]] = set()


def _release_soon(tenant_id: int, week: Week, request_id: str) -> None:
    """Settle a request that will never be forwarded: nothing billed, no ledger entry, its
    reservation and lease freed (a no-op if admission never ran)."""

    async def release() -> None:
        call = counters.settle_call(
            tenant_id=tenant_id,
            week_id=week.id,
            request_id=request_id,
            tokens=0,
            nanos=0,
            record_json="",
            now_ms=int(time.time() * 1000),
        )
        # Until it succeeds, for as long as the pending record it may have stored could be
        # swept: once that lease runs out, a sweep would bill the request as lost although
        # nothing reached a provider. (A Redis outage longer than the retries still can.)
        deadline = time.monotonic() + settings.PROXY_RESERVATION_TTL
        while True:
            try:
                await counters.async_scripts(counters.async_client()).settle(**call)
                return
            except _UNREACHABLE:
                if time.monotonic() > deadline:
                    logger.error("%s: could not release its reservation", request_id)
                    return
                await asyncio.sleep(1)

    task = asyncio.get_running_loop().create_task(release())
    _releases.add(task)
    task.add_done_callback(_releases.discard)


def _seed(tenant_id: int, week: Week) -> None:
    client = counters.sync_client()
    if client.hget(counters.keys_for(tenant_id, week.id).week, "seeded") == b"1":
        return  # another process got there first
    # Another process may hold the tenant's lock for a while under a burst: wait for it
    # rather than refuse (a busy lock is not an unreachable Redis).
    seed_week(client, tenant_id=tenant_id, week=week, lock_wait=10.0)


_seeds: SingleFlight[tuple[int, str], None] = SingleFlight()


async def _admit_degraded(
    *,
    account: Account,
    request_id: str,
    tokens: int,
    nanos: int,
    now: datetime,
    exc: BaseException,
    max_tokens: int | None = None,
    completions: int = 1,
) -> Admission:
    limits = account.limits
    if not limits.rate_limits_fail_open:
        logger.error("counter store unreachable (%s): refusing %s", type(exc).__name__, request_id)
        metrics.refused("limits_unavailable")
        raise ProxyError(
            503,
            "Usage limits cannot be checked right now; nothing was sent to the provider. "
            "Retry shortly.",
            code="limits_unavailable",
            type="service_unavailable",
            headers={"Retry-After": "1"},
        )
    logger.error(
        "counter store unreachable (%s): FAIL-OPEN admission of %s for tenant %s without "
        "rate limits; caps checked against the database ledger",
        type(exc).__name__,
        request_id,
        account.slug,
    )
    week = week_of(now)
    used_tokens, used_nanos = await database_sync_to_async(week_usage)(
        tenant_id=account.tenant_id, week=week, include_uncounted=True
    )
    cap_tokens, cap_cost = limits.weekly_token_cap, limits.weekly_cost_cap_usd
    over: tuple[str, int, int] | None = None  # (kind, left, asked)
    if cap_tokens is not None and used_tokens + tokens > cap_tokens:
        over = ("tokens", cap_tokens - used_tokens, tokens)
    elif cap_cost is not None and used_nanos + nanos > to_nanos(cap_cost):
        over = ("cost", to_nanos(cap_cost) - used_nanos, nanos)
    if over is not None:
        kind, left, asked = over
        metrics.refused(_REASONS[kind])
        raise _quota_refusal(
            kind,
            week.seconds_left(now),
            {},
            left=left,
            asked=asked,
            max_tokens=max_tokens,
            completions=completions,
        )
    return Admission(
        request_id=request_id,
        tenant_id=account.tenant_id,
        week=week,
        reserved=False,
        limits=account.limits,
    )


def _lease_ms() -> int:
    return int(settings.PROXY_LEASE_TTL * 1000)


def _bounded(value: Any, most: int) -> int:
    # The counts may be the provider's, unvalidated (a float, negative, 10^20): a lost bill
    # is never negative nor more than the reservation.
    try:
        return max(0, min(int(value), most))
    except (TypeError, ValueError, OverflowError):
        return 0


def _lost_bill(admission: Admission) -> Bill:
    """What a request whose worker died is billed: the lost-request policy.

    Its prompt estimate as input (or the provider's prompt count, where it gave one before
    the worker died), the output it had produced at its last heartbeat (the provider's
    count if reported, else one token per content delta, as for a stream cut short), never
    more tokens in all than its reservation; priced at its first candidate route, with
    ``usage_reported`` false and HTTP status 0 (nobody knows how the exchange ended).
    """
    assert admission.pending is not None
    bill = admission.pending
    tokens = bill.tokens
    if admission.progress is not None:
        try:
            seen = admission.progress()
        except Exception:
            logger.exception("%s: its progress could not be read", admission.request_id)
        else:
            most = admission.reserved_tokens
            prompt = _bounded(seen.input or tokens.input, most)
            output = _bounded(seen.output, most - prompt)
            # The kinds within those counts, as far as they fit: a cache write is priced
            # apart (dearer than plain input at Anthropic), so it must not be lost here.
            read = _bounded(seen.cache_read, prompt)
            tokens = Tokens(
                input=prompt,
                output=output,
                cache_read=read,
                cache_write=_bounded(seen.cache_write, prompt - read),
                reasoning=_bounded(seen.reasoning, output),
            )
    latency_ms = int((time.monotonic() - admission.admitted_at) * 1000)
    return replace(bill, tokens=tokens, latency_ms=latency_ms)


def _pending_value(bill: Bill) -> str:
    return counters.pending_value(
        tokens=bill.tokens.total,
        nanos=bill.cost_nanos,
        week_id=bill.week,
        record_json=record_to_json(bill.record()),
    )


class _Heartbeat:
    """Keeps the leases of this event loop's live admissions, and their pending records.

    One task for all of them (a task or timer per request would cost CPU under load): every
    PROXY_LEASE_TTL / 3 it renews each live admission's lease and reservation and rewrites
    its pending record from its progress, one HEARTBEAT call per tenant. An admission leaves
    at its settlement, when Redis says its lease already ran out, or after
    PROXY_RESERVATION_TTL (a leaked admission must not hold its tenant's allowance for ever).
    """

    def __init__(self) -> None:
        self.live: dict[int, dict[str, Admission]] = {}
        self.task: asyncio.Task[None] | None = None

    def add(self, admission: Admission) -> None:
        self.live.setdefault(admission.tenant_id, {})[admission.request_id] = admission
        if self.task is None or self.task.done():
            # A fresh context: it outlives the request that started it, whose request id
            # (core/logs.py) and audit actor must not label its lines.
            self.task = asyncio.get_running_loop().create_task(
                self._run(), name="usage-lease-heartbeat", context=contextvars.Context()
            )

    def forget(self, admission: Admission) -> None:
        admissions = self.live.get(admission.tenant_id)
        if admissions is not None:
            admissions.pop(admission.request_id, None)
            if not admissions:
                del self.live[admission.tenant_id]

    async def _run(self) -> None:
        while self.live:
            await asyncio.sleep(settings.PROXY_LEASE_TTL / 3)
            try:
                await self.beat()
            except Exception:
                logger.exception("renewing the leases failed; will retry")

    async def beat(self) -> None:
        """Renew every live admission once (the loop calls this; so may a test)."""
        now_ms = int(time.time() * 1000)
        oldest = time.monotonic() - settings.PROXY_RESERVATION_TTL
        scripts = counters.async_scripts(counters.async_client())
        for tenant_id, admissions in list(self.live.items()):
            renewals = []
            for admission in list(admissions.values()):
                if admission.admitted_at < oldest:
                    logger.warning(
                        "%s has held its reservation for PROXY_RESERVATION_TTL (%s s): no "
                        "longer renewed; unless it settles first it will be billed as lost",
                        admission.request_id,
                        settings.PROXY_RESERVATION_TTL,
                    )
                    self.forget(admission)
                    continue
                value = "" if admission.pending is None else _pending_value(_lost_bill(admission))
                renewals.append((admission.request_id, value))
            if not renewals:
                continue
            call = counters.heartbeat_call(
                tenant_id=tenant_id, now_ms=now_ms, lease_ms=_lease_ms(), renewals=renewals
            )
            try:
                gone = await scripts.heartbeat(**call)
            except _UNREACHABLE as exc:
                logger.error("counter store unreachable (%r): leases not renewed", exc)
                return
            for request_id in gone:
                rid = request_id.decode() if isinstance(request_id, bytes) else request_id
                lapsed = admissions.get(rid)
                if lapsed is not None:
                    logger.warning("%s: its lease ran out before this heartbeat", rid)
                    self.forget(lapsed)


_heartbeats: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Heartbeat] = (
    weakref.WeakKeyDictionary()
)


def _heartbeat() -> _Heartbeat:
    """The running event loop's heartbeat (a process has one loop; tests have many)."""
    loop = asyncio.get_running_loop()
    heartbeat = _heartbeats.get(loop)
    if heartbeat is None:
        heartbeat = _heartbeats[loop] = _Heartbeat()
    return heartbeat


async def asettle(admission: Admission, bill: Bill) -> None:
    """Release the reservation and bill the actual usage, once; never raises for Redis.

    A request whose lease ran out before this (its worker froze, or lost Redis, for longer
    than PROXY_LEASE_TTL) has been billed as lost already: this settles nothing then, and
    the lost bill stands (logged).
    """
    if admission.reserved:
        _heartbeat().forget(admission)
    record = bill.record()
    call = counters.settle_call(
        tenant_id=admission.tenant_id,
        week_id=admission.week.id,
        request_id=admission.request_id,
        tokens=bill.tokens.total,
        nanos=bill.cost_nanos,
        record_json=record_to_json(record),
        now_ms=int(time.time() * 1000),
    )
    try:
        settled = await counters.async_scripts(counters.async_client()).settle(**call)
    except _UNREACHABLE as exc:
        logger.error(
            "counter store unreachable (%r) at settlement of %s: writing the ledger row "
            "directly; it joins the counters when Redis is back",
            exc,
            admission.request_id,
            exc_info=True,
        )
        await _write_direct(record)
        await _announce(bill, settled=True, limits=admission.limits)
        return
    if not settled and admission.pending is not None:
        logger.warning(
            "%s settled after its lease ran out: it stays billed as lost (%d tokens "
            "reported now are not billed)",
            admission.request_id,
            bill.tokens.total,
        )
    _drainer.note(admission.tenant_id)
    await _announce(bill, settled=bool(settled), limits=admission.limits)


async def _announce(bill: Bill, *, settled: bool, limits: Limits | None) -> None:
    # send_robust's async twin: a receiver's failure must not become the request's.
    sent = await bill_settled.asend_robust(None, bill=bill, settled=settled, limits=limits)
    for receiver, result in sent:
        if isinstance(result, Exception):
            logger.error(
                "%s: a bill_settled receiver (%r) failed",
                bill.request_id,
                receiver,
                exc_info=result,
            )


async def _write_direct(record: dict[str, Any]) -> None:
    from django.db import IntegrityError

    from usage.ledger import record_row

    row = record_row(record)
    row.counted = False
    try:
        await database_sync_to_async(row.save, thread_sensitive=False)(force_insert=True)
    except IntegrityError:
        logger.warning("usage for %s was already recorded", record["request_id"])


class _Drainer:
    """Moves this process's settled usage into the database, off the response path.

    Every proxy process runs one (PROXY_LEDGER_WORKER); `manage.py usage_worker` is the
    same loop as a process of its own. Each pass first sweeps the tenants it drains (their
    expired requests are billed as lost); a full scan every 30 s sweeps and drains every
    tenant, which picks up what crashed or stopped processes left behind, and rows written
    while Redis was down.
    """

    def __init__(self) -> None:
        self.pending: set[int] = set()
        self.tasks: dict[asyncio.AbstractEventLoop, asyncio.Task[None]] = {}

    def note(self, tenant_id: int) -> None:
        self.pending.add(tenant_id)
        self.start()

    def start(self) -> None:
        if not settings.PROXY_LEDGER_WORKER:
            return
        loop = asyncio.get_running_loop()
        task = self.tasks.get(loop)
        if task is None or task.done():
            # A fresh context: it outlives the request that started it (see the heartbeat).
            self.tasks[loop] = loop.create_task(
                self._run(), name="usage-ledger-drainer", context=contextvars.Context()
            )

    async def _run(self) -> None:
        last_scan = 0.0
        while True:
            await asyncio.sleep(settings.PROXY_LEDGER_DRAIN_INTERVAL)
            full = time.monotonic() - last_scan > 30
            tenants, self.pending = self.pending, set()
            try:
                await database_sync_to_async(_drain_once, thread_sensitive=False)(tenants, full)
                if full:
                    last_scan = time.monotonic()
            except Exception:
                logger.exception("draining the usage ledger failed; will retry")
                self.pending |= tenants


def _drain_once(tenants: set[int], full: bool) -> None:
    client = counters.sync_client()
    for tenant_id in tenants:
        sweep_tenant(client, tenant_id)
        try:
            drain_tenant(client, tenant_id)
        except LockBusy:
            continue  # another process holds it: it is draining this tenant right now
    if full:
        sweep_all(client)
        drain_all(client)
        reconcile(client)


_drainer = _Drainer()


def start_ledger_drain() -> None:
    """Start this event loop's ledger drainer now rather than at its first settlement: its
    first pass scans every tenant, so what a stopped process left in the ledger streams is
    stored (and /readyz's ledger check passes) before any traffic comes."""
    _drainer.start()
