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
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from html.parser import HTMLParser
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from tenants.models import Tenant, Tier
from tenants.services import tenant_create, tier_create
from usage.models import UsageRecord, WeekReset

pytestmark = [pytest.mark.core, pytest.mark.django_db]

WEEK_ID = "2026-11-23"
NUMBERS = ("requests", "input_tokens", "output_tokens", "total_tokens")
BY = ("tenant", "tier", "model", "provider")
FORMATS = ("table", "csv", "json", "html")


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


TOTAL = "(total)"


def parsed_all(text: str, fmt: str) -> dict[str, dict[str, str]]:
    """The report's rows, by group, as strings (whatever the format), the totals row as
    group "(total)"."""
    if fmt == "json":
        data = json.loads(text)
        rows = [*data["rows"], {"group": TOTAL, **data["totals"]}]
        return {r["group"]: {k: ("" if v is None else str(v)) for k, v in r.items()} for r in rows}
    if fmt == "csv":
        return {r["group"]: r for r in csv.DictReader(io.StringIO(text))}
    if fmt == "html":
        return html_report(text).table
    # The table: a header, the rows, a rule of dashes, the totals row. Empty cells (a tenant
    # without a cap) are runs of spaces, so cells are cut where the rule's dashes say.
    lines = [line for line in text.splitlines() if line.strip() and set(line) != {"-", " "}]
    header_at = next(i for i, line in enumerate(lines) if line.split()[:1] == ["group"])
    columns = lines[header_at].split()
    rule = next(line for line in text.splitlines() if line.startswith("---"))
    widths = [len(dashes) for dashes in rule.split("  ")]
    starts = [sum(widths[:i]) + 2 * i for i in range(len(widths))]
    result = {}
    for line in lines[header_at + 1 :]:
        cells = [line[a : a + w].strip() for a, w in zip(starts, widths, strict=True)]
        assert len(line) <= starts[-1] + widths[-1], f"table row {line!r} overflows"
        result[cells[0]] = dict(zip(columns, cells, strict=True))
    return result


def parsed(text: str, fmt: str) -> dict[str, dict[str, str]]:
    """The report's rows by group, without the totals row."""
    return {g: r for g, r in parsed_all(text, fmt).items() if g != TOTAL}


@dataclass
class HtmlReport:
    """What a person sees on the HTML page: its table (rows by group, commas dropped from
    the numbers) and the bars of each chart (group -> the number the bar stands for)."""

    table: dict[str, dict[str, str]] = field(default_factory=dict)
    charts: dict[str, dict[str, str]] = field(default_factory=dict)
    tags: set[str] = field(default_factory=set)
    links: list[str] = field(default_factory=list)  # every src/href/xlink:href attribute


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.report = HtmlReport()
        self.columns: list[str] = []
        self.row: list[str] | None = None
        self.cell: list[str] | None = None
        self.chart = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.report.tags.add(tag)
        values = dict(attrs)
        self.report.links += [v or "" for k, v in attrs if k in ("src", "href", "xlink:href")]
        if tag == "tr":
            self.row = []
        elif tag in ("td", "th"):
            self.cell = []
        elif tag == "svg":
            self.chart = values.get("data-chart") or ""
            self.report.charts[self.chart] = {}
        elif tag == "g" and "data-group" in values:
            self.report.charts[self.chart][values["data-group"] or ""] = values["data-value"] or ""

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.cell.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self.cell is not None and self.row is not None:
            self.row.append("".join(self.cell).strip())
            self.cell = None
        elif tag == "tr" and self.row is not None:
            if not self.columns:
                self.columns = self.row
            else:
                cells = [c.replace(",", "") for c in self.row]
                self.report.table[self.row[0]] = dict(zip(self.columns, cells, strict=True))
            self.row = None


def html_report(text: str) -> HtmlReport:
    page = _Page()
    page.feed(text)
    page.close()
    return page.report


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


# --- the totals row, fixed precision, cap use net of resets, the HTML page -----------------


