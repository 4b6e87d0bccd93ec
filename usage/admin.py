"""The usage side of the admin: the tenant admin (live week usage, the audited reset and the
other staff actions), and the read-only ledger and audit trail of resets.

The tenant admin lives here, not in tenants/admin.py, because it shows what usage knows
(tenants import nothing from usage). Its saves, deletes and actions go through the services;
each staff action writes one entry in the admin's log for each tenant it changed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from datetime import timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar, cast

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.models import LogEntry
from django.contrib.admin.views.main import ChangeList
from django.contrib.admin.widgets import AutocompleteSelect
from django.contrib.auth.models import User
from django.db import models, transaction
from django.db.models import QuerySet
from django.forms.formsets import BaseFormSet
from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from core.adminutils import adopt, form_changes
from tenants import services as tenant_services
from tenants.models import Tenant, Tier
from usage.models import AlertEvent, UsageRecord, WeekReset
from usage.selectors import WeekUsage, records_totals, tenants_week_usage
from usage.services import tenant_week_reset
from usage.weeks import week_of

if TYPE_CHECKING:
    from django.contrib.admin.filters import _ListFilterChoices


_NANO = Decimal("0.000000001")


def usd(value: Decimal) -> str:
    """A cost as exactly as the ledger knows it (to the nano-dollar), never rounded to a
    cent: "$0.000000123", "$1.50", "$1,234.567". A sub-cent cost shown as $0.00 would be
    false, and most of a gateway's requests cost less than a cent."""
    exact = value.quantize(_NANO)
    sign, digits = ("-", -exact) if exact < 0 else ("", exact)
    whole, _, fraction = f"{digits:,.9f}".partition(".")
    return f"{sign}${whole}.{fraction.rstrip('0').ljust(2, '0')}"


def _percent(used: float, cap: float | None) -> str:
    return f" ({100 * used / cap:.0f}%)" if cap else ""


def _usage_text(tenant: Tenant, usage: WeekUsage | None) -> str:
    if usage is None:
        return "—"
    token_cap, cost_cap = tenant.weekly_token_cap, tenant.weekly_cost_cap_usd
    tokens = f"{usage.tokens:,} / {token_cap:,} tokens" if token_cap else f"{usage.tokens:,} tokens"
    tokens += _percent(usage.tokens, token_cap)
    cost = usd(usage.cost_usd) + (f" / {usd(cost_cap)}" if cost_cap else "")
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


class TenantFilter(admin.FieldListFilter):
    """Filter by tenant with the admin's autocomplete (it searches the tenant admin's
    search fields): a list of every tenant, as the stock related filter shows, does not
    scale to thousands of tenants, and neither does a DISTINCT over the ledger."""

    template = "admin/usage/usagerecord/tenant_filter.html"

    def __init__(
        self,
        field: Any,
        request: HttpRequest,
        params: dict[str, Any],
        model: type[models.Model],
        model_admin: admin.ModelAdmin[Any],
        field_path: str,
    ) -> None:
        self.lookup_kwarg = f"{field_path}__id__exact"
        self.admin_site = model_admin.admin_site
        super().__init__(field, request, params, model, model_admin, field_path)
        self.title = "tenant"
        self.selected: Tenant | None = None
        # Django 5 passes each parameter's values as a list (its stubs still say one string).
        values = cast(list[str], self.used_parameters.get(self.lookup_kwarg) or [])
        if values and values[-1].isdigit():
            self.selected = Tenant.objects.filter(pk=int(values[-1])).first()

    def expected_parameters(self) -> list[str | None]:
        return [self.lookup_kwarg]

    def choices(self, changelist: ChangeList) -> Iterator[_ListFilterChoices]:
        # The form keeps every other filter, the search and the ordering as they are.
        self.hidden = [
            (name, value)
            for name, values in changelist.filter_params.items()
            if name != self.lookup_kwarg
            for value in values
        ]
        widget = AutocompleteSelect(self.field, self.admin_site, attrs={"style": "width: 100%"})
        self.select = forms.ModelChoiceField(
            queryset=Tenant.objects.all(), widget=widget, required=False
        ).widget.render(self.lookup_kwarg, self.selected.pk if self.selected else None)
        yield {
            "selected": self.selected is None,
            "query_string": changelist.get_query_string(remove=[self.lookup_kwarg]),
            "display": "All",
        }
        if self.selected is not None:
            yield {
                "selected": True,
                "query_string": changelist.get_query_string({self.lookup_kwarg: self.selected.pk}),
                "display": str(self.selected),
            }

    @classmethod
    def media(cls, admin_site: admin.AdminSite) -> forms.Media:
        field = UsageRecord._meta.get_field("tenant")
        return AutocompleteSelect(field, admin_site).media


class RecentValuesFilter(admin.AllValuesFieldListFilter):
    """The stock filter by every distinct value, over the last few weeks of the ledger only
    (created_at is indexed): a DISTINCT over the whole ledger on every page load does not
    scale. A value chosen from an older link still filters, and is still listed."""

    recent = timedelta(weeks=8)

    def __init__(
        self,
        field: Any,
        request: HttpRequest,
        params: dict[str, Any],
        model: type[models.Model],
        model_admin: admin.ModelAdmin[Any],
        field_path: str,
    ) -> None:
        super().__init__(field, request, params, model, model_admin, field_path)
        since = timezone.now() - self.recent
        recent = (
            model_admin.get_queryset(request)
            .filter(created_at__gte=since)
            .order_by(field.name)
            .values_list(field.name, flat=True)
            .distinct()
        )
        chosen = [v for v in cast(list[str] | None, self.lookup_val) or [] if v]
        self.lookup_choices = cast(Any, sorted({*recent, *chosen}))


