from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from tenants import services
from tenants.models import Tenant, Tier


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
    list_display = ("slug", "name", "tier", "status", "token_version", "created_at")
    list_filter = ("status", "tier")
    search_fields = ("slug", "name")
    list_select_related = ("tier",)
    readonly_fields = ("token_version", "created_at", "updated_at")
    actions = ("suspend", "activate", "revoke_tokens")
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
        ("Tokens", {"fields": ("token_version", "created_at", "updated_at")}),
    )

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

    @admin.action(description="Revoke all tokens of selected tenants")
    def revoke_tokens(self, request: HttpRequest, queryset: QuerySet[Tenant]) -> None:
        for tenant in queryset:
            services.tenant_revoke_tokens(tenant=tenant)
        self.message_user(
            request, f"Revoked the tokens of {queryset.count()} tenant(s).", messages.SUCCESS
        )
