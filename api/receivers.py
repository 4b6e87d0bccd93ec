"""Model signals the API listens to.

A ``TenantDeactivation`` means "deleted through the API, and not resumed since". Staff
resume a tenant through ``tenants.services.tenant_activate`` (the admin, the console, a
command), which knows nothing of the API: the row is cleared here, whenever a tenant is
saved active, so a later API suspend is an ordinary suspension again.
"""

from __future__ import annotations

from typing import Any

from django.db.models.signals import post_save

from api.models import TenantDeactivation
from tenants.models import Tenant


def _clear_deactivation(
    sender: type[Tenant],
    instance: Tenant,
    created: bool,
    using: str,
    update_fields: frozenset[str] | None = None,
    **kwargs: Any,
) -> None:
    # Only a save that writes the status says what the stored status is: another save of a
    # stale instance (say, update_fields=["name"]) must not resurrect a deactivated tenant.
    if created or not instance.is_active:
        return
    if update_fields is not None and "status" not in update_fields:
        return
    TenantDeactivation.objects.using(using).filter(tenant_id=instance.pk).delete()


def connect() -> None:
    post_save.connect(_clear_deactivation, sender=Tenant, dispatch_uid="api:clear_deactivation")