def grand_total(rows: list[Row]) -> dict[str, Any]:
    return {
        "requests": len(rows),
        "input_tokens": sum(r.input_tokens for r in rows),
        "output_tokens": sum(r.output_tokens for r in rows),
        "total_tokens": sum(r.input_tokens + r.output_tokens for r in rows),
        "cost_usd": sum((r.cost_usd for r in rows), Decimal(0)),
    }


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("by", BY)
def test_it_ends_every_format_with_a_totals_row(
    ledger: dict[str, Tenant], by: str, fmt: str
) -> None:
    got = parsed_all(report("--week", "2026-W48", "--by", by, "--format", fmt), fmt)
    assert_totals({TOTAL: got[TOTAL]}, {TOTAL: grand_total(IN_WEEK)})
    assert got[TOTAL]["cost_usd"] == "0.181123466"


def test_it_totals_a_range_in_json_even_when_empty(ledger: dict[str, Tenant]) -> None:
    data = json.loads(report("--week", "2026-W50", "--format", "json"))
    assert data["totals"]["requests"] == 0
    assert data["totals"]["cost_usd"] == "0.000000000"  # fixed precision, even for nothing


@pytest.mark.parametrize("fmt", FORMATS)
def test_it_shows_every_cost_at_nine_decimals(ledger: dict[str, Tenant], fmt: str) -> None:
    # Bob's three cents and a half of a cent: at nine decimals, with the trailing zeros.
    Tier.objects.filter(slug="max").update(weekly_cost_cap_usd=Decimal("0.5"))
    UsageRecord.objects.filter(request_id="req-4").update(cost_usd=Decimal("0.2"))
    got = parsed_all(report("--week", "2026-W48", "--format", fmt), fmt)
    nine = re.compile(r"^\d+\.\d{9}$")
    for group, values in got.items():
        for name in ("cost_usd", "forgiven_cost_usd", "cost_cap_usd"):
            if values.get(name):
                assert nine.match(values[name]), (group, name, values[name])
    assert got["bob"]["cost_usd"] == "0.226000006"
    assert got["bob"]["cost_cap_usd"] == "0.500000000"
    assert got["alice"]["cost_cap_usd"] == "0.010000000"
    assert got["alice"]["forgiven_cost_usd"] == "0.000000000"


# Alice's resets this week forgave 1,468 tokens and $0.003123460 of her 2,468 and
# $0.005123460: net, 1,000 of 10,000 tokens (10 %) and $0.002 of $0.01 (20 %). A reset in
# another week forgives nothing here.
FORGIVEN = [(1000, "0.003000000"), (468, "0.000123460")]


@pytest.fixture
def resets(ledger: dict[str, Tenant]) -> None:
    alice = ledger["alice"]
    for tokens, cost in FORGIVEN:
        WeekReset.objects.create(tenant=alice, week=WEEK_ID, tokens=tokens, cost_usd=cost)
    WeekReset.objects.create(tenant=alice, week="2026-11-16", tokens=99, cost_usd="0.5")


@pytest.mark.usefixtures("resets")
@pytest.mark.parametrize("fmt", FORMATS)
def test_it_reports_cap_use_net_of_staff_resets(ledger: dict[str, Tenant], fmt: str) -> None:
    totals = expected_totals(IN_WEEK, "tenant")["alice"]
    forgiven_tokens = sum(t for t, _ in FORGIVEN)
    forgiven_cost = sum((Decimal(c) for _, c in FORGIVEN), Decimal(0))
    net_tokens = totals["total_tokens"] - forgiven_tokens
    net_cost = totals["cost_usd"] - forgiven_cost
    assert (net_tokens, net_cost) == (1000, Decimal("0.002"))  # what the comment says

    got = parsed_all(report("--week", "2026-W48", "--format", fmt), fmt)
    alice, bob = got["alice"], got["bob"]
    assert int(alice["total_tokens"]) == totals["total_tokens"]  # the ledger is as it was
    assert int(alice["forgiven_tokens"]) == forgiven_tokens
    assert Decimal(alice["forgiven_cost_usd"]) == forgiven_cost
    assert float(alice["token_cap_used_pct"]) == 100 * net_tokens / TOKEN_CAP["auto"] == 10.0
    assert float(alice["cost_cap_used_pct"]) == float(100 * net_cost / COST_CAP["auto"]) == 20.0
    assert int(alice["token_cap"]) == 10_000
    # Bob had no reset: his use is gross, as before.
    assert float(bob["token_cap_used_pct"]) == CAP_PERCENT["bob"]["token_cap_used_pct"]
    assert int(bob["forgiven_tokens"]) == 0
    # The totals row adds up the forgiven amounts, and leaves the per-tenant caps empty.
    assert int(got[TOTAL]["forgiven_tokens"]) == forgiven_tokens
    assert got[TOTAL]["token_cap"] == got[TOTAL]["token_cap_used_pct"] == ""


