"""The fault suite: a controllable mock provider behind a live proxy.

Keys rate-limited and refused, providers failing, unreachable, slow to start, dripping bytes
or breaking mid-stream, clients leaving: the proxy keeps serving, bills exactly once and
leaks nothing.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Unpack

import httpx
import openai
import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client

from routing.models import Provider, ProviderKey
from routing.services import (
    ProviderFields,
    provider_create,
    provider_key_create,
    route_create,
)
from tenants.models import Tenant
from tenants.services import tenant_create, tier_create
from tests.conftest import (
    CHANGE_VISIBLE_WITHIN,
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
from usage.models import UsageRecord

pytestmark = pytest.mark.core


@dataclass
class Pool:
    tenant: Tenant
    primary: Provider  # OpenAI-kind, two keys
    fallback: Provider  # Anthropic-kind, one key, priority 1
    key_a: ProviderKey
    key_b: ProviderKey
    secrets: dict[str, str]


def make_pool(
    world: World,
    mock: MockServer,
    *,
    primary_url: str | None = None,
    fallback: bool = True,
    **timeouts: Unpack[ProviderFields],
) -> Pool:
    tier = tier_create(
        slug=unique("faults"), name="F", requests_per_minute=100_000, max_concurrent_requests=1000
    )
    primary = provider_create(
        slug=unique("primary"),
        kind="openai",
        base_url=primary_url or mock.openai_base_url,
        **timeouts,
    )
    second = provider_create(
        slug=unique("fallback"), kind="anthropic", base_url=mock.anthropic_base_url
    )
    secrets = {name: f"sk-{name}-{os.urandom(6).hex()}" for name in ("a", "b", "fallback")}
    key_a = provider_key_create(provider=primary, label="a", secret=secrets["a"])
    key_b = provider_key_create(provider=primary, label="b", secret=secrets["b"])
    provider_key_create(provider=second, label="f", secret=secrets["fallback"])
    route_create(
        tier=tier,
        model="auto",
        provider=primary,
        upstream_model="primary-model",
        input_usd_per_mtok=Decimal("1"),
        output_usd_per_mtok=Decimal("1"),
    )
    if fallback:
        route_create(
            tier=tier,
            model="auto",
            provider=second,
            upstream_model="fallback-model",
            priority=1,
            input_usd_per_mtok=Decimal("1"),
            output_usd_per_mtok=Decimal("1"),
        )
    tenant = tenant_create(slug=unique("faulty"), name="F", tier=tier)
    return Pool(tenant, primary, second, key_a, key_b, secrets)


def chat(
    proxy: LiveProxy, world: World, tenant: Tenant, *, stream: bool = False, **extra: Any
) -> httpx.Response:
    return httpx.post(
        f"{proxy.url}/v1/chat/completions",
        json={
            "model": "auto",
            "messages": [{"role": "user", "content": "hi"}],
            "stream": stream,
            **extra,
        },
        headers={"Authorization": f"Bearer {world.token(tenant)}"},
        timeout=30,
    )


def key_admin_page() -> str:
    staff = User.objects.filter(username="staff").first() or User.objects.create_superuser(
        "staff", "staff@example.com", "pw-staff-123!"
    )
    client = Client()
    client.force_login(staff)
    page = client.get("/admin/routing/providerkey/")
    assert page.status_code == 200
    return page.content.decode()


def one_row(tenant: Tenant, *, count: int = 1) -> UsageRecord:
    """The last of the tenant's ``count`` ledger rows."""
    return ledger_rows(tenant, count)[-1]


