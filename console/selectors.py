"""Reads for the staff dashboard: this week per tenant against its caps, the projection,
breakdowns of the ledger, and the 24-hour and 8-week series its charts draw.

"Used" is what admission checks caps against: the live counters, net of staff resets (read
through usage.selectors.tenants_week_usage, which falls back to the ledger net of resets when
the counters are cold). The breakdowns and series read the database ledger, which trails the
counters by the drain interval and counts every request (resets forgive usage, they do not
undo requests).

Percentiles (latency, time to first token): on PostgreSQL in the database, exact, with
``percentile_cont``; elsewhere (SQLite, the zero-setup default) in Python with the same
linear interpolation, over at most ``SAMPLE_LIMIT`` of the window's most recent requests, so a
development database never loads a whole ledger into memory.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db import connection
from django.db.models import Aggregate, Count, F, FloatField, Q, QuerySet, Sum
from django.db.models.functions import Coalesce, TruncHour
from django.utils import dateformat, timezone

from tenants.models import Tenant
from usage.admin import usd
from usage.bill import NANOS, to_nanos
from usage.models import UsageRecord
from usage.selectors import tenants_week_usage, usage_report
from usage.weeks import Week, week_of

# A tenant at or past this share of a cap is shown as near it.
NEAR_PERCENT = 80
SAMPLE_LIMIT = 20_000
RECENT_REQUESTS = 20
TOP_TENANTS = 5

_MICROSECOND = timedelta(microseconds=1)


# --- the projection --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Projection:
    projected: int  # the week's total at the rate so far
    reaches_cap_at: datetime | None  # when the cap is (or was) reached this week at that rate


def project_week(*, used: int, cap: int | None, week: Week, now: datetime) -> Projection:
    """Where a tenant ends the week if it goes on at its rate since the week's start.

    Linear: ``used`` over the time elapsed, extended to the whole week. ``reaches_cap_at`` is
    the moment that line crosses the cap, if it does before the week ends; it is in the past
    (at or before ``now``) for a tenant over its cap already. No cap: never. Times are
    computed in UTC, so a week across a DST change is as long as it really is.
    """
    start, end = week.start.astimezone(UTC), week.end.astimezone(UTC)
    length = (end - start) // _MICROSECOND
    elapsed = min(max((now.astimezone(UTC) - start) // _MICROSECOND, 0), length)
    used = max(used, 0)
    projected = used if elapsed == 0 else (used * length + elapsed // 2) // elapsed
    if cap is None:
        return Projection(projected=projected, reaches_cap_at=None)
    if used >= cap:
        # Reached already: when the line crossed it (at the start for a zero cap).
        crossed = elapsed * max(cap, 0) // used if used else 0
        return Projection(projected=projected, reaches_cap_at=start + crossed * _MICROSECOND)
    if used == 0 or elapsed == 0:
        # Nothing used, or under the cap at the very start: no rate to go by.
        return Projection(projected=projected, reaches_cap_at=None)
    crossing = elapsed * cap // used  # microseconds after the start
    if crossing >= length:
        return Projection(projected=projected, reaches_cap_at=None)
    return Projection(projected=projected, reaches_cap_at=start + crossing * _MICROSECOND)


# --- this week per tenant ------------------------------------------------------------------


def _percent(used: int, cap: int | None) -> float | None:
    if cap is None:
        return None
    if cap <= 0:
        return 100.0 if used <= 0 else float("inf")
    return 100 * used / cap


def _percent_text(percent: float | None) -> str:
    if percent is None:
        return ""
    return "over" if percent == float("inf") else f"{percent:.0f}%"


@dataclass(frozen=True)
class TenantWeek:
    tenant_id: int
    slug: str
    name: str
    tier: str
    status: str
    tokens: int
    token_cap: int | None
    cost_nanos: int
    cost_cap_nanos: int | None
    tokens_projection: Projection
    cost_projection: Projection
    live: bool  # from the counters; False: from the ledger (counters cold or unreachable)

    @property
    def token_percent(self) -> float | None:
        return _percent(self.tokens, self.token_cap)

    @property
    def cost_percent(self) -> float | None:
        return _percent(self.cost_nanos, self.cost_cap_nanos)

    @property
    def token_percent_text(self) -> str:
        return _percent_text(self.token_percent)

    @property
    def cost_percent_text(self) -> str:
        return _percent_text(self.cost_percent)

    @property
    def percent(self) -> float | None:
        """The nearer of the two caps (the one admission refuses on first)."""
        shares = [p for p in (self.token_percent, self.cost_percent) if p is not None]
        return max(shares) if shares else None

    @property
    def zero_cap_text(self) -> str:
        """For a tenant with usage against a cap of 0 (over it by no percentage, so never
        "inf%"): which cap it is over; "" for any other."""
        if self.token_percent == float("inf"):
            return "over its token cap of 0"
        if self.cost_percent == float("inf"):
            return f"over its cost cap of {usd_text(0)}"
        return ""

    @property
    def level(self) -> str:
        """ "over", "near" (>= NEAR_PERCENT) or "ok": what the page highlights."""
        percent = self.percent
        if percent is None or percent < NEAR_PERCENT:
            return "ok"
        return "over" if percent >= 100 else "near"

    @property
    def cost_usd(self) -> Decimal:
        return Decimal(self.cost_nanos) / NANOS

    @property
    def cost_cap_usd(self) -> Decimal | None:
        return None if self.cost_cap_nanos is None else Decimal(self.cost_cap_nanos) / NANOS

    @property
    def cost_text(self) -> str:
        return usd_text(self.cost_nanos)

    @property
    def cost_cap_text(self) -> str:
        return "" if self.cost_cap_nanos is None else usd_text(self.cost_cap_nanos)

    @property
    def projected_cost_text(self) -> str:
        return usd_text(self.cost_projection.projected)

    @property
    def reaches_cap_at(self) -> datetime | None:
        """The earlier of the two caps' crossings."""
        times = [
            p.reaches_cap_at
            for p in (self.tokens_projection, self.cost_projection)
            if p.reaches_cap_at is not None
        ]
        return min(times) if times else None

    @property
    def reaches_cap_text(self) -> str:
        at = self.reaches_cap_at
        if at is None:
            return "no cap" if self.percent is None else "not this week"
        when = dateformat.format(timezone.localtime(at), "D j M H:i")
        return f"reached {when}" if self.level == "over" else when

    def as_json(self) -> dict[str, Any]:
        at = self.reaches_cap_at
        return {
            "id": self.tenant_id,
            "slug": self.slug,
            "name": self.name,
            "tier": self.tier,
            "status": self.status,
            "tokens": self.tokens,
            "token_cap": self.token_cap,
            "cost_nanos": self.cost_nanos,
            "cost_cap_nanos": self.cost_cap_nanos,
            "cost_text": self.cost_text,
            "token_percent_text": self.token_percent_text,
            "cost_percent_text": self.cost_percent_text,
            "projected_cost_text": self.projected_cost_text,
            "percent": self.percent if self.percent != float("inf") else None,
            "level": self.level,
            "projected_tokens": self.tokens_projection.projected,
            "projected_cost_nanos": self.cost_projection.projected,
            "reaches_cap_at": at.isoformat() if at else None,
            "reaches_cap_text": self.reaches_cap_text,
            "live": self.live,
        }


