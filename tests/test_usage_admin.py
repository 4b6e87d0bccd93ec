"""The usage side of the admin (live week usage, the audited reset, the read-only ledger) and
the operator commands rebuild_counters and usage_worker, on both counter stores."""

from __future__ import annotations

import html
import io
import json
import re
import signal
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, cast

import pytest
import redis
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth.models import User
from django.contrib.contenttypes.models import ContentType
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db.models import Sum
from django.test import Client, override_settings
from django.utils import timezone

import core.redis
from routing.models import ModelRoute, ProviderKey
from routing.services import provider_create, provider_key_create, route_create
from tenants.models import Tenant
from tenants.services import tenant_create, tier_create
from usage import counters
from usage.admin import usd
from usage.bill import NANOS
from usage.ledger import record_to_json, seed_week
from usage.models import UsageRecord, WeekReset
from usage.weeks import Week, iso_week, week_of

pytestmark = [pytest.mark.core, pytest.mark.django_db(transaction=True)]

CHANGELIST = "/admin/tenants/tenant/"


@pytest.fixture(autouse=True)
def empty_store(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    counters.sync_client().flushdb()
    # The commands refuse the embedded store, which no server process shares; here the test
    # process itself is the one that serves and reads it, so they may run on it.
    monkeypatch.setattr(core.redis, "embedded", lambda: False)
    # Nothing drains the ledger behind the tests' backs: they run the commands themselves.
    with override_settings(PROXY_LEDGER_WORKER=False):
        yield


@pytest.fixture
def staff() -> User:
    return User.objects.create_superuser("ops", "ops@example.test", "pw")


@pytest.fixture
def ops(staff: User) -> Client:
    """The admin, logged in as a superuser."""
    client = Client()
    client.force_login(staff)
    return client


def make_tenant(slug: str = "alice", **tier_fields: Any) -> Tenant:
    tier = tier_create(slug=f"tier-{slug}", name="Tier", **tier_fields)
    provider = provider_create(
        slug=f"moonshot-{slug}", kind="openai", base_url="https://moonshot.test/v1"
    )
    provider_key_create(provider=provider, label="pool-1", secret="sk-test-0000")
    route_create(tier=tier, model="auto", provider=provider, upstream_model="kimi-k2")
    return tenant_create(slug=slug, name=slug.title(), tier=tier)


def this_week() -> Week:
    return week_of(timezone.now())


def record(
    tenant: Tenant, *, tokens: tuple[int, int], cost: Decimal, week: Week | None = None
) -> dict[str, Any]:
    """A settled request's record, as Meter.record() builds it."""
    week = week or this_week()
    route = ModelRoute.objects.get(tier=tenant.tier, model="auto")
    key = ProviderKey.objects.get(provider=route.provider)
    return {
        "request_id": f"req-{uuid.uuid4().hex}",
        "tenant_id": tenant.pk,
        "tier_id": tenant.tier_id,
        "route_id": route.pk,
        "provider_key_id": key.pk,
        "model": "auto",
        "provider_slug": route.provider.slug,
        "upstream_model": "kimi-k2",
        "stream": False,
        "input_tokens": tokens[0],
        "output_tokens": tokens[1],
        "usage_reported": True,
        "cost_nanos": int(cost * NANOS),
        "status": "ok",
        "http_status": 200,
        "attempts": 1,
        "latency_ms": 12,
        "created_at": min(timezone.now(), week.end - timedelta(seconds=1)).isoformat(),
        "week": week.id,
    }


def ledger_row(tenant: Tenant, *, tokens: tuple[int, int], cost: Decimal) -> UsageRecord:
    """A row already in the database ledger, this week."""
    data = record(tenant, tokens=tokens, cost=cost)
    return UsageRecord.objects.create(
        request_id=data["request_id"],
        tenant=tenant,
        tier=tenant.tier,
        model="auto",
        provider_slug=data["provider_slug"],
        upstream_model="kimi-k2",
        stream=False,
        input_tokens=tokens[0],
        output_tokens=tokens[1],
        cost_usd=cost,
        status=UsageRecord.Status.OK,
        http_status=200,
        latency_ms=12,
        created_at=timezone.now(),
        week=this_week().id,
    )


def settle(data: dict[str, Any]) -> None:
    """Settle a request as the proxy does (usage.limits.asettle's script, run synchronously):
    the counters grow and the record joins the tenant's ledger stream."""
    client = counters.sync_client()
    call = counters.settle_call(
        tenant_id=data["tenant_id"],
        week_id=data["week"],
        request_id=data["request_id"],
        tokens=data["input_tokens"] + data["output_tokens"],
        nanos=data["cost_nanos"],
        record_json=record_to_json(data),
        now_ms=int(time.time() * 1000),
    )
    done = counters.sync_scripts(client).settle(**call)
    assert done == 1


def stream_add(data: dict[str, Any]) -> None:
    """Append a record to the tenant's ledger stream directly (what settlement appends)."""
    counters.sync_client().xadd(
        counters.keys_for(data["tenant_id"], data["week"]).ledger,
        {
            "w": data["week"],
            "t": data["input_tokens"] + data["output_tokens"],
            "n": data["cost_nanos"],
            "r": record_to_json(data),
        },
    )


def live(tenant: Tenant, week: Week | None = None) -> dict[str, int]:
    """The tenant-week's counter hash, as integers."""
    raw = counters.sync_client().hgetall(
        counters.keys_for(tenant.pk, (week or this_week()).id).week
    )
    return {key.decode(): int(value) for key, value in cast(dict[bytes, bytes], raw).items()}


def ledger_sum(tenant: Tenant, week: Week | None = None) -> tuple[int, Decimal]:
    rows = UsageRecord.objects.filter(tenant=tenant, week=(week or this_week()).id)
    totals = rows.aggregate(i=Sum("input_tokens"), o=Sum("output_tokens"), c=Sum("cost_usd"))
    return (totals["i"] or 0) + (totals["o"] or 0), totals["c"] or Decimal(0)


def page(client: Client, url: str) -> str:
    response = client.get(url)
    assert response.status_code == 200, url
    return html.unescape(response.content.decode())


def command(name: str, *args: str) -> str:
    out = io.StringIO()
    call_command(name, *args, stdout=out)
    return out.getvalue()


# --- live usage on the tenant admin ---------------------------------------------------------


@pytest.fixture
def alice() -> Tenant:
    """1,000 tokens and $1.00 of a 10,000-token, $10 week, counted live, plus 234 tokens only
    the live counter knows about: the admin must show 1,234."""
    tenant = make_tenant("alice", weekly_token_cap=10_000, weekly_cost_cap_usd=Decimal("10"))
    ledger_row(tenant, tokens=(600, 150), cost=Decimal("0.750000000"))
    ledger_row(tenant, tokens=(200, 50), cost=Decimal("0.250000000"))
    client = counters.sync_client()
    assert seed_week(client, tenant_id=tenant.pk, week=this_week())
    assert live(tenant)["used_tokens"] == 1000
    client.hincrby(counters.keys_for(tenant.pk, this_week().id).week, "used_tokens", 234)
    return tenant


LIVE_TEXT = "1,234 / 10,000 tokens (12%); $1.00 / $10.00 (10%)"


def test_it_shows_this_weeks_usage_from_the_live_counters_on_the_changelist(
    ops: Client, alice: Tenant
) -> None:
    text = page(ops, CHANGELIST)
    assert "This week (live)" in text
    assert LIVE_TEXT in text
    assert "counters not live" not in text


def test_it_shows_this_weeks_usage_on_the_tenant_page(ops: Client, alice: Tenant) -> None:
    assert LIVE_TEXT in page(ops, f"{CHANGELIST}{alice.pk}/change/")


def test_it_falls_back_to_the_ledger_for_a_week_not_yet_live(ops: Client) -> None:
    bob = make_tenant("bob", weekly_token_cap=2_000)
    ledger_row(bob, tokens=(400, 100), cost=Decimal("0.004"))
    text = page(ops, CHANGELIST)
    # $0.004, not $0.00: a cost under a cent is shown as it is.
    assert "500 / 2,000 tokens (25%); $0.004 (from the ledger: counters not live)" in text
    assert "seeded" not in live(bob)  # showing it did not make the week live


def test_it_shows_usage_without_caps_as_plain_numbers(ops: Client) -> None:
    carol = make_tenant("carol")
    ledger_row(carol, tokens=(12_000, 345), cost=Decimal("1.5"))
    seed_week(counters.sync_client(), tenant_id=carol.pk, week=this_week())
    assert "12,345 tokens; $1.50" in page(ops, f"{CHANGELIST}{carol.pk}/change/")


# --- the audited reset ---------------------------------------------------------------------


def reset_week(client: Client, *tenants: Tenant) -> None:
    response = client.post(
        CHANGELIST,
        {"action": "reset_week", "_selected_action": [str(t.pk) for t in tenants], "index": "0"},
    )
    assert response.status_code == 302, response.content.decode()[:2000]


def test_it_resets_a_tenants_week_without_touching_the_ledger(
    ops: Client, alice: Tenant, staff: User
) -> None:
    # A request settled but not drained yet: the reset forgives it too.
    pending = record(alice, tokens=(100, 34), cost=Decimal("0.123456789"))
    settle(pending)
    rows_before = {r.pk: (r.total_tokens, r.cost_usd) for r in alice.usage_records.all()}

    reset_week(ops, alice)

    reset = WeekReset.objects.get(tenant=alice)
    assert reset.week == this_week().id
    assert reset.tokens == 1134  # the ledger's 1,000 and the settled 134
    assert reset.cost_usd == Decimal("1.123456789")
    assert reset.created_by == staff
    # The live counter starts again from zero (the 234 the ledger never knew went with it).
    assert live(alice)["used_tokens"] == 0
    assert live(alice)["used_nanos"] == 0
    assert live(alice)["seeded"] == 1
    # The ledger is untouched: the same rows, and the settled one drained beside them.
    rows_after = {r.pk: (r.total_tokens, r.cost_usd) for r in alice.usage_records.all()}
    assert {pk: rows_after[pk] for pk in rows_before} == rows_before
    assert alice.usage_records.get(request_id=pending["request_id"]).total_tokens == 134
    assert ledger_sum(alice) == (1134, Decimal("1.123456789"))
    # Audited in the admin's own log too.
    entry = LogEntry.objects.get(
        content_type=ContentType.objects.get_for_model(Tenant), object_id=str(alice.pk)
    )
    assert entry.action_flag == CHANGE
    assert entry.user_id == staff.pk
    assert entry.get_change_message().startswith(
        f"Reset week {this_week().id}: forgave 1134 tokens"
    )
    assert "0 / 10,000 tokens (0%); $0.00 / $10.00 (0%)" in page(ops, CHANGELIST)


def test_it_keeps_a_reset_through_a_rebuild_of_the_counters(ops: Client, alice: Tenant) -> None:
    reset_week(ops, alice)
    assert "Rebuilt the counters of 1 tenant(s)." in command(
        "rebuild_counters", "--tenant", alice.slug
    )
    assert live(alice)["used_tokens"] == 0
    counters.sync_client().flushdb()  # Redis loses everything: the reset is in the database
    command("rebuild_counters", "--tenant", alice.slug)
    assert live(alice) == {"used_tokens": 0, "used_nanos": 0, "seeded": 1}


def test_it_forgives_only_what_was_used_since_the_last_reset(ops: Client, alice: Tenant) -> None:
    reset_week(ops, alice)
    settle(record(alice, tokens=(40, 10), cost=Decimal("0.05")))
    assert live(alice)["used_tokens"] == 50
    reset_week(ops, alice)
    resets = WeekReset.objects.filter(tenant=alice).order_by("pk")
    assert list(resets.values_list("tokens", flat=True)) == [1000, 50]
    assert live(alice)["used_tokens"] == 0
    assert ledger_sum(alice)[0] == 1050


def test_it_resets_only_the_selected_tenants(ops: Client, alice: Tenant) -> None:
    bob, carol = make_tenant("bob"), make_tenant("carol")
    for tenant in (bob, carol):
        ledger_row(tenant, tokens=(70, 7), cost=Decimal("0.01"))
        seed_week(counters.sync_client(), tenant_id=tenant.pk, week=this_week())
    reset_week(ops, alice, carol)
    assert set(WeekReset.objects.values_list("tenant__slug", "tokens")) == {
        ("alice", 1000),
        ("carol", 77),
    }
    assert (live(alice)["used_tokens"], live(carol)["used_tokens"]) == (0, 0)
    assert live(bob)["used_tokens"] == 77
    assert "Reset this week's usage of 2 tenant(s)." in page(ops, CHANGELIST)


# --- rebuild_counters ----------------------------------------------------------------------


def test_it_rebuilds_flushed_counters_from_the_ledger(alice: Tenant) -> None:
    bob = make_tenant("bob")
    ledger_row(bob, tokens=(321, 123), cost=Decimal("0.000000444"))
    counters.sync_client().flushdb()
    assert live(alice) == {}
    assert "Rebuilt the counters of 2 tenant(s)." in command("rebuild_counters")
    for tenant in (alice, bob):
        tokens, cost = ledger_sum(tenant)
        assert live(tenant) == {
            "used_tokens": tokens,
            "used_nanos": int(cost * NANOS),
            "seeded": 1,
        }
    assert live(alice)["used_tokens"] == 1000  # the counter's extra 234 is gone with Redis


def test_it_rebuilds_one_tenant_only(alice: Tenant) -> None:
    bob = make_tenant("bob")
    ledger_row(bob, tokens=(1, 1), cost=Decimal(0))
    counters.sync_client().flushdb()
    command("rebuild_counters", "--tenant", "bob")
    assert live(bob)["used_tokens"] == 2
    assert live(alice) == {}


def test_it_rebuilds_a_past_iso_week(alice: Tenant) -> None:
    week = week_of(timezone.now() - timedelta(weeks=3))
    year, number, _ = week.start.isocalendar()
    assert iso_week(f"{year}-W{number:02d}") == week
    data = record(alice, tokens=(5, 6), cost=Decimal("0.000000011"), week=week)
    data["created_at"] = (week.start + timedelta(days=2)).isoformat()
    stream_add(data)  # still in Redis: the rebuild drains it first
    command("rebuild_counters", "--tenant", alice.slug, "--week", f"{year}-W{number}")
    assert live(alice, week) == {"used_tokens": 11, "used_nanos": 11, "seeded": 1}
    assert ledger_sum(alice, week) == (11, Decimal("0.000000011"))
    assert live(alice)["used_tokens"] == 1234  # this week's counter was left alone


def test_it_rebuilds_the_usage_week_of_an_iso_week_when_weeks_start_on_sunday() -> None:
    tenant = make_tenant("sunny")
    with override_settings(PROXY_WEEK_START_DAY=6):
        week = week_of(timezone.now() - timedelta(weeks=3))
        assert week.start.weekday() == 6
        data = record(tenant, tokens=(20, 2), cost=Decimal(0), week=week)
        data["created_at"] = (week.start + timedelta(days=2)).isoformat()
        settle(data)
        command("usage_worker", "--once")
        counters.sync_client().flushdb()
        year, number, _ = (week.start + timedelta(days=1)).isocalendar()  # its Monday's week
        command("rebuild_counters", "--tenant", tenant.slug, "--week", f"{year}-W{number}")
        assert live(tenant, week) == {"used_tokens": 22, "used_nanos": 0, "seeded": 1}


def test_it_shows_usage_from_the_ledger_when_redis_is_unreachable(
    ops: Client, alice: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unreachable() -> Any:
        raise redis.ConnectionError("Connection refused")

    monkeypatch.setattr(counters, "sync_client", unreachable)
    text = page(ops, CHANGELIST)
    assert "1,000 / 10,000 tokens (10%); $1.00 / $10.00 (10%) (from the ledger" in text
    assert "1,000 / 10,000 tokens" in page(ops, f"{CHANGELIST}{alice.pk}/change/")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tenant", "ghost"], "No tenant 'ghost'."),
        (["--week", "2026-48"], "'2026-48' is not an ISO week such as 2026-W48."),
        (["--week", "2026-W60"], "'2026-W60' is not an ISO week such as 2026-W48."),
    ],
)
def test_it_refuses_to_rebuild_with_bad_arguments(
    alice: Tenant, args: list[str], message: str
) -> None:
    with pytest.raises(CommandError) as caught:
        command("rebuild_counters", *args)
    assert str(caught.value) == message
    assert live(alice)["used_tokens"] == 1234  # nothing was rebuilt


