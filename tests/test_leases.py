"""Short leases renewed by a heartbeat, and the ledger rows of requests whose worker died.

The first tests drive usage.limits directly, on both counter stores (`core`); the last one
kills a live Daphne worker with SIGKILL in the middle of its streams.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.test import override_settings
from django.utils import timezone

from core.errors import ProxyError
from routing.context import TenantContext
from routing.services import route_create
from tenants.services import tenant_create, tier_create
from tests.conftest import JwtKeys, LiveProxy, World, eventually, start_proxy, stop_proxy, unique
from tests.support.mockserver import MockServer
from tests.test_caps_live import counter
from tests.test_limits import Unreachable, context_of, make_tenant, used
from usage import counters, limits
from usage.bill import Bill, Tokens
from usage.ledger import _record_of, drain_all, reconcile, record_row, record_to_json, sweep_tenant
from usage.models import UsageRecord
from usage.weeks import week_of

LOST = UsageRecord.Status.LOST
PROMPT = 30  # the prompt estimate of the requests below; each reserves PROMPT + 10 tokens

needs_redis = pytest.mark.skipif(not settings.REDIS_URL, reason="needs a Redis shared by processes")


@pytest.fixture
def empty_store() -> Iterator[None]:
    counters.sync_client().flushdb()
    # The tests move the ledger themselves, at the moments they choose.
    with override_settings(PROXY_LEDGER_WORKER=False):
        yield


def bill(context: TenantContext, rid: str, *, status: str = LOST, output: int = 0) -> Bill:
    """A bill of ``rid``; by default the pending (lost) one the pipeline stores at admission."""
    route = context.routes["auto"][0]
    now = timezone.now()
    return Bill(
        request_id=rid,
        tenant_id=context.tenant_id,
        tier_id=context.tier_id,
        route_id=route.id,
        provider_key_id=route.provider.keys[0].id,
        model="auto",
        provider_slug=route.provider.slug,
        upstream_model="m",
        stream=True,
        tokens=Tokens(input=PROMPT, output=output, reported=status != LOST),
        price=route.price,  # $0.001 an input token, $0.002 an output token
        status=status,
        http_status=0 if status == LOST else 200,
        attempts=1,
        latency_ms=0,
        created_at=now,
        week=week_of(now).id,
    )


async def admit(context: TenantContext, rid: str) -> limits.Admission:
    return await limits.aadmit(
        account=context,
        request_id=rid,
        tokens=PROMPT + 10,
        nanos=0,
        now=timezone.now(),
        pending=bill(context, rid),
    )


def lease_run_out() -> int:
    """A moment (ms) when every lease taken now has run out, unrenewed."""
    return int((time.time() + settings.PROXY_LEASE_TTL + 1) * 1000)


def in_flight(tenant_id: int) -> int:
    return int(counters.sync_client().zcard(counters.keys_for(tenant_id, "-").inflight))


@pytest.mark.core
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("empty_store")
async def test_it_renews_live_leases_and_frees_a_dead_workers_within_the_lease_ttl() -> None:
    tenant = await sync_to_async(make_tenant)(requests_per_minute=0, max_concurrent_requests=2)
    context = await context_of(tenant)
    with override_settings(PROXY_LEASE_TTL=1.0):  # renewed every third of a second
        live = await admit(context, "live")
        dead = await admit(context, "dead")
        dead.progress = lambda: Tokens(output=5)  # it had streamed 5 tokens...
        await limits._heartbeat().beat()
        limits._heartbeat().forget(dead)  # ...when its worker died: nobody renews it now
        await asyncio.sleep(1.5)
        # The dead worker's lease is free; the live request's, 1.5 s old, is still held.
        third = await admit(context, "third")
        with pytest.raises(ProxyError) as caught:
            await admit(context, "fourth")
        assert caught.value.code == "rate_limit_exceeded"
        assert in_flight(context.tenant_id) == 2
        for admission in (live, third):
            await limits.asettle(admission, bill(context, admission.request_id, status="ok"))
    await sync_to_async(drain_all)(counters.sync_client())
    row = await UsageRecord.objects.aget(request_id="dead")
    # The lost-request policy: its prompt estimate and the output it had produced at its
    # last heartbeat, as the proxy counted it; no HTTP status.
    assert (row.status, row.input_tokens, row.output_tokens) == (LOST, PROMPT, 5)
    assert not row.usage_reported and row.http_status == 0
    assert row.cost_usd == Decimal("0.040")  # 30 x $0.001 + 5 x $0.002
    rows = [r async for r in UsageRecord.objects.filter(tenant_id=context.tenant_id)]
    assert len(rows) == 3  # every admitted request, none of the refused one
    assert used(context.tenant_id, timezone.now()) == (sum(r.total_tokens for r in rows), 0)


@pytest.mark.core
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("empty_store")
async def test_it_bills_a_slow_request_once_when_it_settles_after_it_was_billed_lost(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tenant = await sync_to_async(make_tenant)(weekly_token_cap=1000, requests_per_minute=0)
    context = await context_of(tenant)
    slow = await admit(context, "slow")
    limits._heartbeat().forget(slow)  # its worker froze for longer than its lease
    client = counters.sync_client()
    later = lease_run_out()
    assert await sync_to_async(sweep_tenant)(client, context.tenant_id, now_ms=later) == 1
    assert await sync_to_async(sweep_tenant)(client, context.tenant_id, now_ms=later) == 0
    assert used(context.tenant_id, timezone.now()) == (PROMPT, 0)
    # It wakes up and settles what it really used: that settles nothing, the lost bill stands.
    await limits.asettle(slow, bill(context, "slow", status="ok", output=8))
    assert "stays billed as lost" in caplog.text
    await sync_to_async(drain_all)(client)
    (row,) = [r async for r in UsageRecord.objects.filter(tenant_id=context.tenant_id)]
    assert (row.status, row.total_tokens) == (LOST, PROMPT)
    assert used(context.tenant_id, timezone.now()) == (PROMPT, 0)


@pytest.mark.core
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("empty_store")
async def test_it_keeps_the_real_bill_of_a_request_settled_while_redis_was_down(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tenant = await sync_to_async(make_tenant)(weekly_token_cap=1000, requests_per_minute=0)
    context = await context_of(tenant)
    admission = await admit(context, "r1")
    monkeypatch.setattr(counters, "async_client", Unreachable)
    await limits.asettle(admission, bill(context, "r1", status="ok", output=8))  # to the database
    monkeypatch.undo()
    # Redis is back after the lease ran out: the pending record is billed as lost too...
    client = counters.sync_client()
    assert await sync_to_async(sweep_tenant)(client, context.tenant_id, now_ms=lease_run_out())
    assert used(context.tenant_id, timezone.now()) == (PROMPT, 0)
    # ...but the ledger keeps the real bill, and the counter follows it, once.
    for _ in range(2):
        await sync_to_async(drain_all)(client)
        await sync_to_async(reconcile)(client)
    (row,) = [r async for r in UsageRecord.objects.filter(tenant_id=context.tenant_id)]
    assert (row.status, row.total_tokens, row.counted) == ("ok", PROMPT + 8, True)
    assert used(context.tenant_id, timezone.now()) == (PROMPT + 8, 0)


@pytest.mark.core
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("empty_store")
async def test_it_stores_ledger_records_with_or_without_the_usage_invalid_flag() -> None:
    tenant = await sync_to_async(make_tenant)()
    context = await context_of(tenant)
    flagged = bill(context, "flagged", status="ok").record() | {"usage_invalid": True}
    older = bill(context, "older", status="ok").record()
    older.pop("usage_invalid", None)  # as a proxy from before the flag wrote it
    client = counters.sync_client()
    stream = counters.keys_for(context.tenant_id, "-").ledger
    for record in (flagged, older):
        client.xadd(stream, {"w": record["week"], "t": 0, "n": 0, "r": record_to_json(record)})
    await sync_to_async(drain_all)(client)
    rows = {r.request_id: r async for r in UsageRecord.objects.filter(tenant=tenant)}
    assert (rows["flagged"].usage_invalid, rows["older"].usage_invalid) == (True, False)
    assert _record_of(record_row(flagged))["usage_invalid"] is True
    assert not client.xlen(counters.keys_for(context.tenant_id, "-").dead_letter)


# --- a live worker, killed ---------------------------------------------------------------


@needs_redis
def test_it_frees_a_killed_workers_leases_and_bills_each_of_its_streams(
    proxy: LiveProxy, world: World, mock: MockServer, jwt_keys: JwtKeys, tmp_path: Path
) -> None:
    streams = 12
    tier = tier_create(
        slug=unique("lease"),
        name="Lease",
        requests_per_minute=100_000,
        max_concurrent_requests=streams,
    )
    route_create(
        tier=tier,
        model="auto",
        provider=world.moonshot,
        upstream_model="kimi",
        input_usd_per_mtok=Decimal("1"),
        output_usd_per_mtok=Decimal("2"),
    )
    tenant = tenant_create(slug=unique("lease"), name="Lease", tier=tier)
    headers = {"Authorization": f"Bearer {world.token(tenant)}"}
    body = {"model": "auto", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
    mock.configure(chunks=400, chunk_delay=0.1)  # 40-second streams
    lease_ttl = 3.0
    worker = start_proxy(
        tmp_dir=tmp_path, jwt_keys=jwt_keys, extra_env={"PROXY_LEASE_TTL": str(lease_ttl)}
    )

    async def scenario() -> float:
        async with httpx.AsyncClient(timeout=30) as client:

            async def open_stream() -> tuple[httpx.Response, AsyncIterator[str]]:
                request = client.build_request(
                    "POST",
                    f"{worker.openai_base_url}/chat/completions",
                    json={**body, "max_tokens": 1000, "stream": True},
                    headers=headers,
                )
                response = await client.send(request, stream=True)
                assert response.status_code == 200
                lines = response.aiter_lines()
                while not (await anext(lines)).startswith("data: {"):
                    pass  # until the provider's first event: it reached the provider
                return response, lines  # the lines too: dropped, they would close the stream

            opened = await asyncio.gather(*(open_stream() for _ in range(streams)))
            await asyncio.sleep(1.5)  # a heartbeat (every second) stores the output so far
            # Every slot of the tenant is taken: another process refuses it.
            probe = await client.post(
                f"{proxy.openai_base_url}/chat/completions", json=body, headers=headers
            )
            assert probe.status_code == 429 and "concurrent" in probe.text
            worker.process.kill()
            worker.process.wait()
            killed = time.monotonic()
            mock.configure(chunks=8, chunk_delay=0)
            while True:
                probe = await client.post(
                    f"{proxy.openai_base_url}/chat/completions", json=body, headers=headers
                )
                if probe.status_code == 200:
                    freed_after = time.monotonic() - killed
                    break
                assert probe.status_code == 429 and "concurrent" in probe.text
                assert time.monotonic() - killed < lease_ttl + 5, "leases still held"
                await asyncio.sleep(0.1)
            for response, _ in opened:
                try:
                    await response.aclose()
                except httpx.HTTPError:
                    pass
            return freed_after

    try:
        freed_after = asyncio.run(scenario())
    finally:
        stop_proxy(worker)
    # Free within the lease's TTL of the kill (it was renewed last at most then), plus the
    # probe's own round trip.
    assert freed_after < lease_ttl + 1.0

    def landed() -> list[UsageRecord]:
        rows = list(UsageRecord.objects.filter(tenant=tenant))
        assert len(rows) == streams + 1
        return rows

    rows = eventually(landed, timeout=10)
    assert len(mock.requests()) == streams + 1  # every admitted request reached the provider
    lost = [row for row in rows if row.status == LOST]
    assert len(lost) == streams
    for row in lost:
        assert row.http_status == 0 and not row.usage_reported
        assert row.input_tokens > 0  # the prompt estimate
        assert 0 < row.output_tokens <= 1000  # what it had streamed at its last heartbeat
    assert counter(tenant) == (sum(row.total_tokens for row in rows), 0)
    assert in_flight(tenant.pk) == 0


@pytest.mark.core
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("empty_store")
async def test_it_keeps_an_impossible_ledger_record_aside_rather_than_losing_it() -> None:
    # SQLite's INSERT OR IGNORE skips a row failing a CHECK (negative tokens) as silently as
    # a duplicate: such a record must reach the dead-letter stream, never just vanish.
    tenant = await sync_to_async(make_tenant)()
    context = await context_of(tenant)
    good = bill(context, "good", status="ok").record()
    bad = bill(context, "negative", status="ok").record() | {"input_tokens": -5}
    client = counters.sync_client()
    keys = counters.keys_for(context.tenant_id, "-")
    for record in (good, bad):
        client.xadd(keys.ledger, {"w": record["week"], "t": 0, "n": 0, "r": record_to_json(record)})
    await sync_to_async(drain_all)(client)
    ids = {r.request_id async for r in UsageRecord.objects.filter(tenant=tenant)}
    assert ids == {"good"}
    assert client.xlen(keys.dead_letter) == 1
    assert not client.xlen(keys.ledger)
