"""Reads of usage: this week's live counters, and ledger aggregates for reports."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.db.models import Count, F, Q, QuerySet, Sum
from django.db.models.functions import Coalesce

from core.redis import RedisFailure
from tenants.models import Tenant
from usage import counters
from usage.bill import NANOS
from usage.ledger import week_usage
from usage.models import UsageRecord, WeekReset
from usage.weeks import Week


@dataclass(frozen=True)
class WeekUsage:
    tokens: int
    cost_usd: Decimal
    reserved_tokens: int
    live: bool  # read from Redis; False: from the database ledger (Redis unreachable or cold)


def tenants_week_usage(*, tenants: list[Tenant], week: Week) -> dict[int, WeekUsage]:
    """This week's usage per tenant, live from the counters (one round trip for a page)."""
    result: dict[int, WeekUsage] = {}
    try:
        client = counters.sync_client()
        pipe = client.pipeline(transaction=False)
        for tenant in tenants:
            keys = counters.keys_for(tenant.pk, week.id)
            pipe.hmget(keys.week, ["used_tokens", "used_nanos", "seeded"])
            pipe.hget(keys.resv_tot, "tokens")
        replies = pipe.execute()
    except RedisFailure:
        replies = []
    for index, tenant in enumerate(tenants):
        if replies:
            (tokens, nanos, seeded), held = replies[2 * index], replies[2 * index + 1]
            if seeded == b"1":
                result[tenant.pk] = WeekUsage(
                    tokens=int(tokens or 0),
                    cost_usd=Decimal(int(nanos or 0)) / NANOS,
                    reserved_tokens=int(held or 0),
                    live=True,
                )
                continue
        db_tokens, db_nanos = week_usage(tenant_id=tenant.pk, week=week, include_uncounted=True)
        result[tenant.pk] = WeekUsage(
            tokens=db_tokens, cost_usd=Decimal(db_nanos) / NANOS, reserved_tokens=0, live=False
        )
    return result


GROUPS = {
    "tenant": "tenant__slug",
    "tier": "tier__slug",
    "model": "model",
    "provider": "provider_slug",
}


@dataclass(frozen=True)
class ReportRow:
    group: str
    requests: int
    input_tokens: int
    output_tokens: int
    cost_usd: Decimal
    # Parts of input_tokens (cache) and of output_tokens (reasoning), as on UsageRecord.
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    errors: int = 0  # requests that did not end "ok"

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


def _sums() -> dict[str, Any]:
    """The aggregates a report row and a totals line share."""
    return {
        "requests": Count("pk"),
        "errors": Count("pk", filter=~Q(status=UsageRecord.Status.OK)),
        "input_tokens": Coalesce(Sum("input_tokens"), 0),
        "cache_read_tokens": Coalesce(Sum("cache_read_tokens"), 0),
        "cache_write_tokens": Coalesce(Sum("cache_write_tokens"), 0),
        "output_tokens": Coalesce(Sum("output_tokens"), 0),
        "reasoning_tokens": Coalesce(Sum("reasoning_tokens"), 0),
        "cost_usd": Coalesce(Sum("cost_usd"), Decimal(0)),
    }


def usage_report(*, by: str, start: datetime, end: datetime) -> list[ReportRow]:
    """Ledger totals between start (inclusive) and end (exclusive), grouped by ``by``."""
    rows = (
        UsageRecord.objects.filter(created_at__gte=start, created_at__lt=end)
        .values(group=F(GROUPS[by]))
        .annotate(**_sums())
        .order_by("group")
    )
    return [ReportRow(**row) for row in rows]


def records_totals(*, records: QuerySet[UsageRecord]) -> ReportRow:
    """One row of totals over any set of ledger rows (the admin's filtered list, say): one
    query, whatever the set's size."""
    totals = records.order_by().aggregate(**_sums())
    return ReportRow(group="total", **totals)


def report_totals(*, rows: list[ReportRow]) -> ReportRow:
    """The sum of a report's rows (no second query: the rows are the report)."""
    return ReportRow(
        group="total",
        requests=sum(r.requests for r in rows),
        errors=sum(r.errors for r in rows),
        input_tokens=sum(r.input_tokens for r in rows),
        cache_read_tokens=sum(r.cache_read_tokens for r in rows),
        cache_write_tokens=sum(r.cache_write_tokens for r in rows),
        output_tokens=sum(r.output_tokens for r in rows),
        reasoning_tokens=sum(r.reasoning_tokens for r in rows),
        cost_usd=sum((r.cost_usd for r in rows), Decimal(0)),
    )


@dataclass(frozen=True)
class Forgiven:
    tokens: int
    cost_usd: Decimal


def week_forgiven(*, week: Week, slugs: list[str]) -> dict[str, Forgiven]:
    """What staff resets forgave each of these tenants in ``week`` (WeekReset rows, summed):
    a tenant's use of its caps is its ledger usage less this, as the counters count it."""
    rows = (
        WeekReset.objects.filter(week=week.id, tenant__slug__in=slugs)
        .values(slug=F("tenant__slug"))
        .annotate(tokens=Coalesce(Sum("tokens"), 0), cost=Coalesce(Sum("cost_usd"), Decimal(0)))
        .order_by()
    )
    return {row["slug"]: Forgiven(tokens=row["tokens"], cost_usd=row["cost"]) for row in rows}


@dataclass(frozen=True)
class Caps:
    token_cap: int | None
    cost_cap_usd: Decimal | None


def tenant_caps(*, slugs: list[str]) -> dict[str, Caps]:
    """Each tenant's weekly caps in force (its own override, else its tier's)."""
    tenants = Tenant.objects.select_related("tier").filter(slug__in=slugs)
    return {
        t.slug: Caps(token_cap=t.weekly_token_cap, cost_cap_usd=t.weekly_cost_cap_usd)
        for t in tenants
    }


def busiest_tenant_slugs(*, since: datetime, limit: int) -> list[str]:
    """The active tenants with the most requests since `since`, busiest first (what a new
    process loads before it reports ready: the tenants its first requests will come from)."""
    rows = (
        UsageRecord.objects.filter(created_at__gte=since, tenant__status=Tenant.Status.ACTIVE)
        .values("tenant__slug")
        .annotate(requests=Count("id"))
        .order_by("-requests")[:limit]
    )
    return [row["tenant__slug"] for row in rows]
