"""The tier admin, and what every admin of a model tenant contexts are built from shares.

Admin saves and deletes go through the services, like every other write: they validate,
and they announce the change so that every process drops its cached contexts. (The tenant
admin, which shows live usage, is in usage/admin.py.)
"""

from __future__ import annotations

from typing import Any, TypeVar

from django import forms
from django.contrib import admin
from django.db import models, transaction
from django.db.models import QuerySet
from django.http import HttpRequest

from tenants import services
from tenants.models import Tier

_M = TypeVar("_M", bound=models.Model)


def form_changes(form: forms.ModelForm[Any]) -> dict[str, Any]:
    """What a change form changed: the fields to hand to an update service."""
    return {name: form.cleaned_data[name] for name in form.changed_data}


def adopt(obj: _M, saved: _M) -> None:
    """The admin goes on with its own instance (to log the addition and redirect to it): give
    it what the create service saved, primary key and field defaults included."""
    for model_field in saved._meta.concrete_fields:
        setattr(obj, model_field.attname, getattr(saved, model_field.attname))
    obj._state.adding = False
    obj._state.db = saved._state.db


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
