"""Any change to what a tenant context is built from drops the cached contexts."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models.signals import post_delete, post_save

from routing.context import context_cache
from routing.models import ModelRoute, Provider, ProviderKey
from tenants.models import Tenant, Tier
from usage.counters import bump_config_generation, key_health_clear


def _changed() -> None:
    context_cache.invalidate()  # this process: at once
    bump_config_generation()  # every other process: at its next generation check


def _invalidate(**kwargs: Any) -> None:
    # After commit, or another process could reload the old rows and cache them again.
    transaction.on_commit(_changed)


def _key_saved(instance: ProviderKey, **kwargs: Any) -> None:
    if instance.enabled:
        # Staff (or a config file) turned it on, or gave it a new secret: whatever the proxy
        # concluded about the old state no longer holds.
        transaction.on_commit(lambda: key_health_clear(instance.pk))


post_save.connect(_key_saved, sender=ProviderKey, dispatch_uid="key-health-clear")

for _model in (Tier, Tenant, Provider, ProviderKey, ModelRoute):
    post_save.connect(_invalidate, sender=_model, dispatch_uid=f"ctx-save-{_model.__name__}")
    post_delete.connect(_invalidate, sender=_model, dispatch_uid=f"ctx-delete-{_model.__name__}")
