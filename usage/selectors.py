"""Reads of usage: this week's live counters, and ledger aggregates for reports."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import redis
from django.db.models import Count, F, Sum
from django.db.models.functions import Coalesce

from tenants.models import Tenant
from usage import counters
from usage.bill import NANOS
from usage.ledger import week_usage
from usage.models import UsageRecord
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
    except redis.RedisError:
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

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


def usage_report(*, by: str, start: datetime, end: datetime) -> list[ReportRow]:
    """Ledger totals between start (inclusive) and end (exclusive), grouped by ``by``."""
    rows = (
        UsageRecord.objects.filter(created_at__gte=start, created_at__lt=end)
        .values(group=F(GROUPS[by]))
        .annotate(
            requests=Count("pk"),
            input_tokens=Coalesce(Sum("input_tokens"), 0),
            output_tokens=Coalesce(Sum("output_tokens"), 0),
            cost_usd=Coalesce(Sum("cost_usd"), Decimal(0)),
        )
        .order_by("group")
    )
    return [ReportRow(**row) for row in rows]
