"""The usage side of the admin: the tenant admin (live week usage, the audited reset and the
other staff actions), and the read-only ledger and audit trail of resets.

The tenant admin lives here, not in tenants/admin.py, because it shows what usage knows
(tenants import nothing from usage). Its saves, deletes and actions go through the services;
each staff action writes one entry in the admin's log for each tenant it changed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, TypeVar

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.models import LogEntry
from django.contrib.admin.views.main import ChangeList
from django.contrib.auth.models import User
from django.db import models, transaction
from django.db.models import QuerySet
from django.forms.formsets import BaseFormSet
from django.http import HttpRequest
from django.utils import timezone

from core.adminutils import adopt, form_changes
from tenants import services as tenant_services
from tenants.models import Tenant, Tier
from usage.models import UsageRecord, WeekReset
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


def _staff(request: HttpRequest) -> User | None:
    return request.user if isinstance(request.user, User) else None


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin[Tenant]):
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

    # --- saves and deletes: through the services ------------------------------------------

    def save_model(
        self, request: HttpRequest, obj: Tenant, form: forms.ModelForm[Tenant], change: bool
    ) -> None:
        if change:
            tenant_services.tenant_update(tenant=obj, **form_changes(form))
        else:
            adopt(obj, tenant_services.tenant_create(**form.cleaned_data))

    def delete_model(self, request: HttpRequest, obj: Tenant) -> None:
        tenant_services.tenant_delete(tenant=obj)

    @transaction.atomic
    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Tenant]) -> None:
        for tenant in queryset:
            tenant_services.tenant_delete(tenant=tenant)

    def construct_change_message(  # type: ignore[override]  # Django also stores plain text
        self,
        request: HttpRequest,
        form: forms.Form,
        formsets: Iterable[BaseFormSet[Any]],
        add: bool = False,
    ) -> list[dict[str, dict[str, list[str]]]] | str:
        """The one log entry of a change-form save: a move to another tier says from which
        tier to which, and the rest is described as Django describes it."""
        message = super().construct_change_message(request, form, formsets, add)
        if add or "tier" not in form.changed_data:
            return message
        assert isinstance(form, forms.ModelForm)
        before = Tier.objects.filter(pk=form.initial["tier"]).first()
        text = f"Moved from tier {before or '?'} to tier {form.instance.tier}."
        others = [name for name in form.changed_data if name != "tier"]
        if others:
            labels = [str(form.fields[name].label or name) for name in others]
            rest = LogEntry(change_message=json.dumps([{"changed": {"fields": labels}}]))
            text = f"{text} {rest.get_change_message()}"
        return text

    # --- staff actions: one log entry per tenant changed ---------------------------------

    @admin.action(description="Suspend selected tenants")
    def suspend(self, request: HttpRequest, queryset: QuerySet[Tenant]) -> None:
        for tenant in queryset:
            tenant_services.tenant_suspend(tenant=tenant, by=_staff(request))
            self.log_change(request, tenant, "Suspended")
        self.message_user(request, f"Suspended {queryset.count()} tenant(s).", messages.SUCCESS)

    @admin.action(description="Activate selected tenants")
    def activate(self, request: HttpRequest, queryset: QuerySet[Tenant]) -> None:
        for tenant in queryset:
            tenant_services.tenant_activate(tenant=tenant, by=_staff(request))
            self.log_change(request, tenant, "Activated")
        self.message_user(request, f"Activated {queryset.count()} tenant(s).", messages.SUCCESS)

    @admin.action(description="Reset this week's usage of selected tenants")
    def reset_week(self, request: HttpRequest, queryset: QuerySet[Tenant]) -> None:
        for tenant in queryset:
            reset = tenant_week_reset(tenant=tenant, by=_staff(request))
            # Audited twice over: the WeekReset row and the admin's own log.
            self.log_change(
                request,
                tenant,
                f"Reset week {reset.week}: forgave {reset.tokens} tokens, ${reset.cost_usd:f}.",
            )
        self.message_user(
            request, f"Reset this week's usage of {queryset.count()} tenant(s).", messages.SUCCESS
        )

    @admin.action(description="Revoke all tokens of selected tenants")
    def revoke_tokens(self, request: HttpRequest, queryset: QuerySet[Tenant]) -> None:
        for tenant in queryset:
            tenant_services.tenant_revoke_tokens(tenant=tenant, by=_staff(request))
            self.log_change(request, tenant, "Revoked all tokens")
        self.message_user(
            request, f"Revoked the tokens of {queryset.count()} tenant(s).", messages.SUCCESS
        )


# --- the ledger and the resets: read only -------------------------------------------------


M = TypeVar("M", bound=models.Model)


class ReadOnlyAdmin(admin.ModelAdmin[M]):
    """Records nobody edits: staff read them, the proxy writes them."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(UsageRecord)
class UsageRecordAdmin(ReadOnlyAdmin[UsageRecord]):
    """The ledger is append-only: staff read it here, nobody edits it."""

    list_display = (
        "created_at",
        "request_id",
        "tenant",
        "model",
        "provider_slug",
        "wire_format",
        "input_tokens",
        "cache_read_tokens",
        "cache_write_tokens",
        "output_tokens",
        "cost_usd",
        "status",
        "latency_ms",
    )
    list_filter = ("status", "usage_invalid", "tier", "provider_slug", "wire_format", "stream")
    search_fields = ("request_id", "tenant__slug", "model")
    date_hierarchy = "created_at"
    list_select_related = ("tenant",)


@admin.register(WeekReset)
class WeekResetAdmin(ReadOnlyAdmin[WeekReset]):
    """The audit trail of forgiven weeks (made with the tenant admin's reset action)."""

    list_display = ("created_at", "tenant", "week", "tokens", "cost_usd", "created_by")
    list_filter = ("week",)
    search_fields = ("tenant__slug",)
