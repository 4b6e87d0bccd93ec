from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from usage.models import UsageRecord, WeekReset


class ReadOnlyAdmin(admin.ModelAdmin):
    """Records nobody edits: staff read them, the proxy writes them."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(UsageRecord)
class UsageRecordAdmin(ReadOnlyAdmin):
    """The ledger is append-only: staff read it here, nobody edits it."""

    list_display = (
        "created_at",
        "request_id",
        "tenant",
        "model",
        "provider_slug",
        "input_tokens",
        "output_tokens",
        "cost_usd",
        "status",
        "latency_ms",
    )
    list_filter = ("status", "tier", "provider_slug", "stream")
    search_fields = ("request_id", "tenant__slug", "model")
    date_hierarchy = "created_at"
    list_select_related = ("tenant",)


@admin.register(WeekReset)
class WeekResetAdmin(ReadOnlyAdmin):
    """The audit trail of forgiven weeks (made with the tenant admin's reset action)."""

    list_display = ("created_at", "tenant", "week", "tokens", "cost_usd", "created_by")
    list_filter = ("week",)
    search_fields = ("tenant__slug",)
