from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.utils.decorators import method_decorator
from django.views.decorators.debug import sensitive_post_parameters, sensitive_variables

from routing import keyring
from routing.models import ModelRoute, Provider, ProviderKey


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
    list_display = ("label", "provider", "masked_secret", "weight", "enabled", "updated_at")
    list_filter = ("provider", "enabled")
    search_fields = ("label", "provider__slug")
    list_select_related = ("provider",)
    readonly_fields = ("masked_secret", "created_at", "updated_at")
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
