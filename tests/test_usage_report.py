"""`manage.py usage_report`: ledger totals per tenant, tier, model or provider.

A fixture week of ledger rows (ISO week 2026-W48, Monday 2026-11-23 to Sunday 2026-11-29
UTC) with rows just outside it on both sides; every expected number is computed here from
the fixture itself, never read back through the ORM.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from tenants.models import Tenant, Tier
from tenants.services import tenant_create, tier_create
from usage.models import UsageRecord

pytestmark = [pytest.mark.core, pytest.mark.django_db]

WEEK_ID = "2026-11-23"
NUMBERS = ("requests", "input_tokens", "output_tokens", "total_tokens")
BY = ("tenant", "tier", "model", "provider")
FORMATS = ("table", "csv", "json")


@dataclass(frozen=True)
class Row:
    """One ledger row of the fixture, in the terms the report groups by."""

    tenant: str
    model: str
    provider: str
    when: datetime
    input_tokens: int
    output_tokens: int
    cost_usd: Decimal


def row(tenant: str, model: str, provider: str, when: str, used: tuple[int, int], cost: str) -> Row:
    """A fixture row; ``when`` is a UTC time in 2026 ("11-23T00:00:00")."""
    moment = datetime.fromisoformat(f"2026-{when}").replace(tzinfo=UTC)
    return Row(tenant, model, provider, moment, used[0], used[1], Decimal(cost))


# tenant alice is on tier "auto", bob on tier "max". Model "auto" is served by moonshot and,
# once, by anthropic (a fallback), so grouping by model and by provider differ.
IN_WEEK = [
    row("alice", "auto", "moonshot", "11-23T00:00:00", (100, 20), "0.000123456"),  # first instant
    row("alice", "auto", "moonshot", "11-25T12:00:00", (1000, 114), "0.001000001"),
    row("alice", "claude", "anthropic", "11-27T08:30:00", (1034, 200), "0.004000003"),
    row("bob", "auto", "anthropic", "11-24T09:15:00", (7, 3), "0.000000007"),
    row("bob", "claude", "anthropic", "11-26T18:00:00", (40000, 9990), "0.150000000"),
    row("bob", "claude", "anthropic", "11-29T23:59:59.999999", (5000, 0), "0.025999999"),  # last
]
# Just outside the week, on either side: never in 2026-W48's totals.
BEFORE = row("alice", "auto", "moonshot", "11-22T23:59:59", (333, 111), "0.000999999")
AFTER = row("bob", "claude", "anthropic", "11-30T00:00:00", (555, 222), "0.000777777")

TIER_OF = {"alice": "auto", "bob": "max"}
# Caps: alice's tier allows 10,000 tokens and $0.01 a week, bob's 100,000 tokens and $1.
TOKEN_CAP = {"auto": 10_000, "max": 100_000}
COST_CAP = {"auto": Decimal("0.0100"), "max": Decimal("1.0000")}


def group_of(row: Row, by: str) -> str:
    return {
        "tenant": row.tenant,
        "tier": TIER_OF[row.tenant],
        "model": row.model,
        "provider": row.provider,
    }[by]


def expected_totals(rows: list[Row], by: str) -> dict[str, dict[str, Any]]:
    totals: dict[str, dict[str, Any]] = defaultdict(
        lambda: {n: 0 for n in NUMBERS} | {"cost_usd": Decimal(0)}
    )
    for row in rows:
        group = totals[group_of(row, by)]
        group["requests"] += 1
        group["input_tokens"] += row.input_tokens
        group["output_tokens"] += row.output_tokens
        group["total_tokens"] += row.input_tokens + row.output_tokens
        group["cost_usd"] += row.cost_usd
    return dict(totals)


@pytest.fixture
def ledger() -> dict[str, Tenant]:
    tiers: dict[str, Tier] = {
        slug: tier_create(
            slug=slug,
            name=slug.title(),
            weekly_token_cap=TOKEN_CAP[slug],
            weekly_cost_cap_usd=COST_CAP[slug],
        )
        for slug in ("auto", "max")
    }
    tenants = {
        slug: tenant_create(slug=slug, name=slug.title(), tier=tiers[TIER_OF[slug]])
        for slug in ("alice", "bob")
    }
    for index, row in enumerate([*IN_WEEK, BEFORE, AFTER]):
        tenant = tenants[row.tenant]
        UsageRecord.objects.create(
            request_id=f"req-{index}",
            tenant=tenant,
            tier=tenant.tier,
            model=row.model,
            provider_slug=row.provider,
            upstream_model=f"{row.model}-upstream",
            stream=index % 2 == 0,
            input_tokens=row.input_tokens,
            output_tokens=row.output_tokens,
            cost_usd=row.cost_usd,
            status=UsageRecord.Status.OK,
            http_status=200,
            latency_ms=50,
            created_at=row.when,
            week={BEFORE: "2026-11-16", AFTER: "2026-11-30"}.get(row, WEEK_ID),
        )
    return tenants


def report(*args: str) -> str:
    out = io.StringIO()
    call_command("usage_report", *args, stdout=out)
    return out.getvalue()


def parsed(text: str, fmt: str) -> dict[str, dict[str, str]]:
    """The report's rows, by group, as strings (whatever the format)."""
    if fmt == "json":
        rows = json.loads(text)["rows"]
        return {r["group"]: {k: ("" if v is None else str(v)) for k, v in r.items()} for r in rows}
    if fmt == "csv":
        return {r["group"]: r for r in csv.DictReader(io.StringIO(text))}
    lines = [line for line in text.splitlines() if line.strip()]
    header_at = next(i for i, line in enumerate(lines) if line.split()[:1] == ["group"])
    columns = lines[header_at].split()
    result = {}
    for line in lines[header_at + 1 :]:
        cells = line.split()
        assert len(cells) == len(columns), f"table row {line!r} does not fit {columns}"
        result[cells[0]] = dict(zip(columns, cells, strict=True))
    return result