# --- usage_worker --------------------------------------------------------------------------


@pytest.fixture
def signals_restored() -> Iterator[None]:
    """usage_worker installs SIGTERM/SIGINT handlers: give pytest its own back."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


@pytest.mark.usefixtures("signals_restored")
def test_it_moves_the_ledger_stream_into_the_database() -> None:
    tenant = make_tenant("dave")
    data = record(tenant, tokens=(1200, 34), cost=Decimal("0.012345678"))
    stream_add(data)
    stream = counters.keys_for(tenant.pk, "-").ledger
    assert counters.sync_client().xlen(stream) == 1

    assert (
        command("usage_worker", "--once").strip() == "1 ledger entries stored, 0 rows reconciled."
    )

    row = UsageRecord.objects.get(request_id=data["request_id"])
    assert (row.tenant_id, row.tier_id) == (tenant.pk, tenant.tier_id)
    assert (row.route_id, row.provider_key_id) == (data["route_id"], data["provider_key_id"])
    assert (row.input_tokens, row.output_tokens) == (1200, 34)
    assert row.cost_usd == Decimal("0.012345678")
    assert row.created_at == datetime.fromisoformat(data["created_at"])
    assert (row.week, row.status, row.counted) == (this_week().id, "ok", True)
    assert counters.sync_client().xlen(stream) == 0

    # Again: nothing left to move, nothing doubled.
    assert (
        command("usage_worker", "--once").strip() == "0 ledger entries stored, 0 rows reconciled."
    )
    assert UsageRecord.objects.filter(request_id=data["request_id"]).count() == 1
    # The same entry again (a worker that died between the insert and the XDEL): ignored.
    stream_add(data)
    command("usage_worker", "--once")
    assert UsageRecord.objects.filter(request_id=data["request_id"]).count() == 1
    assert counters.sync_client().xlen(stream) == 0


@pytest.mark.usefixtures("signals_restored")
def test_it_moves_every_tenants_stream_in_one_pass() -> None:
    erin, frank = make_tenant("erin"), make_tenant("frank")
    entries = [record(t, tokens=(n, n), cost=Decimal(0)) for t in (erin, frank) for n in (1, 2)]
    for data in entries:
        settle(data)
    assert "4 ledger entries stored" in command("usage_worker", "--once")
    assert set(UsageRecord.objects.values_list("request_id", flat=True)) == {
        data["request_id"] for data in entries
    }


@pytest.mark.usefixtures("signals_restored")
def test_it_adds_rows_written_while_redis_was_down_to_the_counters(alice: Tenant) -> None:
    data = record(alice, tokens=(10, 5), cost=Decimal("0.000000015"))
    row = ledger_row(alice, tokens=(10, 5), cost=Decimal("0.000000015"))
    UsageRecord.objects.filter(pk=row.pk).update(counted=False, request_id=data["request_id"])
    assert "0 ledger entries stored, 1 rows reconciled." in command("usage_worker", "--once")
    assert live(alice)["used_tokens"] == 1234 + 15
    assert UsageRecord.objects.get(pk=row.pk).counted
    assert "1 rows reconciled" not in command("usage_worker", "--once")
    assert live(alice)["used_tokens"] == 1234 + 15


@pytest.mark.usefixtures("signals_restored")
def test_it_stores_usage_of_a_deleted_route_and_key_without_the_links() -> None:
    tenant = make_tenant("gina")
    data = record(tenant, tokens=(3, 4), cost=Decimal("0.000000007"))
    kept = record(tenant, tokens=(1, 1), cost=Decimal(0))
    settle(data)
    settle(kept)
    kept_route = ModelRoute.objects.get(pk=data["route_id"])
    ModelRoute.objects.filter(pk=kept_route.pk).delete()
    ProviderKey.objects.filter(pk=data["provider_key_id"]).delete()
    assert "2 ledger entries stored" in command("usage_worker", "--once")
    row = UsageRecord.objects.get(request_id=data["request_id"])
    assert (row.route_id, row.provider_key_id, row.total_tokens) == (None, None, 7)
    assert UsageRecord.objects.filter(request_id=kept["request_id"]).exists()


@pytest.mark.usefixtures("signals_restored")
def test_it_sets_aside_usage_of_a_deleted_tenant_without_blocking_the_others() -> None:
    gone, kept = make_tenant("gone"), make_tenant("kept")
    lost = record(gone, tokens=(9, 9), cost=Decimal(0))
    stored = record(kept, tokens=(2, 2), cost=Decimal(0))
    settle(lost)
    settle(stored)
    gone_keys = counters.keys_for(gone.pk, "-")
    gone.delete()  # it has no rows in the database yet: only its entry in Redis
    command("usage_worker", "--once")
    assert UsageRecord.objects.filter(request_id=stored["request_id"]).exists()
    assert not UsageRecord.objects.filter(request_id=lost["request_id"]).exists()
    client = counters.sync_client()
    assert client.xlen(gone_keys.ledger) == 0
    [(_, fields)] = cast(
        list[tuple[bytes, dict[bytes, bytes]]], client.xrange(gone_keys.dead_letter)
    )
    assert json.loads(fields[b"r"])["request_id"] == lost["request_id"]


# --- the read-only ledger and audit trail --------------------------------------------------


@pytest.mark.parametrize("model", ["usagerecord", "weekreset"])
def test_it_shows_the_ledger_and_the_resets_read_only(
    ops: Client, alice: Tenant, model: str
) -> None:
    reset_week(ops, alice)
    url = f"/admin/usage/{model}/"
    obj = (UsageRecord if model == "usagerecord" else WeekReset).objects.first()
    assert obj is not None

    listing = page(ops, url)
    assert f"{url}add/" not in listing
    assert 'name="action"' not in listing  # not even "delete selected"
    assert f"{url}{obj.pk}/change/" in listing  # staff may still look at a row

    detail = page(ops, f"{url}{obj.pk}/change/")
    assert 'name="_save"' not in detail
    assert f"{url}{obj.pk}/delete/" not in detail

    assert ops.get(f"{url}add/").status_code == 403
    assert ops.get(f"{url}{obj.pk}/delete/").status_code == 403
    before = UsageRecord.objects.count(), WeekReset.objects.count()
    assert ops.post(f"{url}{obj.pk}/delete/", {"post": "yes"}).status_code == 403
    assert ops.post(f"{url}{obj.pk}/change/", {}).status_code == 403
    assert (UsageRecord.objects.count(), WeekReset.objects.count()) == before


def test_it_finds_ledger_rows_by_search_and_filter(ops: Client, alice: Tenant) -> None:
    first, second = alice.usage_records.order_by("pk")
    UsageRecord.objects.filter(pk=second.pk).update(status=UsageRecord.Status.UPSTREAM_ERROR)
    url = "/admin/usage/usagerecord/"
    everything = page(ops, f"{url}?q={alice.slug}")
    assert first.request_id in everything and second.request_id in everything
    found = page(ops, f"{url}?q={second.request_id}")
    assert second.request_id in found and first.request_id not in found
    ok_only = page(ops, f"{url}?status__exact=ok")
    assert first.request_id in ok_only and second.request_id not in ok_only
    this_year = page(ops, f"{url}?created_at__year={timezone.now().year}")  # date hierarchy
    assert first.request_id in this_year


# --- the ledger's list: filters, totals, costs to the nano-dollar, errors --------------------

LEDGER = "/admin/usage/usagerecord/"


def entry(tenant: Tenant, request_id: str, *, when: datetime | None = None, **fields: Any) -> None:
    """A ledger row with the given fields (the rest: a plain successful request)."""
    moment = when or timezone.now()
    values: dict[str, Any] = {
        "model": "auto",
        "provider_slug": f"moonshot-{tenant.slug}",
        "upstream_model": "kimi-k2",
        "stream": False,
        "status": UsageRecord.Status.OK,
        "http_status": 200,
        "latency_ms": 12,
        **fields,
    }
    UsageRecord.objects.create(
        request_id=request_id,
        tenant=tenant,
        tier=tenant.tier,
        created_at=moment,
        week=week_of(moment).id,
        **values,
    )


# Each row's numbers, from which every expected total below is computed.
ROWS: dict[str, dict[str, Any]] = {
    "req-a1": {
        "input_tokens": 1000,
        "cache_read_tokens": 200,
        "cache_write_tokens": 50,
        "output_tokens": 300,
        "reasoning_tokens": 100,
        "cost_usd": Decimal("0.001000001"),
    },
    "req-a2": {
        "input_tokens": 7,
        "output_tokens": 0,
        "cost_usd": Decimal("0.000000123"),
        "model": "claude",
        "provider_slug": "anthropic",
        "wire_format": "anthropic-messages",
        "status": UsageRecord.Status.UPSTREAM_ERROR,
        "http_status": 502,
        "error_code": "upstream_unavailable",
        "error_message": "The provider answered 502 Bad Gateway.",
    },
    "req-b1": {
        "input_tokens": 10,
        "cache_read_tokens": 4,
        "output_tokens": 5,
        "reasoning_tokens": 2,
        "cost_usd": Decimal("0.5"),
        "ttft_ms": 321,
        "downgraded_from": "big-model",
    },
}
KINDS = (
    "input_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "output_tokens",
    "reasoning_tokens",
)


@pytest.fixture
def ledger() -> dict[str, Tenant]:
    """Alice's two rows this week (one failed), Bob's one row three weeks ago."""
    alice, bob = make_tenant("alice"), make_tenant("bob")
    entry(alice, "req-a1", **ROWS["req-a1"])
    entry(alice, "req-a2", **ROWS["req-a2"])
    entry(bob, "req-b1", when=timezone.now() - timedelta(weeks=3), **ROWS["req-b1"])
    return {"alice": alice, "bob": bob}


def listed(text: str) -> set[str]:
    return {rid for rid in ROWS if f">{rid}<" in text}


def totals(text: str) -> dict[str, str]:
    """The totals row above the list, by column."""
    return dict(re.findall(r'<td data-total="(\w+)">([^<]*)</td>', text))


def expected(*ids: str) -> dict[str, str]:
    rows = [ROWS[i] for i in ids]
    sums = {kind: sum(r.get(kind, 0) for r in rows) for kind in KINDS}
    cost = sum((r["cost_usd"] for r in rows), Decimal(0))
    errors = sum(r.get("status", "ok") != "ok" for r in rows)
    return {
        "requests": f"{len(rows):,}",
        "errors": f"{errors:,}",
        **{kind: f"{value:,}" for kind, value in sums.items()},
        "total_tokens": f"{sums['input_tokens'] + sums['output_tokens']:,}",
        "cost_usd": usd(cost),
    }


def test_it_filters_the_ledger_and_totals_the_filtered_set(
    ops: Client, ledger: dict[str, Tenant]
) -> None:
    alice, bob = ledger["alice"], ledger["bob"]
    cases = {
        "": {"req-a1", "req-a2", "req-b1"},
        f"tenant__id__exact={alice.pk}": {"req-a1", "req-a2"},
        f"tenant__id__exact={bob.pk}": {"req-b1"},
        f"tier__id__exact={bob.tier_id}": {"req-b1"},
        "model=claude": {"req-a2"},
        "provider_slug=moonshot-alice": {"req-a1"},
        "status__exact=upstream_error": {"req-a2"},
        "wire_format=openai-chat": {"req-a1", "req-b1"},
        f"week={this_week().id}": {"req-a1", "req-a2"},
        f"week={week_of(timezone.now() - timedelta(weeks=3)).id}": {"req-b1"},
        f"tenant__id__exact={alice.pk}&status__exact=ok": {"req-a1"},
    }
    for query, ids in cases.items():
        text = page(ops, f"{LEDGER}?{query}")
        assert listed(text) == ids, query
        assert totals(text) == expected(*sorted(ids)), query


def test_it_totals_every_page_of_the_filtered_set_not_only_the_one_shown(
    ops: Client, ledger: dict[str, Tenant], monkeypatch: pytest.MonkeyPatch
) -> None:
    from usage.admin import UsageRecordAdmin

    monkeypatch.setattr(UsageRecordAdmin, "list_per_page", 1)
    text = page(ops, LEDGER)
    assert len(listed(text)) == 1
    assert totals(text) == expected("req-a1", "req-a2", "req-b1")
    assert totals(text)["cost_usd"] == "$0.501000124"


def test_it_totals_a_search_and_an_empty_set(ops: Client, ledger: dict[str, Tenant]) -> None:
    assert totals(page(ops, f"{LEDGER}?q=upstream_unavailable")) == expected("req-a2")
    nothing = totals(page(ops, f"{LEDGER}?q=no-such-request"))
    assert nothing["requests"] == "0" and nothing["cost_usd"] == "$0.00"


def test_it_shows_a_sub_cent_cost_to_the_nano_dollar(
    ops: Client, ledger: dict[str, Tenant]
) -> None:
    failed = UsageRecord.objects.get(request_id="req-a2")
    text = page(ops, f"{LEDGER}?model=claude")
    assert "$0.000000123" in text  # the row's cost
    assert totals(text)["cost_usd"] == "$0.000000123"
    assert "$0.00<" not in text
    assert "$0.000000123" in page(ops, f"{LEDGER}{failed.pk}/change/")


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("0.000000123", "$0.000000123"),
        ("0.004", "$0.004"),
        ("0", "$0.00"),
        ("1.5", "$1.50"),
        ("10", "$10.00"),
        ("1234.567000000", "$1,234.567"),
        ("0.0000000004", "$0.00"),  # below a nano-dollar, which the ledger never holds
    ],
)
def test_it_formats_costs_exactly_but_readably(value: str, text: str) -> None:
    assert usd(Decimal(value)) == text


def test_it_shows_the_error_detail_of_a_failed_request(
    ops: Client, ledger: dict[str, Tenant]
) -> None:
    failed = UsageRecord.objects.get(request_id="req-a2")
    listing = page(ops, f"{LEDGER}?status__exact=upstream_error")
    assert "upstream_unavailable: The provider answered 502 Bad Gateway." in listing
    assert ">502<" in listing
    detail = page(ops, f"{LEDGER}{failed.pk}/change/")
    for shown in ("upstream_unavailable", "The provider answered 502 Bad Gateway.", "502"):
        assert shown in detail


def test_it_shows_time_to_first_token_and_the_downgrade(
    ops: Client, ledger: dict[str, Tenant]
) -> None:
    downgraded = UsageRecord.objects.get(request_id="req-b1")
    listing = page(ops, f"{LEDGER}?tenant__id__exact={ledger['bob'].pk}")
    assert ">321<" in listing and ">big-model<" in listing
    detail = page(ops, f"{LEDGER}{downgraded.pk}/change/")
    assert "321" in detail and "big-model" in detail


def test_it_filters_by_tenant_with_an_autocomplete_that_keeps_the_other_filters(
    ops: Client, ledger: dict[str, Tenant]
) -> None:
    alice = ledger["alice"]
    text = page(ops, f"{LEDGER}?status__exact=ok&tenant__id__exact={alice.pk}")
    form = text[text.index('id="usage-tenant-filter"') :]
    form = form[: form.index("</form>")]
    assert 'class="admin-autocomplete' in form and 'data-field-name="tenant"' in form
    assert 'name="tenant__id__exact"' in form
    assert f'<option value="{alice.pk}" selected>alice</option>' in form  # only the chosen one
    assert "bob" not in form  # no list of every tenant
    assert '<input type="hidden" name="status__exact" value="ok">' in form
    assert "admin/js/autocomplete.js" in text
    # The autocomplete itself searches the tenants, as the admin's own does.
    found = ops.get(
        "/admin/autocomplete/",
        {"app_label": "usage", "model_name": "usagerecord", "field_name": "tenant", "term": "bo"},
    ).json()
    assert [r["text"] for r in found["results"]] == ["bob"]


def test_it_offers_recent_weeks_and_recent_values_without_scanning_the_whole_ledger(
    ops: Client, ledger: dict[str, Tenant]
) -> None:
    old = timezone.now() - timedelta(weeks=20)
    entry(ledger["bob"], "req-old", when=old, model="retired-model")
    text = page(ops, LEDGER)
    assert f"{this_week().id} (this week)" in text
    assert "?model=claude" in text
    assert "?model=retired-model" not in text  # older than the filter looks
    chosen = page(ops, f"{LEDGER}?model=retired-model")  # an old link still filters
    assert ">req-old<" in chosen and listed(chosen) == set()
    assert "?model=retired-model" in chosen
    assert page(ops, f"{LEDGER}?week={week_of(old).id}").count(">req-old<") == 1