def tenants_this_week(*, week: Week, now: datetime) -> list[TenantWeek]:
    """Every tenant's week so far, the nearest to (or furthest over) a cap first."""
    tenants = list(Tenant.objects.select_related("tier"))
    usage = tenants_week_usage(tenants=tenants, week=week)
    rows = []
    for tenant in tenants:
        used = usage[tenant.pk]
        cost_cap = tenant.weekly_cost_cap_usd
        cost_cap_nanos = None if cost_cap is None else to_nanos(cost_cap)
        cost_nanos = to_nanos(used.cost_usd)
        rows.append(
            TenantWeek(
                tenant_id=tenant.pk,
                slug=tenant.slug,
                name=tenant.name,
                tier=tenant.tier.slug,
                status=tenant.status,
                tokens=used.tokens,
                token_cap=tenant.weekly_token_cap,
                cost_nanos=cost_nanos,
                cost_cap_nanos=cost_cap_nanos,
                tokens_projection=project_week(
                    used=used.tokens, cap=tenant.weekly_token_cap, week=week, now=now
                ),
                cost_projection=project_week(
                    used=cost_nanos, cap=cost_cap_nanos, week=week, now=now
                ),
                live=used.live,
            )
        )
    rows.sort(key=lambda row: (-(row.percent or 0), -row.tokens, row.slug))
    return rows