def assert_totals(got: dict[str, dict[str, str]], want: dict[str, dict[str, Any]]) -> None:
    assert set(got) == set(want)
    for group, totals in want.items():
        for name in NUMBERS:
            assert int(got[group][name]) == totals[name], (group, name)
        assert Decimal(got[group]["cost_usd"]) == totals["cost_usd"], group  # to the nano-dollar


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("by", BY)
def test_it_reports_the_ledgers_totals_of_an_iso_week(
    ledger: dict[str, Tenant], by: str, fmt: str
) -> None:
    text = report("--week", "2026-W48", "--by", by, "--format", fmt)
    assert_totals(parsed(text, fmt), expected_totals(IN_WEEK, by))


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_it_reports_the_ledgers_cost_to_the_nano_dollar(
    ledger: dict[str, Tenant], fmt: str
) -> None:
    text = report("--week", "2026-W48", "--by", "tenant", "--format", fmt)
    assert_totals(parsed(text, fmt), expected_totals(IN_WEEK, "tenant"))


def test_it_titles_the_table_with_the_grouping_and_the_week(ledger: dict[str, Tenant]) -> None:
    text = report("--week", "2026-W48", "--by", "provider")
    assert text.splitlines()[0] == "Usage by provider, week of 2026-11-23"
    assert parsed(text, "table")["anthropic"]["requests"] == "4"


def test_it_labels_the_json_with_its_period_and_grouping(ledger: dict[str, Tenant]) -> None:
    data = json.loads(report("--week", "2026-W48", "--by", "model", "--format", "json"))
    assert data["period"] == "week of 2026-11-23"
    assert data["by"] == "model"
    assert [row["group"] for row in data["rows"]] == ["auto", "claude"]
    assert all(isinstance(row["requests"], int) for row in data["rows"])


# Alice: 2,468 tokens of 10,000, $0.005123460 of $0.01. Bob: 55,000 of 100,000,
# $0.176000006 of $1.
CAP_PERCENT = {
    "alice": {"token_cap_used_pct": 24.68, "cost_cap_used_pct": 51.23},
    "bob": {"token_cap_used_pct": 55.0, "cost_cap_used_pct": 17.6},
}


@pytest.mark.parametrize("fmt", FORMATS)
def test_it_reports_each_tenants_use_of_its_caps(ledger: dict[str, Tenant], fmt: str) -> None:
    totals = expected_totals(IN_WEEK, "tenant")
    for tenant, percents in CAP_PERCENT.items():  # the fixture says what the comment says
        cap = TIER_OF[tenant]
        assert (
            round(100 * totals[tenant]["total_tokens"] / TOKEN_CAP[cap], 2)
            == (percents["token_cap_used_pct"])
        )
        assert (
            round(float(100 * totals[tenant]["cost_usd"] / COST_CAP[cap]), 2)
            == (percents["cost_cap_used_pct"])
        )
    got = parsed(report("--week", "2026-W48", "--format", fmt), fmt)
    for tenant, percents in CAP_PERCENT.items():
        for name, value in percents.items():
            assert float(got[tenant][name]) == pytest.approx(value, abs=1e-9), (tenant, name)