def test_it_serves_a_rate_limited_key_from_the_other_and_rests_it_everywhere(
    proxy: LiveProxy, world: World, mock: MockServer, request: pytest.FixtureRequest
) -> None:
    pool = make_pool(world, mock, fallback=False)
    mock.configure(
        faults=[
            {
                "match": {"api_key": pool.secrets["a"]},
                "action": {"type": "status", "status": 429, "headers": {"retry-after": "30"}},
            }
        ]
    )
    served = 0
    for _ in range(12):  # until key a has been drawn (weights are equal)
        response = chat(proxy, world, pool.tenant)
        assert response.status_code == 200, response.text
        served += 1
        if any(r["api_key"] == pool.secrets["a"] for r in mock.requests()):
            break
    keys = [r["api_key"] for r in mock.requests()]
    assert pool.secrets["a"] in keys, "key a was never drawn"
    assert keys[-1] == pool.secrets["b"]  # the 429 was answered by key b, same request
    row = one_row(pool.tenant, count=served)
    assert row.attempts == 2 and row.provider_key_id == pool.key_b.pk and row.status == "ok"

    # Every process now leaves key a alone for its retry-after.
    time.sleep(CHANGE_VISIBLE_WITHIN if settings.REDIS_URL else 0)
    mock.reset()
    # With a shared Redis, a second process too (the embedded store is one process's own).
    targets = (proxy, request.getfixturevalue("second_proxy")) if settings.REDIS_URL else (proxy,)
    for _ in range(6):
        for target in targets:
            assert chat(target, world, pool.tenant).status_code == 200
    assert {r["api_key"] for r in mock.requests()} == {pool.secrets["b"]}
    key = ProviderKey.objects.get(pk=pool.key_a.pk)
    assert key.enabled and "429" in key.last_error
    # Staff see it: resting (read live from Redis), its last error, its requests.
    page = key_admin_page()
    if settings.REDIS_URL:
        assert "resting until" in page
    assert "429 from the provider; resting 30s" in page
    expected_rows = served + 6 * len(targets)
    eventually(lambda: one_row(pool.tenant, count=expected_rows))
    counts = [UsageRecord.objects.filter(provider_key=k).count() for k in (pool.key_a, pool.key_b)]
    page = key_admin_page()
    for count in counts:
        assert f'<td class="field-requests">{count}</td>' in page


def test_it_switches_off_a_refused_key(proxy: LiveProxy, world: World, mock: MockServer) -> None:
    pool = make_pool(world, mock, fallback=False)
    mock.configure(
        faults=[
            {"match": {"api_key": pool.secrets["a"]}, "action": {"type": "status", "status": 401}}
        ]
    )
    for _ in range(12):
        assert chat(proxy, world, pool.tenant).status_code == 200
        if any(r["api_key"] == pool.secrets["a"] for r in mock.requests()):
            break

    def switched_off() -> ProviderKey:
        key = ProviderKey.objects.get(pk=pool.key_a.pk)
        assert not key.enabled
        return key

    key = eventually(switched_off)
    assert "401" in key.disabled_reason and "401" in key.last_error
    page = key_admin_page()
    assert "off: 401 from the provider: key refused" in page
    mock.reset()
    for _ in range(5):
        assert chat(proxy, world, pool.tenant).status_code == 200
    assert {r["api_key"] for r in mock.requests()} == {pool.secrets["b"]}


def test_it_fails_over_to_the_next_route_when_the_provider_fails(
    proxy: LiveProxy, world: World, mock: MockServer
) -> None:
    pool = make_pool(world, mock)
    mock.configure(
        faults=[{"match": {"api": "openai"}, "action": {"type": "status", "status": 503}}]
    )
    client = openai.OpenAI(
        base_url=proxy.openai_base_url, api_key=world.token(pool.tenant), max_retries=0
    )
    completion = client.chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "hi"}]
    )
    assert completion.choices[0].message.content == mock.requests()[-1]["text_sent"]
    apis = [r["api"] for r in mock.requests()]
    assert apis == ["openai", "openai", "anthropic"]  # both keys once, then the fallback route
    row = one_row(pool.tenant)
    assert row.attempts == 3 and row.provider_slug == pool.fallback.slug
    assert row.output_tokens == mock.requests()[-1]["usage"]["output_tokens"]


