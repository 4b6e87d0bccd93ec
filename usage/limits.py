"""Admission and settlement on the hot path: weekly caps, rate limits, reservations.

Before a request is forwarded, :func:`aadmit` runs one Lua script that checks concurrency,
requests per minute and both weekly caps and, if all pass, reserves the request's worst
case: its estimated prompt plus its completion allowance, in tokens and in cost. When the
answer is over (completed, failed, or the client gone), :func:`asettle` releases the
reservation and adds the actual usage, once per request id, in the same atomic step that
appends the ledger entry. Since a reservation is an upper bound of what the request can
use, the week's usage never exceeds a cap.

Redis unreachable: caps fail closed (503 at once, nothing forwarded) unless the tier chose
fail-open, which serves without rate limits and checks caps against the database ledger.
A settlement that cannot reach Redis is written straight to the database.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any

import redis
from channels.db import database_sync_to_async
from django.conf import settings

from core.errors import ProxyError
from core.singleflight import SingleFlight
from tenants.limits import Account
from usage import counters
from usage.bill import NANOS, Bill, Price, to_nanos
from usage.ledger import (
    LockBusy,
    drain_all,
    drain_tenant,
    reconcile,
    record_to_json,
    seed_week,
    week_usage,
)
from usage.weeks import Week, week_of

logger = logging.getLogger(__name__)

_WINDOW_MS = 60_000
_UNREACHABLE = (redis.RedisError, OSError, LockBusy)


@dataclass
class Admission:
    request_id: str
    tenant_id: int
    week: Week
    headers: dict[str, str] = field(default_factory=dict)
    # False when admitted while Redis was unreachable (fail-open): nothing is reserved.
    reserved: bool = True


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


def estimate(
    *, prices: Sequence[Price], body_bytes: int, max_tokens: int, completions: int = 1
) -> tuple[int, int]:
    """The worst case to reserve: (tokens, nano-dollars).

    ``completions`` answers (OpenAI's ``n``) of up to ``max_tokens`` each, priced at the
    dearest route the request may fail over to: it is reserved once, before anyone knows
    which route will answer.
    """
    prompt = math.ceil(body_bytes / settings.PROXY_PROMPT_BYTES_PER_TOKEN)
    output = max_tokens * completions
    cost = max(price.cost(input_tokens=prompt, output_tokens=output) for price in prices)
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
) -> Admission:
    """Admit and reserve, or raise ProxyError (429 over a limit, 503 store unreachable).

    ``tokens`` and ``nanos`` are the request's worst case (:func:`estimate`); given the
    ``max_tokens`` and ``completions`` it was estimated with, a refusal over a weekly cap
    names the largest max_tokens that would fit.
    """
    limits = account.limits
    week = week_of(now)
    keys = counters.keys_for(account.tenant_id, week.id)
    cap_nanos = -1 if limits.weekly_cost_cap_usd is None else to_nanos(limits.weekly_cost_cap_usd)
    ttl_ms = settings.PROXY_RESERVATION_TTL * 1000
    args = [
        int(now.timestamp() * 1000),
        request_id,
        tokens,
        nanos,
        -1 if limits.weekly_token_cap is None else limits.weekly_token_cap,
        cap_nanos,
        limits.requests_per_minute,
        limits.max_concurrent_requests,
        ttl_ms,
        ttl_ms,
        _WINDOW_MS,
        "1",
    ]
    script_keys = [keys.week, keys.resv, keys.resv_amt, keys.resv_tot, keys.inflight, keys.rpm]
    try:
        scripts = counters.async_scripts(counters.async_client())
        result = await scripts.admit(keys=script_keys, args=args)
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
            result = await scripts.admit(keys=script_keys, args=args)
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
    if outcome == "ok":
        used, held, in_window = int(result[1]), int(result[2]), int(result[3])
        return Admission(
            request_id=request_id,
            tenant_id=account.tenant_id,
            week=week,
            headers=_headers(account, week, now, used, held, in_window),
        )
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
        for _ in range(5):
            try:
                await counters.async_scripts(counters.async_client()).settle(**call)
                return
            except _UNREACHABLE:
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
        raise _quota_refusal(
            kind,
            week.seconds_left(now),
            {},
            left=left,
            asked=asked,
            max_tokens=max_tokens,
            completions=completions,
        )
    return Admission(request_id=request_id, tenant_id=account.tenant_id, week=week, reserved=False)


async def asettle(admission: Admission, bill: Bill) -> None:
    """Release the reservation and bill the actual usage, once; never raises for Redis."""
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
        await counters.async_scripts(counters.async_client()).settle(**call)
    except _UNREACHABLE as exc:
        logger.error(
            "counter store unreachable (%r) at settlement of %s: writing the ledger row "
            "directly; it joins the counters when Redis is back",
            exc,
            admission.request_id,
            exc_info=True,
        )
        await _write_direct(record)
        return
    _drainer.note(admission.tenant_id)


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
    same loop as a process of its own. A full scan now and then picks up what crashed or
    stopped processes left behind, and rows written while Redis was down.
    """

    def __init__(self) -> None:
        self.pending: set[int] = set()
        self.tasks: dict[asyncio.AbstractEventLoop, asyncio.Task[None]] = {}

    def note(self, tenant_id: int) -> None:
        self.pending.add(tenant_id)
        if not settings.PROXY_LEDGER_WORKER:
            return
        loop = asyncio.get_running_loop()
        task = self.tasks.get(loop)
        if task is None or task.done():
            self.tasks[loop] = loop.create_task(self._run(), name="usage-ledger-drainer")

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
        try:
            drain_tenant(client, tenant_id)
        except LockBusy:
            continue  # another process holds it: it is draining this tenant right now
    if full:
        drain_all(client)
        reconcile(client)


_drainer = _Drainer()
