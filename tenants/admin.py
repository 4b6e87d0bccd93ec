"""The tier admin, and what every admin of a model tenant contexts are built from shares.

Admin saves and deletes go through the services, like every other write: they validate,
and they announce the change so that every process drops its cached contexts. (The tenant
admin, which shows live usage, is in usage/admin.py.)
"""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest

from core.adminutils import adopt, form_changes
from tenants import services
from tenants.models import Tier


@admin.register(Tier)
class TierAdmin(admin.ModelAdmin[Tier]):
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

    def save_model(
        self, request: HttpRequest, obj: Tier, form: forms.ModelForm[Tier], change: bool
    ) -> None:
        if change:
            services.tier_update(tier=obj, **form_changes(form))
        else:
            adopt(obj, services.tier_create(**form.cleaned_data))

    def delete_model(self, request: HttpRequest, obj: Tier) -> None:
        services.tier_delete(tier=obj)

    @transaction.atomic
    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Tier]) -> None:
        for tier in queryset:
            services.tier_delete(tier=tier)
