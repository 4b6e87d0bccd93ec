"""The staff dashboard: the projection on a frozen clock, the page (staff only, never a
provider key's plaintext), its aggregates on ledger rows, and its live feed: the consumer in
process, and a request served by another Daphne process moving the numbers within two
seconds over a real WebSocket."""

from __future__ import annotations

import asyncio
import html
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from channels.auth import AuthMiddlewareStack
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth.models import Permission, User
from django.test import Client, override_settings
from django.utils import timezone

from console import live
from console.routing import websocket_urlpatterns
from console.selectors import (
    Projection,
    last_24_hours,
    last_weeks,
    percentile,
    project_week,
    tenants_this_week,
    usage_by,
)
from routing.models import ProviderKey
from routing.services import provider_create, provider_key_create, route_create
from tenants.models import Tenant
from tenants.services import tenant_create, tier_create
from tests.conftest import LiveProxy, World, eventually
from tests.support.ws import HandshakeRefused, WebSocket
from usage import counters
from usage.bill import Bill, Price, Tokens
from usage.models import UsageRecord, WeekReset
from usage.signals import bill_settled
from usage.weeks import Week, week_of

DASHBOARD = "/admin/dashboard/"
DATA = "/admin/dashboard/data.json"

# A week from Monday 2 March 2026 00:00 UTC; Wednesday noon is 2.5 days in.
MONDAY = datetime(2026, 3, 2, tzinfo=UTC)
WEEK = Week(start=MONDAY, end=MONDAY + timedelta(days=7))
WEDNESDAY_NOON = MONDAY + timedelta(days=2, hours=12)


def tenant_reader(username: str) -> User:
    """Staff who may read tenants: the dashboard shows every tenant's week and requests."""
    user = User.objects.create_user(username, password="pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_tenant"))
    return User.objects.get(pk=user.pk)  # a fresh instance: permissions are cached


# --- the projection, on a frozen clock (no database) -----------------------------------------


def test_it_projects_a_tenant_at_half_its_cap_on_wednesday_noon_to_reach_it_on_saturday() -> None:
    projection = project_week(used=500, cap=1000, week=WEEK, now=WEDNESDAY_NOON)
    assert projection == Projection(projected=1400, reaches_cap_at=MONDAY + timedelta(days=5))
    assert projection.reaches_cap_at is not None
    assert projection.reaches_cap_at.strftime("%A %H:%M") == "Saturday 00:00"


def test_it_does_not_project_a_tenant_at_a_tenth_of_its_cap_to_reach_it_this_week() -> None:
    projection = project_week(used=100, cap=1000, week=WEEK, now=WEDNESDAY_NOON)
    assert projection == Projection(projected=280, reaches_cap_at=None)


def test_it_projects_without_a_cap_but_never_reaches_one() -> None:
    assert project_week(used=500, cap=None, week=WEEK, now=WEDNESDAY_NOON) == Projection(
        projected=1400, reaches_cap_at=None
    )


def test_it_projects_nothing_for_a_tenant_that_used_nothing() -> None:
    assert project_week(used=0, cap=1000, week=WEEK, now=WEDNESDAY_NOON) == Projection(
        projected=0, reaches_cap_at=None
    )


def test_it_dates_the_crossing_in_the_past_for_a_tenant_over_its_cap_already() -> None:
    # 1,500 of 1,000 in 2.5 days: the line crossed the cap at 1 2/3 days, Tuesday 16:00.
    projection = project_week(used=1500, cap=1000, week=WEEK, now=WEDNESDAY_NOON)
    assert projection == Projection(
        projected=4200, reaches_cap_at=MONDAY + timedelta(days=1, hours=16)
    )
    at_cap = project_week(used=1000, cap=1000, week=WEEK, now=WEDNESDAY_NOON)
    assert at_cap.reaches_cap_at == WEDNESDAY_NOON