class WeekFilter(admin.SimpleListFilter):
    """The usage week (the ledger's own week column, which caps and resets use): the last
    twelve, newest first, computed from the calendar rather than read from the ledger."""

    title = "week"
    parameter_name = "week"
    shown = 12

    def lookups(
        self, request: HttpRequest, model_admin: admin.ModelAdmin[Any]
    ) -> list[tuple[str, str]]:
        week = week_of(timezone.now())
        choices = []
        for index in range(self.shown):
            label = {0: " (this week)", 1: " (last week)"}.get(index, "")
            choices.append((week.id, f"{week.id}{label}"))
            week = week_of(week.start - timedelta(days=1))
        chosen = self.value()
        if chosen and chosen not in dict(choices):
            choices.append((chosen, chosen))
        return choices

    def queryset(
        self, request: HttpRequest, queryset: QuerySet[UsageRecord]
    ) -> QuerySet[UsageRecord]:
        chosen = self.value()
        return queryset.filter(week=chosen) if chosen else queryset


_TOTALS = [
    ("requests", "requests"),
    ("errors", "errors"),
    ("input_tokens", "input tokens"),
    ("cache_read_tokens", "cache read"),
    ("cache_write_tokens", "cache write"),
    ("output_tokens", "output tokens"),
    ("reasoning_tokens", "reasoning"),
    ("total_tokens", "total tokens"),
]


@admin.register(UsageRecord)
class UsageRecordAdmin(ReadOnlyAdmin[UsageRecord]):
    """The ledger is append-only: staff read it here, nobody edits it. The list shows the
    totals of whatever it is filtered to (templates/admin/usage/usagerecord/change_list.html)."""

    list_display = (
        "created_at",
        "request_id",
        "tenant",
        "model",
        "provider_slug",
        "wire_format",
        "status",
        "http_status",
        "input_tokens",
        "cache_read_tokens",
        "cache_write_tokens",
        "output_tokens",
        "reasoning_tokens",
        "cost",
        "latency_ms",
        "ttft_ms",
        "downgraded_from",
        "error",
    )
    list_filter = (
        ("tenant", TenantFilter),
        "tier",
        ("model", RecentValuesFilter),
        ("provider_slug", RecentValuesFilter),
        "status",
        ("wire_format", RecentValuesFilter),
        WeekFilter,
        "usage_invalid",
        "stream",
    )
    search_fields = ("request_id", "tenant__slug", "model", "error_code")
    date_hierarchy = "created_at"
    list_select_related = ("tenant",)
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "request_id",
                    "created_at",
                    "week",
                    "tenant",
                    "tier",
                    "wire_format",
                    "stream",
                )
            },
        ),
        (
            "Route",
            {
                "fields": (
                    "model",
                    "downgraded_from",
                    "route",
                    "provider_slug",
                    "upstream_model",
                    "provider_key",
                )
            },
        ),
        (
            "Outcome",
            {
                "fields": (
                    "status",
                    "http_status",
                    "error_code",
                    "error_message",
                    "attempts",
                    "latency_ms",
                    "ttft_ms",
                )
            },
        ),
        (
            "Usage",
            {
                "fields": (
                    "input_tokens",
                    "cache_read_tokens",
                    "cache_write_tokens",
                    "output_tokens",
                    "reasoning_tokens",
                    "cost",
                    "usage_reported",
                    "usage_invalid",
                    "counted",
                )
            },
        ),
    )
    readonly_fields = ("cost",)

    @property
    def media(self) -> forms.Media:
        return super().media + TenantFilter.media(self.admin_site)

    @admin.display(description="cost", ordering="cost_usd")
    def cost(self, record: UsageRecord) -> str:
        return usd(record.cost_usd)

    @admin.display(description="error", ordering="error_code")
    def error(self, record: UsageRecord) -> str:
        # What the client was told, after the code that names its kind.
        return ": ".join(part for part in (record.error_code, record.error_message) if part)

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        response = super().changelist_view(request, extra_context)
        # The totals of the filtered set (every page of it), computed once the change list
        # has applied the filters, the search and the date drill-down.
        context = getattr(response, "context_data", None)
        if isinstance(context, dict) and isinstance(context.get("cl"), ChangeList):
            totals = records_totals(records=context["cl"].queryset)
            context["totals"] = [
                (key, label, f"{getattr(totals, key):,}") for key, label in _TOTALS
            ] + [("cost_usd", "cost", usd(totals.cost_usd))]
        return response


@admin.register(WeekReset)
class WeekResetAdmin(ReadOnlyAdmin[WeekReset]):
    """The audit trail of forgiven weeks (made with the tenant admin's reset action)."""

    list_display = ("created_at", "tenant", "week", "tokens", "cost", "created_by")
    list_filter = ("week",)
    search_fields = ("tenant__slug",)

    @admin.display(description="cost forgiven", ordering="cost_usd")
    def cost(self, reset: WeekReset) -> str:
        return usd(reset.cost_usd)


@admin.register(AlertEvent)
class AlertEventAdmin(ReadOnlyAdmin[AlertEvent]):
    """Spend alerts as they fired (usage/alerts.py), with their webhook delivery state."""

    list_display = (
        "created_at",
        "tenant",
        "tier",
        "week",
        "kind",
        "threshold",
        "summary",
        "delivered_at",
        "attempts",
        "last_error",
    )
    list_filter = ("kind", "threshold", "week", ("delivered_at", admin.EmptyFieldListFilter))
    search_fields = ("tenant__slug", "event_id")
    list_select_related = ("tenant", "tier")
