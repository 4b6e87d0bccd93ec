"""Reads of tiers and tenants."""

from __future__ import annotations

from tenants.models import Tenant


def tenant_get(*, slug: str) -> Tenant | None:
    return Tenant.objects.select_related("tier").filter(slug=slug).first()