def test_it_needs_time_elapsed_to_project_and_stops_at_the_week_end() -> None:
    # At the very start there is no rate yet; after the end the week is what it was.
    assert project_week(used=10, cap=1000, week=WEEK, now=MONDAY) == Projection(
        projected=10, reaches_cap_at=None
    )
    after = project_week(used=700, cap=1000, week=WEEK, now=WEEK.end + timedelta(days=3))
    assert after == Projection(projected=700, reaches_cap_at=None)
    # A zero cap is spent from the start.
    zero = project_week(used=0, cap=0, week=WEEK, now=WEDNESDAY_NOON)
    assert zero.reaches_cap_at == MONDAY


def test_it_interpolates_percentiles_as_postgresql_percentile_cont() -> None:
    values = [float(v) for v in range(10, 101, 10)]
    assert percentile(values, 0.5) == 55.0
    assert percentile(values, 0.95) == pytest.approx(95.5)
    assert percentile([], 0.5) is None
    assert percentile([7.0], 0.95) == 7.0


# --- the page, its aggregates and its refusals -----------------------------------------------


@pytest.fixture
def empty_store() -> Iterator[None]:
    # Counters cold: usage is read from the ledger, net of resets (as admission would seed).
    counters.sync_client().flushdb()
    with override_settings(PROXY_LEDGER_WORKER=False):
        yield


@pytest.fixture
def staff_client(db: None) -> Client:
    client = Client()
    client.force_login(tenant_reader("ops"))
    return client


@pytest.fixture
def key_secret() -> str:
    return f"sk-live-{uuid.uuid4().hex}{uuid.uuid4().hex}"


def _tenant(slug: str, *, secret: str, **tier_fields: Any) -> Tenant:
    tier = tier_create(slug=f"tier-{slug}", name="Tier", **tier_fields)
    provider = provider_create(slug=f"prov-{slug}", kind="openai", base_url="https://p.test/v1")
    provider_key_create(provider=provider, label=f"pool-{slug}", secret=secret)
    route_create(tier=tier, model="auto", provider=provider, upstream_model="kimi-k2")
    return tenant_create(slug=slug, name=slug.title(), tier=tier)


def _row(
    tenant: Tenant,
    *,
    tokens: tuple[int, int] = (60, 40),
    cost: str = "0.000100000",
    latency: int = 50,
    ttft: int | None = 20,
    status: str = UsageRecord.Status.OK,
    error_code: str = "",
    at: datetime | None = None,
    model: str = "auto",
) -> UsageRecord:
    moment = at or timezone.now()
    key = ProviderKey.objects.get(provider__slug=f"prov-{tenant.slug}")
    return UsageRecord.objects.create(
        request_id=f"req-{uuid.uuid4().hex}",
        tenant=tenant,
        tier=tenant.tier,
        provider_key=key,
        model=model,
        provider_slug=key.provider.slug,
        upstream_model="kimi-k2",
        stream=True,
        input_tokens=tokens[0],
        output_tokens=tokens[1],
        cost_usd=Decimal(cost),
        status=status,
        http_status=200 if status == UsageRecord.Status.OK else 502,
        latency_ms=latency,
        ttft_ms=ttft,
        error_code=error_code,
        created_at=moment,
        week=week_of(moment).id,
    )


@pytest.mark.core
@pytest.mark.django_db(transaction=True)
def test_it_refuses_the_dashboard_to_anyone_but_staff() -> None:
    anonymous = Client()
    for url in (DASHBOARD, DATA):
        response = anonymous.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith(f"/admin/login/?next={url}")
    member = Client()
    member.force_login(User.objects.create_user("member", password="pw", is_staff=False))
    assert member.get(DASHBOARD).status_code == 302
    assert member.get(DATA).status_code == 302


@pytest.mark.core
@pytest.mark.django_db(transaction=True)
def test_it_links_the_dashboard_from_the_admin_index_and_header(staff_client: Client) -> None:
    page = staff_client.get("/admin/").content.decode()
    assert 'id="console-dashboard-link"' in page
    assert 'id="console-dashboard-header-link" href="/admin/dashboard/"' in page
    # Django's own index is still there beneath it.
    assert 'id="content-main"' in page or "app-auth" in page


