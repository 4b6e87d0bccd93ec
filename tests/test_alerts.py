"""Spend alerts (signed webhooks, once per tenant per threshold per week) and the soft cap's
downgrade route, through live Daphne processes."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import time
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.utils import timezone

from routing.services import route_create
from tenants.models import Tenant, Tier
from tenants.services import tenant_create, tier_create
from tests.conftest import (
    JwtKeys,
    LiveProxy,
    World,
    eventually,
    ledger_rows,
    start_proxy,
    stop_proxy,
    unique,
)
from tests.support.mockserver import MockServer
from tests.support.webhook_receiver import Delivery, WebhookReceiver
from usage import alerts, counters
from usage.alerts import Plan, reached
from usage.models import AlertEvent
from usage.webhooks import sign, signed_headers
from usage.weeks import week_of

needs_redis = pytest.mark.skipif(not settings.REDIS_URL, reason="needs a Redis shared by processes")

SECRET = "whsec_" + base64.b64encode(os.urandom(24)).decode()


def reference_signature(*, secret: str, msg_id: str, timestamp: str, body: bytes) -> str:
    """The Standard Webhooks algorithm, written out here apart from usage/webhooks.py."""
    key = base64.b64decode(secret.split("_", 1)[1])
    signed = msg_id.encode() + b"." + timestamp.encode() + b"." + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def verified(delivery: Delivery) -> bool:
    """Whether a delivery's signature (any of the space-separated ones) is ours and fresh."""
    headers = delivery.headers
    expected = reference_signature(
        secret=SECRET,
        msg_id=headers["webhook-id"],
        timestamp=headers["webhook-timestamp"],
        body=delivery.body,
    )
    fresh = abs(time.time() - int(headers["webhook-timestamp"])) < 300
    return fresh and any(
        hmac.compare_digest(expected, sig) for sig in headers["webhook-signature"].split()
    )


def test_it_signs_the_standard_webhooks_reference_vector() -> None:
    # The vector the Standard Webhooks reference libraries test against.
    assert (
        sign(
            secret="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            msg_id="msg_p5jXN8AQM9LWM0D4loKWxJek",
            timestamp=1614265330,
            body=b'{"test": 2432232314}',
        )
        == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    )
    body = b'{"type":"spend.threshold_crossed","data":{"threshold":80}}'
    headers = signed_headers(secret=SECRET, msg_id="spend_7_2026-11-30_tokens_80", body=body)
    assert headers["webhook-id"] == "spend_7_2026-11-30_tokens_80"
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 5
    assert headers["webhook-signature"] == reference_signature(
        secret=SECRET,
        msg_id=headers["webhook-id"],
        timestamp=headers["webhook-timestamp"],
        body=body,
    )


def test_it_compares_thresholds_exactly_in_whole_numbers() -> None:
    plan = Plan(thresholds=(50, 80, 100), token_cap=1001, cost_cap_nanos=3)
    # 500 of 1001 tokens is just under half; 2 of 3 nano-dollars is past 50 % but not 80 %.
    assert reached(plan=plan, used_tokens=500, used_nanos=2) == [("cost", 50, 2, 3)]
    assert [(k, p) for k, p, _, _ in reached(plan=plan, used_tokens=1001, used_nanos=0)] == [
        ("tokens", 50),
        ("tokens", 80),
        ("tokens", 100),
    ]
    # No cap, or a cap of 0 (which refuses everything), raises no alert.
    assert reached(plan=Plan((50,), None, 0), used_tokens=10**9, used_nanos=10**9) == []


def _alert_rows(tenant: Tenant) -> list[AlertEvent]:
    return list(AlertEvent.objects.filter(tenant=tenant))


