"""The admin of providers, pooled keys and routes.

Saves and deletes go through the services, like every other write: they validate, seal a
typed-in secret, and announce the change so that every process drops its cached contexts.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from django import forms
from django.contrib import admin
from django.db import transaction
from django.db.models import Count, QuerySet
from django.http import HttpRequest
from django.utils.decorators import method_decorator
from django.views.decorators.debug import sensitive_post_parameters, sensitive_variables

from core.adminutils import adopt, form_changes
from routing import services
from routing.health import key_health_get
from routing.models import ModelAlias, ModelRoute, Provider, ProviderKey


@admin.register(Provider)
class ProviderAdmin(admin.ModelAdmin[Provider]):
    list_display = (
        "slug",
        "kind",
        "base_url",
        "enabled",
        "responses_api",
        "connect_timeout",
        "first_byte_timeout",
        "idle_timeout",
        "total_timeout",
    )
    list_filter = ("kind", "enabled")
    search_fields = ("slug", "base_url")
    readonly_fields = ("created_at", "updated_at")

    def save_model(
        self, request: HttpRequest, obj: Provider, form: forms.ModelForm[Provider], change: bool
    ) -> None:
        if change:
            services.provider_update(provider=obj, **form_changes(form))
        else:
            adopt(obj, services.provider_create(**form.cleaned_data))

    def delete_model(self, request: HttpRequest, obj: Provider) -> None:
        services.provider_delete(provider=obj)

    @transaction.atomic
    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Provider]) -> None:
        for provider in queryset:
            services.provider_delete(provider=provider)


class ProviderKeyForm(forms.ModelForm[ProviderKey]):
    """The secret is write-only: typed in, sealed by the service, never rendered back."""

    secret = forms.CharField(
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text="Leave empty to keep the current key.",
    )

    class Meta:
        model = ProviderKey
        fields = ("provider", "label", "weight", "enabled")

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if not self.instance.pk and not cleaned.get("secret"):
            self.add_error("secret", "A new key needs its secret.")
        return cleaned


@admin.register(ProviderKey)
class ProviderKeyAdmin(admin.ModelAdmin[ProviderKey]):
    form = ProviderKeyForm
    list_display = (
        "label",
        "provider",
        "masked_secret",
        "weight",
        "state",
        "requests",
        "last_error",
        "last_error_at",
    )
    list_filter = ("provider", "enabled")
    search_fields = ("label", "provider__slug")
    list_select_related = ("provider",)
    readonly_fields = (
        "masked_secret",
        "state",
        "disabled_reason",
        "last_error",
        "last_error_at",
        "created_at",
        "updated_at",
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[ProviderKey]:
        keys: QuerySet[ProviderKey] = super().get_queryset(request)
        return keys.annotate(request_count=Count("usage_records"))

    @admin.display(description="Requests", ordering="request_count")
    def requests(self, key: ProviderKey) -> int:
        return getattr(key, "request_count", 0)

    @admin.display(description="State")
    def state(self, key: ProviderKey) -> str:
        """Healthy, resting after a 429 (shared through Redis), or off."""
        if not key.enabled:
            return f"off: {key.disabled_reason}" if key.disabled_reason else "off"
        shared = key_health_get().get(key.pk, "")
        if shared == "off":
            return "off (being recorded)"
        if shared.startswith("cool:"):
            until = int(shared[5:]) / 1000
            if until > time.time():
                moment = datetime.fromtimestamp(until, tz=UTC).strftime("%H:%M:%S UTC")
                return f"resting until {moment}"
        return "healthy"

    fields = ("provider", "label", "secret", "weight", "enabled", *readonly_fields)

    @method_decorator(sensitive_post_parameters("secret"))
    def changeform_view(self, *args: Any, **kwargs: Any) -> Any:
        return super().changeform_view(*args, **kwargs)

    @admin.display(description="Secret")
    def masked_secret(self, obj: ProviderKey) -> str:
        return obj.masked if obj.last4 else "—"

    @method_decorator(sensitive_variables())
    def save_model(
        self,
        request: HttpRequest,
        obj: ProviderKey,
        form: forms.ModelForm[ProviderKey],
        change: bool,
    ) -> None:
        values = form_changes(form) if change else dict(form.cleaned_data)
        secret = values.pop("secret", "") or None  # empty: keep the current one
        if change:
            services.provider_key_update(key=obj, secret=secret, **values)
        else:
            assert secret is not None  # the form requires one for a new key
            adopt(obj, services.provider_key_create(secret=secret, **values))

    def delete_model(self, request: HttpRequest, obj: ProviderKey) -> None:
        services.provider_key_delete(key=obj)

    @transaction.atomic
    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[ProviderKey]) -> None:
        for key in queryset:
            services.provider_key_delete(key=key)


@admin.register(ModelRoute)
class ModelRouteAdmin(admin.ModelAdmin[ModelRoute]):
    list_display = (
        "tier",
        "model",
        "provider",
        "upstream_model",
        "priority",
        "input_usd_per_mtok",
        "output_usd_per_mtok",
        "cache_read_usd_per_mtok",
        "cache_write_usd_per_mtok",
        "enabled",
    )
    list_filter = ("tier", "provider", "enabled")
    search_fields = ("model", "upstream_model")
    list_select_related = ("tier", "provider")
    readonly_fields = ("created_at", "updated_at")

    def save_model(
        self, request: HttpRequest, obj: ModelRoute, form: forms.ModelForm[ModelRoute], change: bool
    ) -> None:
        if change:
            services.route_update(route=obj, **form_changes(form))
        else:
            adopt(obj, services.route_create(**form.cleaned_data))

    def delete_model(self, request: HttpRequest, obj: ModelRoute) -> None:
        services.route_delete(route=obj)

    @transaction.atomic
    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[ModelRoute]) -> None:
        for route in queryset:
            services.route_delete(route=route)


@admin.register(ModelAlias)
class ModelAliasAdmin(admin.ModelAdmin[ModelAlias]):
    list_display = ("tier", "name", "model", "updated_at")
    list_filter = ("tier",)
    search_fields = ("name", "model")
    list_select_related = ("tier",)
    readonly_fields = ("created_at", "updated_at")

    def save_model(
        self, request: HttpRequest, obj: ModelAlias, form: forms.ModelForm[ModelAlias], change: bool
    ) -> None:
        if change:
            services.alias_update(alias=obj, **form_changes(form))
        else:
            adopt(obj, services.alias_create(**form.cleaned_data))

    def delete_model(self, request: HttpRequest, obj: ModelAlias) -> None:
        services.alias_delete(alias=obj)

    @transaction.atomic
    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[ModelAlias]) -> None:
        for alias in queryset:
            services.alias_delete(alias=alias)