def test_it_fails_over_when_the_provider_refuses_connections(
    proxy: LiveProxy, world: World, mock: MockServer
) -> None:
    closed = f"http://127.0.0.1:{free_port()}/v1"
    pool = make_pool(world, mock, primary_url=closed)
    response = chat(proxy, world, pool.tenant, stream=True)
    assert response.status_code == 200 and "data: [DONE]" in response.text
    assert [r["api"] for r in mock.requests()] == ["anthropic"]

    alone = make_pool(world, mock, primary_url=closed, fallback=False)
    response = chat(proxy, world, alone.tenant)
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_unreachable"
    assert one_row(alone.tenant).status == "upstream_error"


@pytest.mark.parametrize("stream", [False, True])
def test_it_answers_504_when_the_first_byte_is_late(
    proxy: LiveProxy, world: World, mock: MockServer, stream: bool
) -> None:
    pool = make_pool(world, mock, fallback=False, first_byte_timeout=0.3)
    mock.configure(faults=[{"action": {"type": "delay_headers", "seconds": 5}}])
    started = time.monotonic()
    response = chat(proxy, world, pool.tenant, stream=stream)
    elapsed = time.monotonic() - started
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "upstream_timeout"
    # The first-byte deadline holds: nothing waits out the provider (a timeout moves on to
    # the next route, and there is none here).
    assert elapsed < 0.3 * 2 + 0.8
    assert one_row(pool.tenant).status == "upstream_timeout"


def test_it_keeps_a_slow_stream_alive_until_the_answer_starts(
    proxy: LiveProxy, world: World, mock: MockServer
) -> None:
    pool = make_pool(world, mock, fallback=False)
    mock.configure(faults=[{"action": {"type": "delay_headers", "seconds": 2.5}}])
    client = openai.OpenAI(
        base_url=proxy.openai_base_url, api_key=world.token(pool.tenant), max_retries=0
    )
    text = chat(proxy, world, pool.tenant, stream=True).text
    assert text.startswith(": keep-alive\n\n")
    assert text.rstrip().endswith("data: [DONE]")
    # And the SDK reads such a stream as any other.
    mock.configure(faults=[{"action": {"type": "delay_headers", "seconds": 2.5}}])
    chunks = list(
        client.chat.completions.create(
            model="auto", messages=[{"role": "user", "content": "hi"}], stream=True
        )
    )
    assert (
        "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        == mock.requests()[-1]["text_sent"]
    )


def test_it_cuts_a_drip_feed_at_the_idle_limit(
    proxy: LiveProxy, world: World, mock: MockServer
) -> None:
    pool = make_pool(world, mock, fallback=False, idle_timeout=0.6)
    mock.configure(faults=[{"action": {"type": "drip", "interval": 0.1, "max_seconds": 20}}])
    started = time.monotonic()
    response = chat(proxy, world, pool.tenant, stream=True)
    assert time.monotonic() - started < 3
    events = [e for e in response.text.split("\n\n") if e.strip()]
    assert events[-1].startswith('data: {"error"') and "went silent" in events[-1]
    assert "[DONE]" not in response.text

    def upstream_closed() -> None:
        assert mock.requests()[-1]["disconnected"]

    eventually(upstream_closed, timeout=3)
    assert one_row(pool.tenant).status == "upstream_timeout"


def test_it_bills_a_stream_that_breaks_mid_way_once(
    proxy: LiveProxy, world: World, mock: MockServer
) -> None:
    pool = make_pool(world, mock, fallback=False)
    mock.configure(chunks=12, faults=[{"action": {"type": "break_after", "chunks": 5}}])
    client = openai.OpenAI(
        base_url=proxy.openai_base_url, api_key=world.token(pool.tenant), max_retries=0
    )
    stream = client.chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    received = ""
    with pytest.raises(openai.APIError):  # the SDK raises on the error event
        for chunk in stream:
            received += (chunk.choices[0].delta.content or "") if chunk.choices else ""
    assert received == mock.requests()[-1]["text_sent"]
    row = one_row(pool.tenant)
    assert row.output_tokens == 5 and row.status == "upstream_error"


def _open_fds(proxy: LiveProxy) -> int:
    return len(os.listdir(f"/proc/{proxy.process.pid}/fd"))