@pytest.mark.core
@pytest.mark.django_db(transaction=True)
async def test_it_records_a_crossing_once_for_the_dashboard_without_a_webhook(
    settings: Any, redis_flushed: None
) -> None:
    settings.PROXY_ALERT_WEBHOOK_URL = ""
    tier = await sync_to_async(tier_create)(
        slug=unique("quiet"), name="Quiet", weekly_token_cap=100, alert_thresholds="50,80"
    )
    tenant = await sync_to_async(tenant_create)(slug=unique("quiet"), name="Quiet", tier=tier)
    week = week_of(timezone.now()).id
    keys = counters.keys_for(tenant.pk, week)
    client = counters.async_client()
    await client.hset(keys.week, mapping={"used_tokens": 60, "used_nanos": 0, "seeded": 1})

    async def check() -> list[alerts.Crossing]:
        plan = alerts.Plan(thresholds=(50, 80), token_cap=100, cost_cap_nanos=None)
        return await alerts.acheck(plan=plan, tenant_id=tenant.pk, tier_id=tier.pk, week_id=week)

    async def recorded() -> list[AlertEvent]:
        for _ in range(100):
            rows = await sync_to_async(_alert_rows)(tenant)
            if rows:
                return rows
            await asyncio.sleep(0.05)
        raise AssertionError("no AlertEvent row")

    try:
        assert [(c.kind, c.threshold, c.used, c.cap) for c in await check()] == [
            ("tokens", 50, 60, 100)
        ]
        alerts._known.clear()  # as another process would see it: only the claim in Redis says
        assert await check() == []  # claimed: not again this week

        (row,) = await recorded()  # by the delivery task the claim started
        assert (row.threshold, row.kind, row.used, row.cap) == (50, "tokens", 60, 100)
        assert row.week == week
        assert (row.attempts, row.delivered_at) == (0, None)  # no webhook: nothing to post
        assert row.event_id == alerts.event_id(
            tenant_id=tenant.pk, week_id=week, kind="tokens", threshold=50
        )
        assert await client.xlen(alerts.outbox_key(tenant.pk)) == 1
    finally:
        task = alerts.deliveries.tasks.pop(asyncio.get_running_loop(), None)
        if task is not None:
            task.cancel()


# --- live: two processes with a webhook configured -----------------------------------------


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def alerting(
    live_proxy: LiveProxy,
    receiver: WebhookReceiver,
    tmp_path_factory: pytest.TempPathFactory,
    jwt_keys: JwtKeys,
) -> Iterator[tuple[LiveProxy, LiveProxy]]:
    """Two Daphne processes that post spend alerts to the receiver (live_proxy does not)."""
    if not settings.REDIS_URL:
        pytest.skip("needs a Redis shared by processes")
    env = {"PROXY_ALERT_WEBHOOK_URL": receiver.url, "PROXY_ALERT_WEBHOOK_SECRET": SECRET}
    started = [
        start_proxy(
            tmp_dir=tmp_path_factory.mktemp(f"alerting-{n}"), jwt_keys=jwt_keys, extra_env=env
        )
        for n in range(2)
    ]
    yield started[0], started[1]
    for proxy in started:
        stop_proxy(proxy)


def alerting_tenants(world: World, count: int, **tier_fields: Any) -> tuple[Tier, list[Tenant]]:
    fields: dict[str, Any] = {
        "requests_per_minute": 100_000,
        "max_concurrent_requests": 10_000,
        **tier_fields,
    }
    tier = tier_create(slug=unique("alerting"), name="Alerting", **fields)
    route_create(
        tier=tier,
        model="auto",
        provider=world.moonshot,
        upstream_model="up-auto",
        input_usd_per_mtok=Decimal("1"),
        output_usd_per_mtok=Decimal("2"),
    )
    tenants = [
        tenant_create(slug=unique("spender"), name="Spender", tier=tier) for _ in range(count)
    ]
    return tier, tenants


def reported_usage(prompt: int, completion: int) -> list[dict[str, Any]]:
    """A mock fault: every answer reports this usage (the proxy bills what it is told)."""
    usage = {"prompt_tokens": prompt, "completion_tokens": completion}
    return [{"action": {"type": "usage", "usage": {**usage, "total_tokens": prompt + completion}}}]


BODY = {"model": "auto", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}


