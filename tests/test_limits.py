"""Admission and settlement against the counter store (real Redis, or the embedded one).

These drive usage.limits directly with an injected clock, so week boundaries and minute
windows are exact. Both stores run them: `make test` with Redis, and the zero-setup pass
with the embedded store (they are `core`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import redis
from asgiref.sync import sync_to_async
from django.test import override_settings

from core.errors import ProxyError
from routing.context import TenantContext, load_context
from routing.services import provider_create, provider_key_create, route_create
from tenants.models import Tenant
from tenants.services import tenant_create, tier_create
from usage import counters, limits
from usage.bill import NANOS, Bill, Price, Tokens
from usage.ledger import drain_all, reconcile
from usage.models import UsageRecord
from usage.weeks import week_of

pytestmark = [pytest.mark.core, pytest.mark.django_db(transaction=True)]

# A Wednesday noon, well inside an ISO week.
NOON = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def empty_store() -> Iterator[None]:
    counters.sync_client().flushdb()
    # The tests move the ledger themselves (drain_all), at the moments they choose.
    with override_settings(PROXY_LEDGER_WORKER=False):
        yield


def make_tenant(**tier_fields: Any) -> Tenant:
    tier = tier_create(slug=f"tier-{time.monotonic_ns()}", name="T", **tier_fields)
    provider = provider_create(
        slug=f"p-{time.monotonic_ns()}", kind="openai", base_url="https://x.test/v1"
    )
    provider_key_create(provider=provider, label="k", secret="sk-test-0000")
    route_create(
        tier=tier,
        model="auto",
        provider=provider,
        upstream_model="m",
        input_usd_per_mtok=Decimal("1000"),  # $0.001 a token: costs are easy to read
        output_usd_per_mtok=Decimal("2000"),
    )
    return tenant_create(slug=f"t-{time.monotonic_ns()}", name="T", tier=tier)


async def context_of(tenant: Tenant) -> TenantContext:
    context = await sync_to_async(load_context)(tenant.slug)
    assert context is not None
    return context


async def admit(
    context: TenantContext, rid: str, *, tokens: int = 40, nanos: int = 0, now: datetime = NOON
) -> limits.Admission:
    return await limits.aadmit(account=context, request_id=rid, tokens=tokens, nanos=nanos, now=now)


async def settle(
    context: TenantContext, admission: limits.Admission, tokens: int, nanos: int = 0
) -> None:
    route = context.routes["auto"][0]
    bill = Bill(
        request_id=admission.request_id,
        tenant_id=context.tenant_id,
        tier_id=context.tier_id,
        route_id=route.id,
        provider_key_id=route.provider.keys[0].id,
        model="auto",
        provider_slug="p",
        upstream_model="m",
        stream=False,
        tokens=Tokens(input=tokens // 2, output=tokens - tokens // 2, reported=True),
        # Priced so that the bill costs exactly `nanos`: the input side carries it all.
        price=Price(nanos_per_mtok(nanos, tokens // 2), Decimal(0)),
        status="ok",
        http_status=200,
        attempts=1,
        latency_ms=5,
        created_at=NOON,
        week=admission.week.id,
    )
    await limits.asettle(admission, bill)


def nanos_per_mtok(nanos: int, tokens: int) -> Decimal:
    if nanos == 0:
        return Decimal(0)
    return Decimal(nanos) / NANOS / tokens * 1_000_000


def used(tenant_id: int, now: datetime = NOON) -> tuple[int, int]:
    client = counters.sync_client()
    keys = counters.keys_for(tenant_id, week_of(now).id)
    tokens = client.hget(keys.week, "used_tokens")
    held = client.hget(keys.resv_tot, "tokens")
    return int(tokens or 0), int(held or 0)


async def refused(coro: Any) -> ProxyError:
    with pytest.raises(ProxyError) as caught:
        await coro
    return caught.value


async def test_it_admits_until_the_reservations_reach_the_cap() -> None:
    tenant = await sync_to_async(make_tenant)(weekly_token_cap=100, requests_per_minute=0)
    context = await context_of(tenant)
    first = await admit(context, "r1")
    await admit(context, "r2")
    error = await refused(admit(context, "r3"))
    assert error.status == 429 and error.code == "insufficient_quota"
    week = week_of(NOON)
    assert error.headers["Retry-After"] == str(week.seconds_left(NOON))
    assert error.headers["x-ratelimit-reset-tokens"] == f"{week.seconds_left(NOON)}s"
    assert error.headers["x-ratelimit-remaining-tokens"] == "20"
    # Settling frees the unused part of the reservation: 10 used + 40 held + 40 <= 100.
    await settle(context, first, tokens=10)
    third = await admit(context, "r3")
    assert third.headers["x-ratelimit-remaining-tokens"] == str(100 - 10 - 80)
    assert used(context.tenant_id) == (10, 80)


async def test_it_refuses_over_the_cost_cap() -> None:
    tenant = await sync_to_async(make_tenant)(
        weekly_cost_cap_usd=Decimal("0.05"), requests_per_minute=0
    )
    context = await context_of(tenant)
    await admit(context, "r1", tokens=1, nanos=30_000_000)
    error = await refused(admit(context, "r2", tokens=1, nanos=30_000_000))
    assert error.code == "insufficient_quota" and "cost" in error.message


async def test_it_charges_a_second_settlement_nothing() -> None:
    tenant = await sync_to_async(make_tenant)(weekly_token_cap=1000, requests_per_minute=0)
    context = await context_of(tenant)
    admission = await admit(context, "r1")
    await settle(context, admission, tokens=12, nanos=34)
    await settle(context, admission, tokens=12, nanos=34)
    assert used(context.tenant_id) == (12, 0)
    keys = counters.keys_for(context.tenant_id, admission.week.id)
    assert counters.sync_client().xlen(keys.ledger) == 1
    await sync_to_async(drain_all)(counters.sync_client())
    assert await UsageRecord.objects.filter(request_id="r1").acount() == 1


async def test_it_heals_a_reservation_its_process_never_settled() -> None:
    tenant = await sync_to_async(make_tenant)(weekly_token_cap=50, requests_per_minute=0)
    context = await context_of(tenant)
    with override_settings(PROXY_LEASE_TTL=60):
        await admit(context, "crashed")  # its process died: no settle ever comes
        error = await refused(admit(context, "r2", now=NOON + timedelta(seconds=59)))
        assert error.code == "insufficient_quota"
        # Past the lease's TTL (no heartbeat renewed it) the held tokens are released.
        await admit(context, "r2", now=NOON + timedelta(seconds=61))
    assert used(context.tenant_id) == (0, 40)


async def test_it_limits_requests_per_minute_over_a_sliding_window() -> None:
    tenant = await sync_to_async(make_tenant)(requests_per_minute=3, max_concurrent_requests=0)
    context = await context_of(tenant)
    await admit(context, "a", tokens=1, now=NOON)
    await admit(context, "b", tokens=1, now=NOON + timedelta(seconds=30))
    ok = await admit(context, "c", tokens=1, now=NOON + timedelta(seconds=30))
    assert ok.headers["x-ratelimit-remaining-requests"] == "0"
    error = await refused(admit(context, "d", tokens=1, now=NOON + timedelta(seconds=45)))
    assert error.code == "rate_limit_exceeded" and error.headers["Retry-After"] == "15"
    # At 61 s only the first request has left the window: one more, not a fresh burst of 3.
    await admit(context, "d", tokens=1, now=NOON + timedelta(seconds=61))
    error = await refused(admit(context, "e", tokens=1, now=NOON + timedelta(seconds=62)))
    assert error.headers["Retry-After"] == "28"
    await admit(context, "e", tokens=1, now=NOON + timedelta(seconds=90.5))


async def test_it_limits_concurrent_requests_until_one_settles() -> None:
    tenant = await sync_to_async(make_tenant)(requests_per_minute=0, max_concurrent_requests=2)
    context = await context_of(tenant)
    first = await admit(context, "a", tokens=1)
    await admit(context, "b", tokens=1)
    error = await refused(admit(context, "c", tokens=1))
    assert error.code == "rate_limit_exceeded" and "concurrent" in error.message
    await settle(context, first, tokens=1)
    await admit(context, "c", tokens=1)


async def test_it_resets_exactly_at_the_week_boundary() -> None:
    tenant = await sync_to_async(make_tenant)(weekly_token_cap=100, requests_per_minute=0)
    context = await context_of(tenant)
    week = week_of(NOON)
    last_second = week.end - timedelta(seconds=1)
    admission = await admit(context, "r1", tokens=90, now=last_second - timedelta(seconds=5))
    await settle(context, admission, tokens=90)
    error = await refused(admit(context, "r2", tokens=20, now=last_second))
    assert error.headers["Retry-After"] == "1"
    assert error.headers["x-ratelimit-reset-tokens"] == "1s"
    # The next week starts from zero, to the second.
    fresh = await admit(context, "r2", tokens=20, now=week.end)
    assert fresh.week.id == week.next().id
    assert fresh.headers["x-ratelimit-remaining-tokens"] == "80"
    assert fresh.headers["x-ratelimit-reset-tokens"] == f"{7 * 86400}s"


async def test_it_rebuilds_lost_counters_from_the_ledger() -> None:
    tenant = await sync_to_async(make_tenant)(weekly_token_cap=100, requests_per_minute=0)
    context = await context_of(tenant)
    for rid in ("a", "b", "c"):
        admission = await admit(context, rid, tokens=20)
        await settle(context, admission, tokens=20, nanos=7)
    await sync_to_async(drain_all)(counters.sync_client())  # two of them in the database...
    admission = await admit(context, "d", tokens=20)
    await settle(context, admission, tokens=20, nanos=7)  # ...and one still in Redis
    client = counters.sync_client()
    client.delete(counters.keys_for(context.tenant_id, week_of(NOON).id).week)  # evicted
    await admit(context, "e", tokens=20)
    assert used(context.tenant_id) == (80, 20)
    # 80 used + 20 held: the cap holds.
    error = await refused(admit(context, "f", tokens=1))
    assert error.code == "insufficient_quota"
    client.flushdb()  # everything gone, the stream too: the database still knows
    await sync_to_async(drain_all)(client)
    await admit(context, "g", tokens=20)
    assert (
        used(context.tenant_id)[0]
        == await UsageRecord.objects.filter(tenant_id=context.tenant_id).acount() * 20
    )


class Unreachable:
    """A Redis client whose every call fails as a stopped server's would."""

    def register_script(self, script: str) -> Any:
        async def run(*args: Any, **kwargs: Any) -> Any:
            raise redis.ConnectionError("Connection refused")

        return run