# --- breakdowns of the ledger --------------------------------------------------------------


@dataclass(frozen=True)
class Breakdown:
    label: str
    requests: int
    tokens: int
    cost_usd: Decimal

    @property
    def cost_text(self) -> str:
        return usd_text(to_nanos(self.cost_usd))


def usage_by(*, by: str, start: datetime, end: datetime) -> list[Breakdown]:
    """Requests, tokens and cost by model, provider or pooled key (its label: never more)."""
    if by in ("model", "provider"):
        report = usage_report(by=by, start=start, end=end)
        rows = [
            Breakdown(
                label=r.group, requests=r.requests, tokens=r.total_tokens, cost_usd=r.cost_usd
            )
            for r in report
        ]
    elif by == "key":
        grouped = (
            UsageRecord.objects.filter(created_at__gte=start, created_at__lt=end)
            .values(provider=F("provider_key__provider__slug"), label=F("provider_key__label"))
            .annotate(
                requests=Count("pk"),
                tokens=Coalesce(Sum(F("input_tokens") + F("output_tokens")), 0),
                cost_usd=Coalesce(Sum("cost_usd"), Decimal(0)),
            )
        )
        rows = [
            Breakdown(
                label=f"{g['provider']}/{g['label']}" if g["label"] else "(deleted key)",
                requests=g["requests"],
                tokens=g["tokens"],
                cost_usd=g["cost_usd"],
            )
            for g in grouped
        ]
    else:
        raise ValueError(f"usage_by: unknown grouping {by!r}")
    rows.sort(key=lambda row: (-row.tokens, -row.requests, row.label))
    return rows


# --- series: requests, errors, percentiles ---------------------------------------------------


class PercentileCont(Aggregate):
    """PostgreSQL's ``percentile_cont(f) WITHIN GROUP (ORDER BY x)`` (NULLs are ignored)."""

    function = "PERCENTILE_CONT"
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()

    def __init__(self, expression: str, *, fraction: float) -> None:
        # Our own constant, formatted as a number: nothing a user gives reaches the SQL.
        super().__init__(expression, fraction=repr(float(fraction)))


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """``percentile_cont``'s linear interpolation, in Python: the same figure on every
    database."""
    if not values:
        return None
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    lower = int(position)
    upper = min(lower + 1, len(ordered) - 1)
    return ordered[lower] + (ordered[upper] - ordered[lower]) * (position - lower)


@dataclass(frozen=True)
class Bucket:
    start: datetime
    label: str
    requests: int = 0
    errors: int = 0
    latency_p50: float | None = None
    latency_p95: float | None = None
    ttft_p50: float | None = None
    ttft_p95: float | None = None


@dataclass(frozen=True)
class Series:
    title: str
    buckets: list[Bucket]
    errors_by_kind: list[tuple[str, int]]  # (kind, count), the most frequent first

    @property
    def requests(self) -> int:
        return sum(b.requests for b in self.buckets)

    @property
    def errors(self) -> int:
        return sum(b.errors for b in self.buckets)


