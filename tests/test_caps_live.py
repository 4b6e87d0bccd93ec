"""Caps, rate limits and billing through live Daphne processes sharing one Redis."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from django.conf import settings

from routing.services import route_create
from tenants.models import Tenant
from tenants.services import tenant_create, tier_create, tier_update
from tests.conftest import (
    JwtKeys,
    LiveProxy,
    World,
    eventually,
    free_port,
    ledger_rows,
    start_proxy,
    stop_proxy,
    unique,
)
from tests.support.mockserver import MockServer
from usage import counters
from usage.models import UsageRecord
from usage.weeks import week_of

needs_redis = pytest.mark.skipif(not settings.REDIS_URL, reason="needs a Redis shared by processes")


def capped_tenant(world: World, **tier_fields: Any) -> Tenant:
    fields = {"requests_per_minute": 100_000, "max_concurrent_requests": 10_000, **tier_fields}
    tier = tier_create(slug=unique("capped"), name="Capped", **fields)
    for model, provider in (("auto", world.moonshot), ("claude", world.anthropic)):
        route_create(
            tier=tier,
            model=model,
            provider=provider,
            upstream_model=f"up-{model}",
            input_usd_per_mtok=Decimal("1"),
            output_usd_per_mtok=Decimal("2"),
        )
    return tenant_create(slug=unique("capped"), name="Capped", tier=tier)


def counter(tenant: Tenant) -> tuple[int, int]:
    """(used tokens, reserved tokens) in Redis for this week."""
    client = counters.sync_client()
    keys = counters.keys_for(tenant.pk, week_of(tenant.created_at).id)
    return int(client.hget(keys.week, "used_tokens") or 0), int(
        client.hget(keys.resv_tot, "tokens") or 0
    )


@needs_redis
def test_it_holds_the_cap_under_200_concurrent_streams_across_two_processes(
    proxy: LiveProxy, second_proxy: LiveProxy, world: World, mock: MockServer
) -> None:
    cap = 1600
    tenant = capped_tenant(world, weekly_token_cap=cap)
    token = world.token(tenant)
    mock.configure(chunks=8, chunk_delay=0.05)
    clients = [
        openai.AsyncOpenAI(base_url=p.openai_base_url, api_key=token, max_retries=0)
        for p in (proxy, second_proxy)
    ]

    async def one(index: int) -> tuple[str, int]:
        try:
            stream = await clients[index % 2].chat.completions.create(
                model="auto",
                messages=[{"role": "user", "content": "hi"}],
                max_tokens=8,
                stream=True,
                stream_options={"include_usage": True},
            )
            usage = 0
            async for chunk in stream:
                if chunk.usage is not None:
                    usage = chunk.usage.total_tokens
            return "ok", usage
        except openai.RateLimitError as error:
            assert error.code == "insufficient_quota"
            return "refused", 0

    async def all_of_them() -> list[tuple[str, int]]:
        return await asyncio.gather(*(one(i) for i in range(200)))

    outcomes = asyncio.run(all_of_them())
    admitted = [usage for kind, usage in outcomes if kind == "ok"]
    refused = [kind for kind, _ in outcomes if kind == "refused"]
    assert len(admitted) + len(refused) == 200
    # The stated bound: a reservation (prompt estimate + max_tokens, ~40 tokens here) is an
    # upper bound, so every admission fits the cap; at least cap / reservation get in, and
    # never more than the cap's worth of actual usage.
    assert len(admitted) >= cap // 64
    assert sum(admitted) <= cap
    assert len(refused) > 0

    rows = ledger_rows(tenant, len(admitted))
    mock_usage = sum(
        r["usage"]["input_tokens"] + r["usage"]["output_tokens"] for r in mock.requests()
    )
    ledger_usage = sum(r.total_tokens for r in rows)
    used, reserved = counter(tenant)
    assert ledger_usage == used == mock_usage == sum(admitted)
    assert used <= cap
    assert reserved == 0  # every reservation was settled


@needs_redis
def test_it_holds_rate_limits_across_processes(
    proxy: LiveProxy, second_proxy: LiveProxy, world: World, mock: MockServer
) -> None:
    tenant = capped_tenant(world, requests_per_minute=5, max_concurrent_requests=2)
    headers = {"Authorization": f"Bearer {world.token(tenant)}"}
    body = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
    statuses = []
    for index in range(8):
        target = (proxy, second_proxy)[index % 2]
        response = httpx.post(f"{target.url}/v1/chat/completions", json=body, headers=headers)
        statuses.append(response.status_code)
        if response.status_code == 429:
            assert response.json()["error"]["code"] == "rate_limit_exceeded"
            assert 0 < int(response.headers["Retry-After"]) <= 60
        else:
            assert response.headers["x-ratelimit-limit-requests"] == "5"
    assert statuses == [200] * 5 + [429] * 3

    # Concurrency: two slow streams, one in each process, leave no room for a third.
    slow = capped_tenant(world, max_concurrent_requests=2)
    headers = {"Authorization": f"Bearer {world.token(slow)}"}
    mock.configure(chunks=4, chunk_delay=0.5)
    stream_body = {**body, "stream": True}
    with (
        httpx.stream(
            "POST", f"{proxy.url}/v1/chat/completions", json=stream_body, headers=headers
        ) as a,
        httpx.stream(
            "POST", f"{second_proxy.url}/v1/chat/completions", json=stream_body, headers=headers
        ) as b,
    ):
        assert a.status_code == b.status_code == 200
        third = httpx.post(f"{proxy.url}/v1/chat/completions", json=body, headers=headers)
        assert third.status_code == 429 and "concurrent" in third.json()["error"]["message"]
        a.read()
        b.read()

    def slot_free() -> None:
        again = httpx.post(f"{second_proxy.url}/v1/chat/completions", json=body, headers=headers)
        assert again.status_code == 200

    eventually(slot_free)


@pytest.mark.core
@pytest.mark.parametrize("model", ["auto", "claude"])
def test_it_bills_a_client_that_disconnects_mid_stream_exactly(
    proxy: LiveProxy, world: World, mock: MockServer, model: str
) -> None:
    tenant = capped_tenant(world, weekly_token_cap=100_000)
    mock.configure(chunks=10, chunk_delay=0.3)
    client = openai.OpenAI(
        base_url=proxy.openai_base_url, api_key=world.token(tenant), max_retries=0
    )
    stream = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "tell me more"}], stream=True
    )
    pieces = 0
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            pieces += 1
            if pieces == 3:
                break
    stream.close()
    cut_at = time.time()

    def upstream_closed() -> dict[str, Any]:
        record = mock.requests()[-1]
        assert record["disconnected"]
        return record

    record = eventually(upstream_closed, timeout=3)
    assert record["disconnected_at"] - cut_at < 1.0
    assert record["chunks_sent"] == 3

    (row,) = ledger_rows(tenant, 1)
    assert row.status == UsageRecord.Status.CLIENT_DISCONNECTED
    assert row.output_tokens == record["usage"]["output_tokens"] == 3
    assert not row.usage_reported
    if model == "claude":  # Anthropic said the prompt's size up front
        assert row.input_tokens == record["usage"]["input_tokens"]
    else:
        assert row.input_tokens > 0  # the proxy's estimate
    if settings.REDIS_URL:
        assert counter(tenant) == (row.total_tokens, 0)


@pytest.mark.core
@pytest.mark.parametrize("model", ["auto", "claude"])
def test_it_releases_the_reservation_when_the_provider_fails_before_the_first_byte(
    proxy: LiveProxy, world: World, mock: MockServer, model: str
) -> None:
    tenant = capped_tenant(world, weekly_token_cap=100_000)
    mock.configure(faults=[{"action": {"type": "status", "status": 500}}])
    client = openai.OpenAI(
        base_url=proxy.openai_base_url, api_key=world.token(tenant), max_retries=0
    )
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
    assert caught.value.status_code == 502
    (row,) = ledger_rows(tenant, 1)
    assert (row.input_tokens, row.output_tokens, row.status) == (0, 0, "upstream_error")
    if settings.REDIS_URL:
        assert counter(tenant) == (0, 0)


@pytest.mark.core
@pytest.mark.parametrize("model", ["auto", "claude"])
def test_it_bills_what_was_produced_when_the_provider_breaks_mid_stream(
    proxy: LiveProxy, world: World, mock: MockServer, model: str
) -> None:
    tenant = capped_tenant(world, weekly_token_cap=100_000)
    mock.configure(chunks=10, faults=[{"action": {"type": "break_after", "chunks": 4}}])
    response = httpx.post(
        f"{proxy.url}/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": True},
        headers={"Authorization": f"Bearer {world.token(tenant)}"},
        timeout=10,
    )
    events = [line for line in response.text.split("\n\n") if line.strip()]
    assert events[-1].startswith('data: {"error"')
    assert "[DONE]" not in response.text
    (row,) = ledger_rows(tenant, 1)
    assert row.output_tokens == mock.requests()[-1]["chunks_sent"] == 4
    assert row.status == UsageRecord.Status.UPSTREAM_ERROR
    if settings.REDIS_URL:
        assert counter(tenant) == (row.total_tokens, 0)


@needs_redis
def test_it_rebuilds_flushed_counters_before_the_next_admission(
    proxy: LiveProxy, world: World, mock: MockServer
) -> None:
    tenant = capped_tenant(world)
    headers = {"Authorization": f"Bearer {world.token(tenant)}"}
    body = {"model": "auto", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
    for _ in range(3):
        assert httpx.post(f"{proxy.url}/v1/chat/completions", json=body, headers=headers).is_success
    rows = ledger_rows(tenant, 3)
    used = sum(r.total_tokens for r in rows)
    assert counter(tenant) == (used, 0)
    counters.sync_client().flushdb()  # FLUSHALL for this database: others on the server keep theirs
    # A cap with less room left than one more reservation (prompt estimate + 8 tokens).
    tier_update(tier=tenant.tier, weekly_token_cap=used + 10)
    time.sleep(settings.PROXY_CONTEXT_POLL + 0.5)  # the change reaches the server's cache
    response = httpx.post(f"{proxy.url}/v1/chat/completions", json=body, headers=headers)
    assert response.status_code == 429, response.text
    assert response.json()["error"]["code"] == "insufficient_quota"
    assert counter(tenant)[0] == used  # rebuilt from the ledger
    assert mock.calls() == 3


@needs_redis
@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")
def test_it_refuses_within_a_second_while_redis_is_down(
    live_proxy: LiveProxy, world: World, mock: MockServer, jwt_keys: JwtKeys, tmp_path: Path
) -> None:
    port = free_port()
    command = [
        "redis-server",
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
    ]
    store = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    proxy = start_proxy(tmp_dir=tmp_path, jwt_keys=jwt_keys, extra_env={"REDIS_URL": url})
    try:
        tenant = capped_tenant(world, weekly_token_cap=100_000)
        headers = {"Authorization": f"Bearer {world.token(tenant)}"}
        body = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
        endpoint = f"{proxy.url}/v1/chat/completions"
        assert httpx.post(endpoint, json=body, headers=headers).status_code == 200
        ledger_rows(tenant, 1)

        store.kill()
        store.wait()
        started = time.monotonic()
        response = httpx.post(endpoint, json=body, headers=headers, timeout=10)
        assert time.monotonic() - started < 1.0
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "limits_unavailable"
        assert mock.calls() == 1  # nothing reached the provider

        # Back, empty: the week is rebuilt from the ledger before the next admission.
        store = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL)
        eventually(lambda: httpx.post(endpoint, json=body, headers=headers).raise_for_status())
        rows = ledger_rows(tenant, 2)
        import redis as redis_lib

        fresh = redis_lib.Redis.from_url(url)

        def rebuilt() -> None:
            keys = counters.keys_for(tenant.pk, rows[0].week)
            assert int(fresh.hget(keys.week, "used_tokens") or 0) == sum(
                r.total_tokens for r in rows
            )

        eventually(rebuilt)
    finally:
        stop_proxy(proxy)
        store.kill()
