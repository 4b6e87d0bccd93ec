"""The API's reads: tenants, tiers, routes, and usage from the counters and the ledger."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db.models import Count, Q, QuerySet, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from api.errors import ApiError
from routing.models import ModelRoute
from tenants.models import Tenant, Tier
from usage.bill import NANOS
from usage.ledger import week_usage
from usage.models import UsageRecord, WeekReset
from usage.selectors import tenants_week_usage
from usage.weeks import Week, iso_week, week_of


def _not_found(what: str, slug: str) -> ApiError:
    return ApiError(404, "not_found", f"No {what} {slug!r}.")


def tenants(*, status: str | None = None, tier: str | None = None) -> QuerySet[Tenant]:
    rows = Tenant.objects.select_related("tier", "deactivation").order_by("slug")
    if status == "active":
        rows = rows.filter(status=Tenant.Status.ACTIVE)
    elif status == "suspended":
        rows = rows.filter(status=Tenant.Status.SUSPENDED, deactivation__isnull=True)
    elif status == "deactivated":
        rows = rows.filter(status=Tenant.Status.SUSPENDED, deactivation__isnull=False)
    if tier:
        rows = rows.filter(tier__slug=tier)
    return rows


def tenant_get(*, slug: str) -> Tenant:
    tenant = Tenant.objects.select_related("tier", "deactivation").filter(slug=slug).first()
    if tenant is None:
        raise _not_found("tenant", slug)
    return tenant


def tiers() -> QuerySet[Tier]:
    return Tier.objects.order_by("slug")


def tier_get(*, slug: str) -> Tier:
    tier = Tier.objects.filter(slug=slug).first()
    if tier is None:
        raise _not_found("tier", slug)
    return tier


def routes(*, tier: str | None = None, model: str | None = None) -> QuerySet[ModelRoute]:
    rows = ModelRoute.objects.select_related("tier", "provider").order_by(
        "tier__slug", "model", "priority", "pk"
    )
    if tier:
        rows = rows.filter(tier__slug=tier)
    if model:
        rows = rows.filter(model=model)
    return rows


def route_get(*, route_id: int) -> ModelRoute:
    route = ModelRoute.objects.select_related("tier", "provider").filter(pk=route_id).first()
    if route is None:
        raise ApiError(404, "not_found", f"No route {route_id}.")
    return route


# --- usage ---------------------------------------------------------------------------------


def parse_week(value: str | None) -> Week:
    """A usage week from ``2026-W48`` (ISO week) or any date in it (``2026-11-25``);
    none: this week."""
    if not value:
        return week_of(timezone.now())
    try:
        if "-W" in value:
            return iso_week(value)
        day = date.fromisoformat(value)
        # Noon of that day where weeks are counted: the week holding it there.
        return week_of(
            datetime.combine(day, time(12), tzinfo=ZoneInfo(settings.PROXY_WEEK_TIMEZONE))
        )
    except (ValueError, OverflowError):
        raise ApiError(
            400, "invalid_week", f"{value!r} is not a week: give 2026-W48 or a date in the week."
        ) from None


@dataclass(frozen=True)
class TenantWeek:
    tenant: str
    week: str
    starts_at: datetime
    ends_at: datetime
    tokens: int
    cost_usd: Decimal
    reserved_tokens: int
    forgiven_tokens: int
    forgiven_cost_usd: Decimal
    weekly_token_cap: int | None
    weekly_cost_cap_usd: Decimal | None
    live: bool


def tenant_week(*, tenant: Tenant, week: Week) -> TenantWeek:
    """A tenant's use of its caps in ``week``, net of staff resets: live from the counters
    for this week (what the proxy enforces), from the ledger for any other."""
    if week == week_of(timezone.now()):
        usage = tenants_week_usage(tenants=[tenant], week=week)[tenant.pk]
        tokens, cost, reserved, live = (
            usage.tokens,
            usage.cost_usd,
            usage.reserved_tokens,
            usage.live,
        )
    else:
        tokens, nanos = week_usage(tenant_id=tenant.pk, week=week, include_uncounted=True)
        cost, reserved, live = Decimal(nanos) / NANOS, 0, False
    forgiven = WeekReset.objects.filter(tenant=tenant, week=week.id).aggregate(
        tokens=Coalesce(Sum("tokens"), 0), cost=Coalesce(Sum("cost_usd"), Decimal(0))
    )
    return TenantWeek(
        tenant=tenant.slug,
        week=week.id,
        starts_at=week.start,
        ends_at=week.end,
        tokens=tokens,
        cost_usd=cost,
        reserved_tokens=reserved,
        forgiven_tokens=forgiven["tokens"],
        forgiven_cost_usd=forgiven["cost"],
        weekly_token_cap=tenant.weekly_token_cap,
        weekly_cost_cap_usd=tenant.weekly_cost_cap_usd,
        live=live,
    )


def tenant_models(*, tenant: Tenant, week: Week) -> list[dict[str, object]]:
    """The tenant's ledger in ``week``, one row per model it asked for."""
    rows = (
        UsageRecord.objects.filter(tenant=tenant, week=week.id)
        .values("model")
        .annotate(
            requests=Count("pk"),
            errors=Count("pk", filter=~Q(status=UsageRecord.Status.OK)),
            input_tokens=Coalesce(Sum("input_tokens"), 0),
            output_tokens=Coalesce(Sum("output_tokens"), 0),
            cache_read_tokens=Coalesce(Sum("cache_read_tokens"), 0),
            cache_write_tokens=Coalesce(Sum("cache_write_tokens"), 0),
            reasoning_tokens=Coalesce(Sum("reasoning_tokens"), 0),
            cost_usd=Coalesce(Sum("cost_usd"), Decimal(0)),
        )
        .order_by("model")
    )
    return list(rows)


def records(
    *,
    tenant: str | None = None,
    model: str | None = None,
    status: str | None = None,
    week: Week | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> QuerySet[UsageRecord]:
    rows = UsageRecord.objects.select_related("tenant", "tier")
    if tenant:
        rows = rows.filter(tenant__slug=tenant)
    if model:
        rows = rows.filter(model=model)
    if status:
        rows = rows.filter(status=status)
    if week is not None:
        rows = rows.filter(week=week.id)
    if since is not None:
        rows = rows.filter(created_at__gte=since)
    if until is not None:
        rows = rows.filter(created_at__lt=until)
    return rows