_ERRORS = ~Q(status=UsageRecord.Status.OK)


def _in_database() -> bool:
    return connection.vendor == "postgresql"


def _errors_by_kind(rows: QuerySet[UsageRecord]) -> list[tuple[str, int]]:
    """By the error the client was told (error_code) and the ledger's status."""
    counts = rows.filter(_ERRORS).values("status", "error_code").annotate(n=Count("pk"))
    kinds = [
        (f"{c['error_code']} ({c['status']})" if c["error_code"] else c["status"], c["n"])
        for c in counts
    ]
    return sorted(kinds, key=lambda kind: (-kind[1], kind[0]))


def _series(
    *, title: str, rows: QuerySet[UsageRecord], key: str, starts: list[tuple[Any, datetime, str]]
) -> Series:
    """``rows`` grouped by ``key`` (an annotation or field); ``starts`` names every bucket
    (its key value, start and label), so that empty ones are drawn too."""
    aggregates: dict[str, Any] = {"requests": Count("pk"), "errors": Count("pk", filter=_ERRORS)}
    in_database = _in_database()
    if in_database:
        aggregates.update(
            latency_p50=PercentileCont("latency_ms", fraction=0.5),
            latency_p95=PercentileCont("latency_ms", fraction=0.95),
            ttft_p50=PercentileCont("ttft_ms", fraction=0.5),
            ttft_p95=PercentileCont("ttft_ms", fraction=0.95),
        )
    grouped = rows.values(key).annotate(**aggregates)
    stats: dict[Any, dict[str, Any]] = {g[key]: dict(g) for g in grouped}
    if not in_database:
        latencies: dict[Any, list[float]] = defaultdict(list)
        ttfts: dict[Any, list[float]] = defaultdict(list)
        sample = rows.order_by("-created_at").values_list(key, "latency_ms", "ttft_ms")
        for bucket, latency, ttft in sample[:SAMPLE_LIMIT]:
            latencies[bucket].append(latency)
            if ttft is not None:
                ttfts[bucket].append(ttft)
        for bucket in set(latencies) | set(ttfts):
            stats.setdefault(bucket, {}).update(
                latency_p50=percentile(latencies[bucket], 0.5),
                latency_p95=percentile(latencies[bucket], 0.95),
                ttft_p50=percentile(ttfts[bucket], 0.5),
                ttft_p95=percentile(ttfts[bucket], 0.95),
            )
    buckets = []
    for value, start, label in starts:
        found = stats.get(value, {})
        buckets.append(
            Bucket(
                start=start,
                label=label,
                requests=found.get("requests", 0),
                errors=found.get("errors", 0),
                latency_p50=found.get("latency_p50"),
                latency_p95=found.get("latency_p95"),
                ttft_p50=found.get("ttft_p50"),
                ttft_p95=found.get("ttft_p95"),
            )
        )
    return Series(title=title, buckets=buckets, errors_by_kind=_errors_by_kind(rows))


def last_24_hours(*, now: datetime) -> Series:
    """Hourly, the current (partial) hour last."""
    current = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    hours = [current - timedelta(hours=n) for n in range(23, -1, -1)]
    rows = UsageRecord.objects.filter(created_at__gte=hours[0], created_at__lte=now).annotate(
        hour=TruncHour("created_at", tzinfo=UTC)
    )
    starts = [(hour, hour, hour.strftime("%H:00")) for hour in hours]
    return _series(title="Last 24 hours (UTC, hourly)", rows=rows, key="hour", starts=starts)


def last_weeks(*, now: datetime, count: int = 8) -> Series:
    """By usage week (as the ledger files them), this week last."""
    weeks = [week_of(now)]
    while len(weeks) < count:
        weeks.append(week_of(weeks[-1].start - _MICROSECOND))
    weeks.reverse()
    rows = UsageRecord.objects.filter(
        week__in=[w.id for w in weeks], created_at__gte=weeks[0].start
    )
    starts = [(w.id, w.start, w.start.strftime("%d %b")) for w in weeks]
    return _series(title=f"Last {count} weeks (weekly)", rows=rows, key="week", starts=starts)


