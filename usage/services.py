"""Writes to usage state: staff resets and rebuilding counters."""

from __future__ import annotations

from decimal import Decimal

from django.contrib.auth.models import User
from django.utils import timezone

from audit.services import audit_action
from tenants.models import Tenant
from usage import counters
from usage.bill import NANOS
from usage.ledger import drain_tenant, seed_week, week_usage
from usage.models import WeekReset
from usage.weeks import Week, week_of


def counters_rebuild(*, tenant: Tenant, week: Week | None = None) -> None:
    """Rebuild a tenant-week's counters from the ledger, whatever Redis holds now."""
    seed_week(
        counters.sync_client(),
        tenant_id=tenant.pk,
        week=week or week_of(timezone.now()),
        force=True,
    )


def tenant_week_reset(*, tenant: Tenant, by: User | None = None) -> WeekReset:
    """Forgive the tenant's usage so far this week. The ledger stays as it is; the reset is
    recorded (who, when, how much) and the counters are rebuilt net of it."""
    week = week_of(timezone.now())
    client = counters.sync_client()
    # One named audit row, whoever calls (a caller's own audit_action merges with it).
    with audit_action("tenant.week_reset", target=tenant) as audited:
        drain_tenant(client, tenant.pk)
        tokens, nanos = week_usage(tenant_id=tenant.pk, week=week, include_uncounted=True)
        reset = WeekReset.objects.create(
            tenant=tenant,
            week=week.id,
            tokens=max(0, tokens),
            cost_usd=Decimal(max(0, nanos)) / NANOS,
            created_by=by,
        )
        audited.changes.setdefault("week", [None, week.id])
        audited.changes.setdefault("forgiven_tokens", [None, reset.tokens])
        audited.changes.setdefault("forgiven_cost_usd", [None, str(reset.cost_usd)])
    seed_week(client, tenant_id=tenant.pk, week=week, force=True)
    return reset