def test_it_closes_the_upstream_and_leaks_nothing_when_clients_leave(
    proxy: LiveProxy, world: World, mock: MockServer
) -> None:
    pool = make_pool(world, mock, fallback=False)
    pool.tenant.tier.max_concurrent_requests = 1
    pool.tenant.tier.save()
    token = world.token(pool.tenant)
    mock.configure(chunks=50, chunk_delay=0.05)
    body = {"model": "auto", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    headers = {"Authorization": f"Bearer {token}"}

    async def leave_after_first_chunk(client: httpx.AsyncClient) -> float:
        async with client.stream(
            "POST", f"{proxy.url}/v1/chat/completions", json=body, headers=headers
        ) as r:
            assert r.status_code == 200, await r.aread()
            async for part in r.aiter_bytes():
                if b'"content":"Hello"' in part:
                    break
        return time.time()

    async def rounds(count: int) -> list[float]:
        left = []
        # One at a time (the tier allows one): each departure must free its slot.
        for _ in range(count):
            async with httpx.AsyncClient(timeout=10) as client:
                left.append(await leave_after_first_chunk(client))
        return left

    time.sleep(CHANGE_VISIBLE_WITHIN)  # the concurrency limit of 1 has reached the server
    asyncio.run(rounds(10))
    eventually(lambda: one_row(pool.tenant, count=10))
    baseline = _open_fds(proxy)
    mock.reset()
    mock.configure(chunks=50, chunk_delay=0.05)
    left = asyncio.run(rounds(200))

    def all_closed() -> list[dict[str, Any]]:
        records = mock.requests()
        assert len(records) == 200 and all(r["disconnected"] for r in records)
        return records

    records = eventually(all_closed, timeout=3)
    for when, record in zip(left, records, strict=True):
        assert record["disconnected_at"] - when < 1.0  # upstream closed within a second
    rows = ledger_rows(pool.tenant, 210)
    assert all(r.status == "client_disconnected" for r in rows)
    assert len({r.request_id for r in rows}) == 210  # billed once each
    billed = {r.request_id: r.output_tokens for r in rows}
    assert sum(billed.values()) >= 200  # at least the piece each client read
    time.sleep(0.5)
    assert _open_fds(proxy) <= baseline + 5


def test_it_cuts_off_a_client_that_reads_too_slowly(
    proxy: LiveProxy, world: World, mock: MockServer, jwt_keys: Any, tmp_path: Any
) -> None:
    """A client that stops reading is cut off once more than PROXY_STREAM_BUFFER_BYTES
    have waited for it for PROXY_SLOW_CLIENT_TIMEOUT, and billed for what was produced.

    Deterministic, not a race against a sleep: the pieces are large (256 KB), so the
    kernel's socket buffers (a few MB on loopback) fill within a second and the proxy's own
    buffer then stays full; and the client reads nothing until the proxy has settled the
    request. Without the guard the proxy buffers the whole answer (26 MB) for it and
    settles the request as completed, which fails this test."""
    strict = start_proxy(
        tmp_dir=tmp_path,
        jwt_keys=jwt_keys,
        extra_env={"PROXY_STREAM_BUFFER_BYTES": "4096", "PROXY_SLOW_CLIENT_TIMEOUT": "1"},
    )
    pieces, piece = 100, "x" * 2**18
    try:
        pool = make_pool(world, mock, fallback=False)
        # A delay, however short, is what makes the mock yield between pieces (and so
        # stream them rather than write the whole answer before the first is sent).
        mock.configure(chunks=pieces, text=[piece], chunk_delay=0.04)
        body = json.dumps(
            {
                "model": "auto",
                "messages": [{"role": "user", "content": "hi"}],
                "stream": True,
                "max_tokens": pieces,
            }
        ).encode()
        port = int(strict.url.rsplit(":", 1)[1])

        def settled() -> UsageRecord:
            rows = list(UsageRecord.objects.filter(tenant=pool.tenant))
            assert len(rows) == 1, "not settled: neither cut off nor served to the end"
            return rows[0]

        with socket.socket() as client:
            # A client that reads nothing, with a small window of its own.
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            client.connect(("127.0.0.1", port))
            client.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: proxy\r\n"
                + f"Authorization: Bearer {world.token(pool.tenant)}\r\n".encode()
                + b"Content-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            # Not one byte read until the proxy is done with the request, whichever way.
            row = eventually(settled, timeout=30)
            received = bytearray()
            client.settimeout(2)
            try:
                while chunk := client.recv(65536):
                    received += chunk
            except ConnectionResetError:
                pass  # cut off: the proxy aborted the connection
            except TimeoutError:
                pass  # the connection is still open (served to the end): asserted below
        # (Sizes and flags, not the bytes: a failure here must not print megabytes.)
        status_line, size = received.split(b"\r\n", 1)[0], len(received)
        served_to_the_end = b"data: [DONE]" in received
        assert status_line == b"HTTP/1.1 200 OK"
        assert row.status == "client_disconnected"
        assert 0 < row.output_tokens < pieces  # billed for what was produced, not all of it
        assert not served_to_the_end
        assert size < pieces * len(piece) // 10
        assert "client too slow to read its stream" in strict.log()
    finally:
        stop_proxy(strict)


def test_it_bills_a_slow_starting_stream_cut_off_mid_way(
    proxy: LiveProxy, world: World, mock: MockServer
) -> None:
    """The stream opened on keep-alives (the provider was slow to start), then the client
    left after three pieces: billed for what was produced, not zero."""
    pool = make_pool(world, mock, fallback=False)
    mock.configure(
        chunks=20, chunk_delay=0.3, faults=[{"action": {"type": "delay_headers", "seconds": 1.5}}]
    )
    client = openai.OpenAI(
        base_url=proxy.openai_base_url, api_key=world.token(pool.tenant), max_retries=0
    )
    stream = client.chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    pieces = 0
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            pieces += 1
            if pieces == 3:
                break
    stream.close()
    row = one_row(pool.tenant)
    assert row.status == "client_disconnected"
    assert row.output_tokens == 3


def test_it_passes_on_a_request_too_large_for_the_rate_limit_without_resting_keys(
    proxy: LiveProxy, world: World, mock: MockServer
) -> None:
    pool = make_pool(world, mock, fallback=False)
    too_large = {
        "error": {
            "message": "Request too large for model in organization org-x on tokens per min "
            "(TPM): Limit 30000, Requested 90000.",
            "type": "tokens",
            "param": None,
            "code": "rate_limit_exceeded",
        }
    }
    mock.configure(
        faults=[{"times": 1, "action": {"type": "status", "status": 429, "body": too_large}}]
    )
    response = chat(proxy, world, pool.tenant)
    assert response.status_code == 429 and "Retry-After" in response.headers
    assert mock.calls() == 1  # not retried on the other key: no key would take it
    # Keys are chosen at random by weight: both serve again, within a few requests.
    used: set[str] = set()
    for _ in range(40):
        assert chat(proxy, world, pool.tenant).status_code == 200
        used = {r["api_key"] for r in mock.requests()[1:]}
        if len(used) == 2:
            break
    assert used == {pool.secrets["a"], pool.secrets["b"]}
    assert not ProviderKey.objects.exclude(last_error="").filter(provider=pool.primary).exists()


def test_it_rests_a_key_the_provider_forbids_rather_than_switching_it_off(
    proxy: LiveProxy, world: World, mock: MockServer
) -> None:
    pool = make_pool(world, mock, fallback=False)
    mock.configure(
        faults=[
            {"match": {"api_key": pool.secrets["a"]}, "action": {"type": "status", "status": 403}}
        ]
    )
    for _ in range(12):
        assert chat(proxy, world, pool.tenant).status_code == 200
        if any(r["api_key"] == pool.secrets["a"] for r in mock.requests()):
            break

    def rested() -> ProviderKey:
        key = ProviderKey.objects.get(pk=pool.key_a.pk)
        assert "403" in key.last_error
        return key

    key = eventually(rested)
    assert key.enabled and not key.disabled_reason