# --- recent requests and the whole page --------------------------------------------------------


@dataclass(frozen=True)
class RecentRequest:
    request_id: str
    created_at: datetime
    tenant_id: int
    tenant: str
    model: str
    status: str
    http_status: int
    error_code: str
    tokens: int
    cost_nanos: int
    latency_ms: int
    ttft_ms: int | None

    @property
    def cost_text(self) -> str:
        return usd_text(self.cost_nanos)


def recent_requests(*, limit: int = RECENT_REQUESTS) -> list[RecentRequest]:
    rows = UsageRecord.objects.select_related("tenant").order_by("-created_at")[:limit]
    return [
        RecentRequest(
            request_id=r.request_id,
            created_at=r.created_at,
            tenant_id=r.tenant_id,
            tenant=r.tenant.slug,
            model=r.model,
            status=r.status,
            http_status=r.http_status,
            error_code=r.error_code,
            tokens=r.total_tokens,
            cost_nanos=to_nanos(r.cost_usd),
            latency_ms=r.latency_ms,
            ttft_ms=r.ttft_ms,
        )
        for r in rows
    ]


@dataclass(frozen=True)
class Dashboard:
    now: datetime
    week: Week
    tenants: list[TenantWeek]
    by_model: list[Breakdown]
    by_provider: list[Breakdown]
    by_key: list[Breakdown]
    day: Series
    weeks: Series
    recent: list[RecentRequest]

    @property
    def top_tenants(self) -> list[TenantWeek]:
        active = [t for t in self.tenants if t.tokens > 0 or t.cost_nanos > 0]
        return sorted(active, key=lambda t: (-t.cost_nanos, -t.tokens, t.slug))[:TOP_TENANTS]

    @property
    def flagged(self) -> list[TenantWeek]:
        return [t for t in self.tenants if t.level != "ok"]

    @property
    def tokens(self) -> int:
        return sum(t.tokens for t in self.tenants)

    @property
    def cost_nanos(self) -> int:
        return sum(t.cost_nanos for t in self.tenants)

    @property
    def cost_text(self) -> str:
        return usd_text(self.cost_nanos)


def tenants_snapshot(*, now: datetime) -> dict[str, Any]:
    """The live part of the page, as /admin/dashboard/data.json serves it."""
    week = week_of(now)
    tenants = tenants_this_week(week=week, now=now)
    return {
        "now": now.isoformat(),
        "week": {"id": week.id, "start": week.start.isoformat(), "end": week.end.isoformat()},
        "tokens": sum(t.tokens for t in tenants),
        "cost_nanos": sum(t.cost_nanos for t in tenants),
        "cost_text": usd_text(sum(t.cost_nanos for t in tenants)),
        "tenants": [t.as_json() for t in tenants],
    }


def dashboard(*, now: datetime) -> Dashboard:
    week = week_of(now)
    start, end = week.start, week.end
    return Dashboard(
        now=now,
        week=week,
        tenants=tenants_this_week(week=week, now=now),
        by_model=usage_by(by="model", start=start, end=end),
        by_provider=usage_by(by="provider", start=start, end=end),
        by_key=usage_by(by="key", start=start, end=end),
        day=last_24_hours(now=now),
        weeks=last_weeks(now=now),
        recent=recent_requests(),
    )


def usd_text(nanos: int) -> str:
    """Dollars exactly as the ledger knows them, to the nano-dollar, as the admin shows them
    (``usage.admin.usd``): a request's cost is often under a cent, and a 10-token request
    at $0.02/Mtok ($0.0000002) shown as $0.000000 would be false."""
    return usd(Decimal(nanos).scaleb(-9))
