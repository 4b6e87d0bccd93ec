"""Any change to what a tenant context is built from drops the cached contexts."""

from __future__ import annotations

from typing import Any

from django.db.models.signals import post_delete, post_save

from routing.context import context_cache
from routing.models import ModelRoute, Provider, ProviderKey
from tenants.models import Tenant, Tier


def _invalidate(**kwargs: Any) -> None:
    context_cache.invalidate()


for _model in (Tier, Tenant, Provider, ProviderKey, ModelRoute):
    post_save.connect(_invalidate, sender=_model, dispatch_uid=f"ctx-save-{_model.__name__}")
    post_delete.connect(_invalidate, sender=_model, dispatch_uid=f"ctx-delete-{_model.__name__}")