async def test_it_fails_closed_when_redis_is_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    tenant = await sync_to_async(make_tenant)(weekly_token_cap=100)
    context = await context_of(tenant)
    monkeypatch.setattr(counters, "async_client", Unreachable)
    error = await refused(admit(context, "r1"))
    assert error.status == 503 and error.headers["Retry-After"] == "1"


async def test_it_fails_open_for_a_tier_that_chose_it(monkeypatch: pytest.MonkeyPatch) -> None:
    tenant = await sync_to_async(make_tenant)(weekly_token_cap=100, rate_limits_fail_open=True)
    context = await context_of(tenant)
    monkeypatch.setattr(counters, "async_client", Unreachable)
    admission = await admit(context, "r1", tokens=60)
    assert not admission.reserved
    await settle(context, admission, tokens=70)  # written straight to the database
    row = await UsageRecord.objects.aget(request_id="r1")
    assert not row.counted
    # Caps still hold, against the database ledger.
    error = await refused(admit(context, "r2", tokens=40))
    assert error.code == "insufficient_quota"
    monkeypatch.undo()
    # Redis is back: the row joins the counters once.
    await admit(context, "r3", tokens=1)
    assert await sync_to_async(reconcile)(counters.sync_client()) == 1
    assert await sync_to_async(reconcile)(counters.sync_client()) == 0
    assert used(context.tenant_id) == (70, 1)


async def test_it_reserves_once_when_admission_is_sent_twice() -> None:
    # redis-py re-sends a command whose answer timed out: the script must not reserve twice.
    tenant = await sync_to_async(make_tenant)(weekly_token_cap=1000, requests_per_minute=0)
    context = await context_of(tenant)
    admission = await admit(context, "r1", tokens=40)
    await admit(context, "r1", tokens=40)
    assert used(context.tenant_id) == (0, 40)
    await settle(context, admission, tokens=10)
    assert used(context.tenant_id) == (10, 0)


def test_it_reserves_every_answer_of_a_request_for_several() -> None:
    free = [Price(Decimal(0), Decimal(0))]
    one, _ = limits.estimate(prices=free, body_bytes=300, max_tokens=100)
    many, _ = limits.estimate(prices=free, body_bytes=300, max_tokens=100, completions=16)
    assert many - one == 15 * 100