@pytest.mark.core
@pytest.mark.django_db(transaction=True)
def test_it_renders_usage_against_caps_and_never_a_provider_keys_plaintext(
    staff_client: Client, key_secret: str, empty_store: None
) -> None:
    near = _tenant("near", secret=key_secret, weekly_token_cap=1000)
    over = _tenant("over", secret=f"{key_secret}-2", weekly_cost_cap_usd=Decimal("0.0001"))
    calm = _tenant("calm", secret=f"{key_secret}-3")
    for _ in range(9):
        _row(near)  # 900 of 1,000 tokens
    _row(over, cost="0.000200000")  # twice its cost cap
    WeekReset.objects.create(
        tenant=near, week=week_of(timezone.now()).id, tokens=50, cost_usd=Decimal(0)
    )

    response = staff_client.get(DASHBOARD)
    assert response.status_code == 200
    page = html.unescape(response.content.decode())
    for leak in (key_secret, key_secret[-12:]):
        assert leak not in page
    assert "pool-near" in page  # the pooled key by its label
    # 900 used, 50 forgiven: 850 of 1,000 is near; the cost-capped tenant is over.
    assert f'data-tenant="{near.slug}" data-tenant-id="{near.pk}" data-tokens="850"' in page
    assert 'id="tenant-near" class="level-near"' in page
    assert 'id="tenant-over" class="level-over"' in page
    assert 'id="tenant-calm" class="level-ok"' in page
    assert 'data-flagged="near"' in page and 'data-flagged="over"' in page
    assert 'data-flagged="calm"' not in page
    assert "<svg" in page and "cdn" not in page.lower()
    assert 'data-ws-path="/ws/console/dashboard/"' in page

    data = staff_client.get(DATA)
    assert key_secret not in data.content.decode()
    tenants = {t["slug"]: t for t in data.json()["tenants"]}
    assert tenants["near"]["tokens"] == 850 and tenants["near"]["level"] == "near"
    assert tenants["over"]["cost_nanos"] == 200_000 and tenants["over"]["level"] == "over"
    assert tenants["calm"]["level"] == "ok" and calm.pk == tenants["calm"]["id"]