@pytest.mark.usefixtures("resets")
def test_it_leaves_resets_out_of_a_date_range(ledger: dict[str, Tenant]) -> None:
    # Caps are weekly: a range has no cap use, and nothing to net.
    rows = json.loads(report("--from", "2026-11-23", "--to", "2026-11-29", "--format", "json"))
    assert all("forgiven_tokens" not in row for row in rows["rows"])


def test_it_never_reports_negative_cap_use(ledger: dict[str, Tenant]) -> None:
    WeekReset.objects.create(tenant=ledger["bob"], week=WEEK_ID, tokens=10**9, cost_usd="9")
    row = parsed(report("--week", "2026-W48", "--format", "csv"), "csv")["bob"]
    assert (row["token_cap_used_pct"], row["cost_cap_used_pct"]) == ("0.0", "0.0")


@pytest.mark.usefixtures("resets")
@pytest.mark.parametrize("by", BY)
def test_it_renders_a_standalone_html_page_with_the_same_numbers(
    ledger: dict[str, Tenant], by: str
) -> None:
    text = report("--week", "2026-W48", "--by", by, "--format", "html")
    page = html_report(text)
    csv_rows = parsed_all(report("--week", "2026-W48", "--by", by, "--format", "csv"), "csv")
    assert page.table == csv_rows  # every number of the CSV, the totals row included
    assert_totals(parsed(text, "html"), expected_totals(IN_WEEK, by))
    # Bars: one per group, standing for that group's tokens and cost.
    want = expected_totals(IN_WEEK, by)
    assert page.charts["tokens"] == {g: str(t["total_tokens"]) for g, t in want.items()}
    assert {g: Decimal(v) for g, v in page.charts["cost"].items()} == {
        g: t["cost_usd"] for g, t in want.items()
    }
    if by == "tenant":  # the caps chart: each tenant's use, net of resets
        assert page.charts["caps"] == {
            "alice tokens": "10.0",
            "alice cost": "20.0",
            "bob tokens": "55.0",
            "bob cost": "17.6",
        }
    else:
        assert "caps" not in page.charts
    # Standalone: no script, stylesheet, image or font fetched from anywhere.
    assert page.links == []
    assert not page.tags & {"script", "link", "img", "iframe", "object", "embed"}
    assert "url(" not in text and "@import" not in text
    assert text.lstrip().startswith("<!DOCTYPE html>")


def test_it_draws_bars_to_scale(ledger: dict[str, Tenant]) -> None:
    text = report("--week", "2026-W48", "--format", "html")
    widths: dict[str, float] = {}
    chart = text[text.index('data-chart="cost"') :]
    chart = chart[: chart.index("</svg>")]
    for group, body in re.findall(r'data-group="(\w+)"[^>]*>(.*?)</g>', chart, re.S):
        widths[group] = sum(float(w) for w in re.findall(r'<rect [^>]*width="([\d.]+)"', body))
    totals = expected_totals(IN_WEEK, "tenant")
    ratio = float(totals["alice"]["cost_usd"] / totals["bob"]["cost_usd"])
    assert widths["alice"] / widths["bob"] == pytest.approx(ratio, abs=0.01)


def test_it_escapes_what_the_ledger_holds_on_the_html_page(ledger: dict[str, Tenant]) -> None:
    UsageRecord.objects.filter(request_id="req-0").update(model="<script>alert(1)</script>")
    text = report("--week", "2026-W48", "--by", "model", "--format", "html")
    assert "<script>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text


def test_it_says_so_when_the_html_period_is_empty(ledger: dict[str, Tenant]) -> None:
    page = html_report(report("--week", "2026-W50", "--format", "html"))
    assert page.table == {} and page.charts == {}