def test_it_uses_a_tenants_own_cap_over_its_tiers(ledger: dict[str, Tenant]) -> None:
    bob = ledger["bob"]
    bob.weekly_token_cap_override = 220_000
    bob.weekly_cost_cap_usd_override = None  # the tier's $1 still applies
    bob.save()
    rows = json.loads(report("--week", "2026-W48", "--format", "json"))["rows"]
    row = next(r for r in rows if r["group"] == "bob")
    assert row["token_cap_used_pct"] == 25.0
    assert row["cost_cap_used_pct"] == 17.6


def test_it_leaves_cap_columns_empty_for_a_tier_without_caps(ledger: dict[str, Tenant]) -> None:
    Tier.objects.filter(slug="max").update(weekly_token_cap=None, weekly_cost_cap_usd=None)
    got = parsed(report("--week", "2026-W48", "--format", "csv"), "csv")
    assert got["bob"]["token_cap_used_pct"] == ""
    assert got["bob"]["cost_cap_used_pct"] == ""
    assert got["alice"]["token_cap_used_pct"] == "24.68"


@pytest.mark.parametrize("by", ["tier", "model", "provider"])
def test_it_reports_caps_only_by_tenant(ledger: dict[str, Tenant], by: str) -> None:
    rows = json.loads(report("--week", "2026-W48", "--by", by, "--format", "json"))["rows"]
    assert rows and all("token_cap_used_pct" not in row for row in rows)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("by", BY)
def test_it_reports_the_same_for_the_weeks_dates_as_for_the_week(
    ledger: dict[str, Tenant], by: str, fmt: str
) -> None:
    text = report("--from", "2026-11-23", "--to", "2026-11-29", "--by", by, "--format", fmt)
    got = parsed(text, fmt)
    assert_totals(got, expected_totals(IN_WEEK, by))
    week = parsed(report("--week", "2026-W48", "--by", by, "--format", fmt), fmt)
    for group, values in got.items():
        for name in (*NUMBERS, "cost_usd"):
            assert values[name] == week[group][name]


def test_it_includes_the_whole_last_day_of_a_range(ledger: dict[str, Tenant]) -> None:
    text = report("--from", "2026-11-22", "--to", "2026-11-22", "--format", "json")
    assert json.loads(text)["period"] == "2026-11-22 to 2026-11-22"
    got = parsed(text, "json")
    assert_totals(got, expected_totals([BEFORE], "tenant"))
    assert got["alice"]["requests"] == "1"


def test_it_reports_a_range_across_both_edges(ledger: dict[str, Tenant]) -> None:
    got = parsed(report("--from", "2026-11-22", "--to", "2026-11-30", "--format", "csv"), "csv")
    assert_totals(got, expected_totals([*IN_WEEK, BEFORE, AFTER], "tenant"))


@pytest.mark.parametrize("fmt", FORMATS)
def test_it_reports_an_empty_period_without_failing(ledger: dict[str, Tenant], fmt: str) -> None:
    text = report("--week", "2026-W50", "--format", fmt)
    if fmt == "json":
        assert json.loads(text)["rows"] == []
    elif fmt == "csv":
        reader = csv.DictReader(io.StringIO(text))
        assert list(reader) == []
        assert reader.fieldnames is not None and "cost_usd" in reader.fieldnames
    else:
        assert "(no usage)" in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--week", "2026-48"], "'2026-48' is not an ISO week such as 2026-W48"),
        (["--week", "2026-W60"], "'2026-W60' is not an ISO week such as 2026-W48"),
        (["--week", "2026-W0"], "'2026-W0' is not an ISO week"),
        (["--from", "2026-11-23"], "--from and --to go together"),
        (["--to", "2026-11-29"], "--from and --to go together"),
        (["--from", "2026-11-29", "--to", "2026-11-23"], "--to is before --from"),
        (["--week", "2026-W48", "--from", "2026-11-23"], "either --week or --from/--to"),
        (
            ["--week", "2026-W48", "--from", "2026-11-23", "--to", "2026-11-29"],
            "either --week or --from/--to",
        ),
        (["--from", "2026-13-01", "--to", "2026-12-31"], "--from '2026-13-01': expected a date"),
        (["--from", "2026-12-01", "--to", "tomorrow"], "--to 'tomorrow': expected a date"),
        (["--by", "nonsense"], "invalid choice: 'nonsense'"),
        (["--format", "xml"], "invalid choice: 'xml'"),
    ],
)
def test_it_refuses_bad_arguments_with_a_clear_error(
    ledger: dict[str, Tenant], args: list[str], message: str
) -> None:
    with pytest.raises(CommandError, match=re.escape(message)):
        report(*args)
