from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.views.main import ChangeList
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from tenants import services
from tenants.models import Tenant, Tier
from usage.selectors import WeekUsage, tenants_week_usage
from usage.services import tenant_week_reset
from usage.weeks import week_of


def _percent(used: float, cap: float | None) -> str:
    return f" ({100 * used / cap:.0f}%)" if cap else ""


def _usage_text(tenant: Tenant, usage: WeekUsage | None) -> str:
    if usage is None:
        return "—"
    token_cap, cost_cap = tenant.weekly_token_cap, tenant.weekly_cost_cap_usd
    tokens = f"{usage.tokens:,} / {token_cap:,} tokens" if token_cap else f"{usage.tokens:,} tokens"
    tokens += _percent(usage.tokens, token_cap)
    cost = f"${usage.cost_usd:.2f}" + (f" / ${cost_cap:.2f}" if cost_cap else "")
    cost += _percent(float(usage.cost_usd), float(cost_cap) if cost_cap else None)
    source = "" if usage.live else " (from the ledger: counters not live)"
    return f"{tokens}; {cost}{source}"


@admin.register(Tier)
class TierAdmin(admin.ModelAdmin):
    list_display = (
        "slug",
        "name",
        "weekly_token_cap",
        "weekly_cost_cap_usd",
        "requests_per_minute",
        "max_concurrent_requests",
    )
    list_filter = ("max_concurrent_requests",)
    search_fields = ("slug", "name")
    readonly_fields = ("created_at", "updated_at")


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    list_display = ("slug", "name", "tier", "status", "this_week", "token_version", "created_at")
    list_filter = ("status", "tier")
    search_fields = ("slug", "name")
    list_select_related = ("tier",)
    readonly_fields = ("this_week", "token_version", "created_at", "updated_at")
    actions = ("suspend", "activate", "revoke_tokens", "reset_week")
    fieldsets = (
        (None, {"fields": ("slug", "name", "tier", "status")}),
        (
            "Limits (empty: the tier's)",
            {
                "fields": (
                    "weekly_token_cap_override",
                    "weekly_cost_cap_usd_override",
                    "requests_per_minute_override",
                    "max_concurrent_requests_override",
                )
            },
        ),
        ("Usage", {"fields": ("this_week",)}),
        ("Tokens", {"fields": ("token_version", "created_at", "updated_at")}),
    )

    def get_changelist_instance(self, request: HttpRequest) -> ChangeList:
        changelist = super().get_changelist_instance(request)
        # One Redis round trip for the whole page, not one per row.
        page = list(changelist.result_list)
        usage = tenants_week_usage(tenants=page, week=week_of(timezone.now()))
        for tenant in page:
            tenant.week_usage = usage.get(tenant.pk)
        return changelist

    @admin.display(description="This week (live)")
    def this_week(self, tenant: Tenant) -> str:
        if not tenant.pk:
            return "—"
        usage: Any = getattr(tenant, "week_usage", None)
        if usage is None:
            usage = tenants_week_usage(tenants=[tenant], week=week_of(timezone.now()))[tenant.pk]
        return _usage_text(tenant, usage)

    @admin.action(description="Suspend selected tenants")
    def suspend(self, request: HttpRequest, queryset: QuerySet[Tenant]) -> None:
        for tenant in queryset:
            services.tenant_suspend(tenant=tenant)
        self.message_user(request, f"Suspended {queryset.count()} tenant(s).", messages.SUCCESS)

    @admin.action(description="Activate selected tenants")
    def activate(self, request: HttpRequest, queryset: QuerySet[Tenant]) -> None:
        for tenant in queryset:
            services.tenant_activate(tenant=tenant)
        self.message_user(request, f"Activated {queryset.count()} tenant(s).", messages.SUCCESS)

    @admin.action(description="Reset this week's usage of selected tenants")
    def reset_week(self, request: HttpRequest, queryset: QuerySet[Tenant]) -> None:
        user = request.user if request.user.is_authenticated else None
        for tenant in queryset:
            reset = tenant_week_reset(tenant=tenant, by=user)
            # Audited twice over: the WeekReset row and the admin's own log.
            self.log_change(
                request,
                tenant,
                f"Reset week {reset.week}: forgave {reset.tokens} tokens, ${reset.cost_usd}.",
            )
        self.message_user(
            request, f"Reset this week's usage of {queryset.count()} tenant(s).", messages.SUCCESS
        )

    @admin.action(description="Revoke all tokens of selected tenants")
    def revoke_tokens(self, request: HttpRequest, queryset: QuerySet[Tenant]) -> None:
        for tenant in queryset:
            services.tenant_revoke_tokens(tenant=tenant)
        self.message_user(
            request, f"Revoked the tokens of {queryset.count()} tenant(s).", messages.SUCCESS
        )