@needs_redis
def test_it_posts_each_threshold_once_per_tenant_under_200_requests_over_two_processes(
    proxy: LiveProxy,
    alerting: tuple[LiveProxy, LiveProxy],
    receiver: WebhookReceiver,
    world: World,
    mock: MockServer,
) -> None:
    receiver.reset()
    # 300 tokens an answer against a reservation of a few dozen: whatever the interleaving,
    # a tenant's first four answers take it past 100 % of 1000 (and the cap then refuses).
    mock.configure(faults=reported_usage(292, 8))
    tier, tenants = alerting_tenants(world, 2, weekly_token_cap=1000, alert_thresholds="50,80,100")
    tokens = {tenant.pk: world.token(tenant) for tenant in tenants}

    async def burst() -> list[int]:
        async with httpx.AsyncClient(
            timeout=30, limits=httpx.Limits(max_connections=200)
        ) as client:

            async def one(index: int) -> int:
                target = alerting[index % 2]
                tenant = tenants[(index // 2) % 2]
                response = await client.post(
                    f"{target.url}/v1/chat/completions",
                    json=BODY,
                    headers={"Authorization": f"Bearer {tokens[tenant.pk]}"},
                )
                return response.status_code

            return await asyncio.gather(*(one(i) for i in range(200)))

    statuses = Counter(asyncio.run(burst()))
    assert set(statuses) == {200, 429} and statuses[200] >= 8

    def all_delivered() -> list[Delivery]:
        done = [d for d in receiver.deliveries() if d.status == 204]
        assert len({d.id for d in done}) == 6
        return done

    delivered = eventually(all_delivered, timeout=10)
    time.sleep(1)  # a duplicate, were one on its way, would arrive by now
    delivered = [d for d in receiver.deliveries() if d.status == 204]
    assert all(verified(d) for d in receiver.deliveries())
    # Once each: one event per tenant and threshold, each posted once (nothing failed, so
    # nothing was retried), from one claim across both processes.
    week = week_of(timezone.now()).id
    assert Counter(d.id for d in delivered) == {
        alerts.event_id(tenant_id=t.pk, week_id=week, kind="tokens", threshold=p): 1
        for t in tenants
        for p in (50, 80, 100)
    }
    client = counters.sync_client()
    assert [client.xlen(alerts.outbox_key(t.pk)) for t in tenants] == [3, 3]
    by_tenant: dict[str, set[int]] = {}
    for delivery in delivered:
        event = json.loads(delivery.body)
        assert event["type"] == "spend.threshold_crossed"
        data = event["data"]
        assert (data["kind"], data["unit"], data["cap"], data["tier"]) == (
            "tokens",
            "tokens",
            1000,
            tier.slug,
        )
        assert data["used"] * 100 >= data["cap"] * data["threshold"]
        by_tenant.setdefault(data["tenant"], set()).add(data["threshold"])
    assert by_tenant == {t.slug: {50, 80, 100} for t in tenants}

    rows = list(AlertEvent.objects.order_by("tenant_id", "threshold"))
    assert [(r.tenant_id, r.threshold, r.attempts) for r in rows] == [
        (t.pk, p, 1) for t in sorted(tenants, key=lambda t: t.pk) for p in (50, 80, 100)
    ]
    assert all(r.delivered_at is not None and r.last_error == "" for r in rows)
    assert [a.event_id for a in alerts.recent_alerts(limit=2)] == [
        r.event_id for r in sorted(rows, key=lambda r: (r.created_at, r.id), reverse=True)[:2]
    ]


@needs_redis
def test_it_retries_a_failing_receiver_with_the_same_webhook_id(
    proxy: LiveProxy,
    alerting: tuple[LiveProxy, LiveProxy],
    receiver: WebhookReceiver,
    world: World,
    mock: MockServer,
) -> None:
    receiver.reset(fail_first=2)  # two 500s for every event before it is accepted
    # 40 + 8 tokens at $1 / $2 per million: $0.000056 an answer against a $0.0001 cap: the
    # first answer is past 50 %, the second past 100 %, the third is refused.
    mock.configure(faults=reported_usage(40, 8))
    _, (tenant,) = alerting_tenants(
        world, 1, weekly_cost_cap_usd=Decimal("0.0001"), alert_thresholds="50,100"
    )
    headers = {"Authorization": f"Bearer {world.token(tenant)}"}
    statuses = [
        httpx.post(f"{alerting[0].url}/v1/chat/completions", json=BODY, headers=headers).status_code
        for _ in range(3)
    ]
    assert statuses == [200, 200, 429]

    def accepted() -> None:
        assert len({d.id for d in receiver.deliveries() if d.status == 204}) == 2

    eventually(accepted, timeout=15)
    deliveries = receiver.deliveries()
    assert all(verified(d) for d in deliveries)
    by_id: dict[str, list[int]] = {}
    for delivery in deliveries:
        by_id.setdefault(delivery.id, []).append(delivery.status)
    week = week_of(timezone.now()).id
    assert by_id == {
        alerts.event_id(tenant_id=tenant.pk, week_id=week, kind="cost", threshold=p): [
            500,
            500,
            204,
        ]
        for p in (50, 100)
    }
    # The same body every time (only the timestamp header and its signature are fresh).
    for event_id in by_id:
        bodies = {d.body for d in deliveries if d.id == event_id}
        assert len(bodies) == 1
        data = json.loads(bodies.pop())["data"]
        assert (data["kind"], data["unit"], data["cap"], data["cap_usd"]) == (
            "cost",
            "nano_usd",
            100_000,
            "0.0001",
        )

    def recorded() -> list[AlertEvent]:
        rows = list(AlertEvent.objects.filter(tenant=tenant).order_by("threshold"))
        assert [r.attempts for r in rows] == [3, 3]
        return rows

    rows = eventually(recorded)
    assert all(r.delivered_at is not None and r.last_error == "HTTP 500" for r in rows)
    assert [r.summary.split(" (")[0] for r in rows] == [
        "50% of the weekly cost cap reached",
        "100% of the weekly cost cap reached",
    ]


@needs_redis
def test_it_delivers_a_crossing_a_dead_process_claimed_at_a_new_processs_first_settlement(
    proxy: LiveProxy,
    receiver: WebhookReceiver,
    world: World,
    mock: MockServer,
    jwt_keys: JwtKeys,
    tmp_path: Any,
) -> None:
    receiver.reset()
    mock.configure(faults=reported_usage(5, 3))  # far below any threshold: nothing to claim
    tier, (tenant,) = alerting_tenants(world, 1, weekly_token_cap=1000, alert_thresholds="50")
    week = week_of(timezone.now()).id
    dead = alerts.Crossing(
        event_id=alerts.event_id(tenant_id=tenant.pk, week_id=week, kind="tokens", threshold=50),
        tenant_id=tenant.pk,
        tier_id=tier.pk,
        week=week,
        kind="tokens",
        threshold=50,
        used=600,
        cap=1000,
        at=timezone.now().isoformat(),
    )
    # What a process that claimed the crossing and died before its courier ran leaves.
    client = counters.sync_client()
    client.set(
        alerts.claim_key(tenant_id=tenant.pk, week_id=week, kind="tokens", threshold=50), "1"
    )
    client.xadd(alerts.outbox_key(tenant.pk), {"e": dead.to_json()})
    env = {"PROXY_ALERT_WEBHOOK_URL": receiver.url, "PROXY_ALERT_WEBHOOK_SECRET": SECRET}
    restarted = start_proxy(tmp_dir=tmp_path, jwt_keys=jwt_keys, extra_env=env)
    try:
        response = httpx.post(
            f"{restarted.url}/v1/chat/completions",
            json=BODY,
            headers={"Authorization": f"Bearer {world.token(tenant)}"},
        )
        assert response.status_code == 200

        def delivered() -> Delivery:
            done = [d for d in receiver.deliveries() if d.status == 204]
            assert len(done) == 1
            return done[0]

        delivery = eventually(delivered, timeout=10)
        assert delivery.id == dead.event_id and verified(delivery)

        def recorded() -> AlertEvent:
            row = AlertEvent.objects.filter(event_id=dead.event_id).first()
            assert row is not None and row.delivered_at is not None
            return row

        assert eventually(recorded).used == 600
    finally:
        stop_proxy(restarted)


# --- the soft cap: a downgrade route until the hard cap ------------------------------------


@pytest.mark.core
def test_it_serves_past_the_soft_cap_from_the_downgrade_route_at_its_prices(
    proxy: LiveProxy, world: World, mock: MockServer
) -> None:
    # 100 tokens an answer against a 1000-token cap, downgrade at 50 %: five answers from
    # the dear route, five from the cheap one, then the hard cap.
    mock.configure(faults=reported_usage(92, 8))
    tier = tier_create(
        slug=unique("soft"),
        name="Soft",
        requests_per_minute=100_000,
        max_concurrent_requests=100,
        weekly_token_cap=1000,
        downgrade_model="cheap",
        downgrade_at_percent=50,
    )
    dear = route_create(
        tier=tier,
        model="auto",
        provider=world.moonshot,
        upstream_model="up-dear",
        input_usd_per_mtok=Decimal("10"),
        output_usd_per_mtok=Decimal("20"),
    )
    cheap = route_create(
        tier=tier,
        model="cheap",
        provider=world.moonshot,
        upstream_model="up-cheap",
        input_usd_per_mtok=Decimal("1"),
        output_usd_per_mtok=Decimal("2"),
    )
    tenant = tenant_create(slug=unique("soft"), name="Soft", tier=tier)
    headers = {"Authorization": f"Bearer {world.token(tenant)}"}
    answers = [
        httpx.post(f"{proxy.url}/v1/chat/completions", json=BODY, headers=headers)
        for _ in range(11)
    ]
    assert [a.status_code for a in answers] == [200] * 10 + [429]
    assert answers[-1].json()["error"]["code"] == "insufficient_quota"
    assert [a.headers.get("x-llm-proxy-downgraded-from") for a in answers[:10]] == [None] * 5 + [
        "auto"
    ] * 5
    assert [r["model"] for r in mock.requests()] == ["up-dear"] * 5 + ["up-cheap"] * 5

    rows = ledger_rows(tenant, 10)
    assert [(r.route_id, r.upstream_model, r.downgraded_from) for r in rows] == [
        (dear.pk, "up-dear", "")
    ] * 5 + [(cheap.pk, "up-cheap", "auto")] * 5
    # Billed at each route's own prices: 92 in and 8 out per answer.
    assert [r.cost_usd for r in rows] == [Decimal("0.001080")] * 5 + [Decimal("0.000108")] * 5
