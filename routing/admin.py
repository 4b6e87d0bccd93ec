from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from django import forms
from django.contrib import admin
from django.db.models import Count, QuerySet
from django.http import HttpRequest
from django.utils.decorators import method_decorator
from django.views.decorators.debug import sensitive_post_parameters, sensitive_variables

from routing import keyring
from routing.models import ModelRoute, Provider, ProviderKey
from usage.counters import key_health_get


@admin.register(Provider)
class ProviderAdmin(admin.ModelAdmin):
    list_display = (
        "slug",
        "kind",
        "base_url",
        "enabled",
        "connect_timeout",
        "first_byte_timeout",
        "idle_timeout",
        "total_timeout",
    )
    list_filter = ("kind", "enabled")
    search_fields = ("slug", "base_url")
    readonly_fields = ("created_at", "updated_at")


class ProviderKeyForm(forms.ModelForm):
    """The secret is write-only: typed in, sealed at once, never rendered back."""

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

    @method_decorator(sensitive_variables("secret"))
    def save(self, commit: bool = True) -> ProviderKey:
        key = super().save(commit=False)
        secret = self.cleaned_data.get("secret")
        if secret:
            key.secret_ciphertext, key.last4 = keyring.seal(secret)
        if commit:
            key.save()
        return key


@admin.register(ProviderKey)
class ProviderKeyAdmin(admin.ModelAdmin):
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
        return super().get_queryset(request).annotate(request_count=Count("usage_records"))

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


@admin.register(ModelRoute)
class ModelRouteAdmin(admin.ModelAdmin):
    list_display = (
        "tier",
        "model",
        "provider",
        "upstream_model",
        "priority",
        "input_usd_per_mtok",
        "output_usd_per_mtok",
        "enabled",
    )
    list_filter = ("tier", "provider", "enabled")
    search_fields = ("model", "upstream_model")
    list_select_related = ("tier", "provider")
    readonly_fields = ("created_at", "updated_at")