@pytest.mark.core
@pytest.mark.django_db(transaction=True)
def test_it_aggregates_the_ledger_by_hour_week_model_and_key(
    key_secret: str, empty_store: None
) -> None:
    now = timezone.now()
    tenant = _tenant("acme", secret=key_secret, weekly_token_cap=100_000)
    for index, latency in enumerate(range(10, 101, 10)):  # ten this hour
        _row(tenant, latency=latency, ttft=latency // 2, at=now - timedelta(seconds=index))
    _row(
        tenant,
        status=UsageRecord.Status.UPSTREAM_ERROR,
        error_code="rate_limit",
        ttft=None,
        latency=100,
        at=now - timedelta(seconds=20),
        model="other",
    )
    _row(
        tenant,
        status=UsageRecord.Status.UPSTREAM_TIMEOUT,
        ttft=None,
        latency=100,
        at=now - timedelta(seconds=30),
        model="other",
    )
    two_weeks_ago = now - timedelta(days=14)
    _row(tenant, at=two_weeks_ago)  # in the 8 weeks, not in the 24 hours

    day = last_24_hours(now=now)
    assert len(day.buckets) == 24
    current = day.buckets[-1]
    assert (current.requests, current.errors) == (12, 2)
    assert sum(b.requests for b in day.buckets[:-1]) == 0
    # Latencies 10..100 and two of 100: percentile_cont over twelve values.
    latencies = [float(v) for v in range(10, 101, 10)] + [100.0, 100.0]
    assert current.latency_p50 == pytest.approx(percentile(latencies, 0.5))
    assert current.latency_p95 == pytest.approx(percentile(latencies, 0.95))
    assert current.ttft_p50 == pytest.approx(27.5)  # 5..50: failures had no first token
    assert day.errors_by_kind == [("rate_limit (upstream_error)", 1), ("upstream_timeout", 1)]

    weeks = last_weeks(now=now)
    assert len(weeks.buckets) == 8
    assert weeks.buckets[-1].requests == 12
    assert weeks.buckets[-3].requests == 1 and weeks.buckets[-3].label == week_of(
        two_weeks_ago
    ).start.strftime("%d %b")

    week = week_of(now)
    by_model = {b.label: b for b in usage_by(by="model", start=week.start, end=week.end)}
    assert (by_model["auto"].requests, by_model["auto"].tokens) == (10, 1000)
    assert by_model["other"].requests == 2
    by_key = usage_by(by="key", start=week.start, end=week.end)
    assert [(b.label, b.requests) for b in by_key] == [("prov-acme/pool-acme", 12)]
    assert by_key[0].cost_usd == Decimal("0.0012")

    (row,) = tenants_this_week(week=week, now=now)
    assert (row.tokens, row.token_cap, row.level) == (1200, 100_000, "ok")
    assert row.tokens_projection == project_week(used=1200, cap=100_000, week=week, now=now)


# --- the live feed ---------------------------------------------------------------------------


def _bill(*, tenant_id: int, tokens: int = 30) -> Bill:
    now = timezone.now()
    return Bill(
        request_id=f"req-{uuid.uuid4().hex}",
        tenant_id=tenant_id,
        tier_id=1,
        route_id=1,
        provider_key_id=1,
        model="auto",
        provider_slug="moonshot",
        upstream_model="kimi-k2",
        stream=True,
        tokens=Tokens(input=tokens - 10, output=10, reported=True),
        price=Price(input_usd_per_mtok=Decimal("1"), output_usd_per_mtok=Decimal("2")),
        status="ok",
        http_status=200,
        attempts=1,
        latency_ms=120,
        created_at=now,
        week=week_of(now).id,
        ttft_ms=40,
    )


def _application() -> Any:
    return AuthMiddlewareStack(URLRouter(websocket_urlpatterns))


def _session_cookie(user: User) -> str:
    client = Client()
    client.force_login(user)
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"


async def _communicator(cookie: str | None) -> WebsocketCommunicator:
    headers = [(b"cookie", cookie.encode())] if cookie else []
    return WebsocketCommunicator(_application(), "/ws/console/dashboard/", headers=headers)


@pytest.mark.core
@pytest.mark.django_db(transaction=True)
async def test_it_forwards_each_settled_bill_to_a_staff_socket() -> None:
    from asgiref.sync import sync_to_async

    staff = await sync_to_async(tenant_reader)("ops")
    cookie = await sync_to_async(_session_cookie)(staff)
    communicator = await _communicator(cookie)
    connected, _ = await communicator.connect()
    assert connected
    try:
        bill = _bill(tenant_id=4242)
        # As settlement announces it (usage.limits._announce): the app's receiver is connected.
        await bill_settled.asend_robust(None, bill=bill, settled=True)
        message = await communicator.receive_json_from(timeout=2)
        while message.get("request_id") != bill.request_id:  # another test run's, on Redis
            message = await communicator.receive_json_from(timeout=2)
        assert message == {
            "type": "usage.settled",
            "request_id": bill.request_id,
            "tenant_id": 4242,
            "model": "auto",
            "provider": "moonshot",
            "stream": True,
            "input_tokens": 20,
            "output_tokens": 10,
            "tokens": 30,
            "cost_nanos": 40_000,
            "status": "ok",
            "http_status": 200,
            "error_code": "",
            "latency_ms": 120,
            "ttft_ms": 40,
            "downgraded_from": "",
            "created_at": bill.created_at.isoformat(),
            "settled": True,
        }
    finally:
        await communicator.disconnect()


@pytest.mark.core
@pytest.mark.django_db(transaction=True)
async def test_it_refuses_a_socket_to_anyone_but_active_staff() -> None:
    from asgiref.sync import sync_to_async

    member = await User.objects.acreate(username="member", is_staff=False)
    retired = await User.objects.acreate(username="retired", is_staff=True, is_active=False)
    cookies = [None, await sync_to_async(_session_cookie)(member)]
    # An inactive user's session: made by hand, since force_login refuses inactive users
    # only through the backend, and the session must name the user all the same.
    cookies.append(await sync_to_async(_inactive_cookie)(retired))
    for cookie in cookies:
        communicator = await _communicator(cookie)
        connected, _ = await communicator.connect()
        assert not connected, cookie
        await communicator.disconnect()


def _inactive_cookie(user: User) -> str:
    from importlib import import_module

    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY

    store = import_module(settings.SESSION_ENGINE).SessionStore()
    store[SESSION_KEY] = str(user.pk)
    store[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.AllowAllUsersModelBackend"
    store[HASH_SESSION_KEY] = user.get_session_auth_hash()
    store.save()
    return f"{settings.SESSION_COOKIE_NAME}={store.session_key}"


class _StuckLayer:
    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        await asyncio.sleep(30)


class _BrokenLayer:
    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        raise ConnectionError("redis is down")


@pytest.mark.core
@pytest.mark.parametrize("layer", [_StuckLayer(), _BrokenLayer()], ids=["stuck", "broken"])
async def test_it_never_holds_or_fails_a_request_over_the_dashboard(
    layer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(live, "get_channel_layer", lambda: layer)
    started = time.monotonic()
    await live.on_bill_settled(None, bill=_bill(tenant_id=1), settled=True)  # does not raise
    assert time.monotonic() - started < live.SEND_TIMEOUT + 0.5


class _RecordingLayer:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        self.sent.append(message)


@pytest.mark.core
async def test_it_publishes_a_moment_of_settlements_as_one_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    layer = _RecordingLayer()
    monkeypatch.setattr(live, "get_channel_layer", lambda: layer)
    bills = [_bill(tenant_id=7) for _ in range(50)]
    for bill in bills:
        await live.on_bill_settled(None, bill=bill, settled=True)
    assert layer.sent == []  # nothing on the requests' own path
    for _ in range(100):
        if layer.sent:
            break
        await asyncio.sleep(live.FLUSH_SECONDS / 2)
    assert [m["type"] for m in layer.sent] == ["usage.batch"]
    assert [e["request_id"] for e in layer.sent[0]["events"]] == [b.request_id for b in bills]


def _other_process(request: pytest.FixtureRequest, proxy: LiveProxy) -> LiveProxy:
    # Across processes the channel layer is Redis; without Redis (the zero-setup pass) each
    # process has its own in-memory layer, so the request goes through the same one.
    if settings.REDIS_URL:
        other: LiveProxy = request.getfixturevalue("second_proxy")
        return other
    return proxy


@pytest.mark.core
def test_it_moves_the_live_numbers_when_another_process_serves_a_request(
    proxy: LiveProxy, world: World, request: pytest.FixtureRequest
) -> None:
    other = _other_process(request, proxy)
    staff = tenant_reader("ops")
    cookie = _session_cookie(staff)
    origin = proxy.url
    page = httpx.get(f"{proxy.url}{DASHBOARD}", headers={"Cookie": cookie})
    assert page.status_code == 200
    assert f'data-tenant="{world.alice.slug}"' in page.text
    host = proxy.url.removeprefix("http://")

    with pytest.raises(HandshakeRefused) as refused:
        WebSocket.connect(f"ws://{host}/ws/console/dashboard/", headers={"Origin": origin})
    assert refused.value.status == 403

    with WebSocket.connect(
        f"ws://{host}/ws/console/dashboard/", headers={"Origin": origin, "Cookie": cookie}
    ) as socket:
        answer = httpx.post(
            f"{other.url}/v1/chat/completions",
            json={"model": "auto", "messages": [{"role": "user", "content": "hello"}]},
            headers={"Authorization": f"Bearer {world.token(world.alice)}"},
            timeout=10,
        )
        assert answer.status_code == 200, answer.text
        answered = time.monotonic()
        while True:  # other sessions' tests may share this Redis's publish/subscribe
            message = socket.recv_json(timeout=max(0.01, answered + 2 - time.monotonic()))
            if message.get("tenant_id") == world.alice.pk:
                break
        assert time.monotonic() - answered < 2
        usage = answer.json()["usage"]
        assert message["type"] == "usage.settled"
        assert message["tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
        assert (message["model"], message["status"], message["settled"]) == ("auto", "ok", True)
        assert message["cost_nanos"] > 0 and message["latency_ms"] >= 0

    def snapshot_moved() -> None:
        data = httpx.get(f"{proxy.url}{DATA}", headers={"Cookie": cookie}).json()
        alice = next(t for t in data["tenants"] if t["slug"] == world.alice.slug)
        assert alice["tokens"] == message["tokens"]
        assert alice["cost_nanos"] == message["cost_nanos"]

    eventually(snapshot_moved, timeout=3)


@pytest.mark.core
@pytest.mark.django_db
def test_it_shows_spend_alerts_with_their_delivery_state(staff_client: Client) -> None:
    from usage.models import AlertEvent

    tier = tier_create(slug="alerting", name="Alerting", weekly_token_cap=1000)
    tenant = tenant_create(slug="spender", name="Spender", tier=tier)
    week = week_of(timezone.now()).id
    AlertEvent.objects.create(
        event_id="spend_x_80", tenant=tenant, tier=tier, week=week, threshold=80,
        kind="tokens", used=800, cap=1000, attempts=2, last_error="HTTP 500",
        created_at=timezone.now(),
    )  # fmt: skip
    with override_settings(PROXY_ALERT_WEBHOOK_URL="http://127.0.0.1:9/hook"):
        page = staff_client.get("/admin/dashboard/").content.decode()
    assert 'id="spend-alerts"' in page
    assert 'data-alert="spend_x_80"' in page and 'data-threshold="80"' in page
    assert "retrying after 2 attempts: HTTP 500" in page
    superuser = Client()
    superuser.force_login(User.objects.create_superuser("root", password="pw"))
    listed = superuser.get("/admin/usage/alertevent/").content.decode()
    assert "spender" in listed and "80% of the weekly token cap" in listed


@pytest.mark.core
@pytest.mark.django_db
def test_it_refuses_staff_who_may_not_read_tenants() -> None:
    client = Client()
    client.force_login(User.objects.create_user("intern", password="pw", is_staff=True))
    assert client.get("/admin/dashboard/").status_code == 403
    assert client.get("/admin/dashboard/data.json").status_code == 403


# Costs to the nano-dollar, in Python and in dashboard.js alike; a cap of 0.

EXACT_COSTS = {
    0: "$0.00",
    200: "$0.0000002",  # 10 tokens at $0.02/Mtok
    1: "$0.000000001",
    10_000_000: "$0.01",
    123_456_789: "$0.123456789",
    5_000_000_000: "$5.00",
    1_234_567_890_123: "$1,234.567890123",
    -200: "-$0.0000002",
}


def test_it_shows_costs_to_the_nano_dollar_as_the_admin_does() -> None:
    from console.selectors import usd_text
    from usage.admin import usd

    for nanos, text in EXACT_COSTS.items():
        assert usd_text(nanos) == text == usd(Decimal(nanos).scaleb(-9))


def test_it_formats_live_costs_in_dashboard_js_as_the_page_does() -> None:
    import json
    import shutil
    import subprocess
    from pathlib import Path

    node = shutil.which("node")
    if node is None:
        pytest.skip("needs node")
    script = Path(settings.BASE_DIR) / "console" / "static" / "console" / "dashboard.js"
    program = (
        f"const {{usd}} = require({json.dumps(str(script))});"
        f"console.log(JSON.stringify({json.dumps(list(EXACT_COSTS))}.map(usd)));"
    )
    done = subprocess.run(
        [node, "-e", program], capture_output=True, text=True, timeout=30, check=True
    )
    assert json.loads(done.stdout) == list(EXACT_COSTS.values())


@pytest.mark.core
@pytest.mark.django_db(transaction=True)
def test_it_renders_a_tiny_cost_and_usage_against_a_zero_cap_truthfully(
    staff_client: Client, key_secret: str, empty_store: None
) -> None:
    tiny = _tenant("tiny", secret=key_secret)
    zero = _tenant("zero", secret=f"{key_secret}-2", weekly_token_cap=0)
    _row(tiny, tokens=(10, 0), cost="0.000000200")
    _row(zero)

    page = html.unescape(staff_client.get(DASHBOARD).content.decode())
    assert '<td class="num" data-field="cost">$0.0000002</td>' in page
    flagged = page[page.index('data-flagged="zero"') :].split("</li>")[0]
    assert "zero: over (over its token cap of 0)" in flagged and "inf" not in flagged
    tenants = {t["slug"]: t for t in staff_client.get(DATA).json()["tenants"]}
    assert tenants["tiny"]["cost_text"] == "$0.0000002"
    assert tenants["zero"]["level"] == "over"
