from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

import core.redis
from tenants.models import Tenant
from usage.services import counters_rebuild
from usage.weeks import iso_week

# The counters are only shared through Redis: without it they live inside each process.
EMBEDDED_STORE = (
    "REDIS_URL is not set: the counters live inside each proxy process (the embedded store), "
    "so this command would act on a store no server shares. Set REDIS_URL to the Redis the "
    "proxy uses."
)


class Command(BaseCommand):
    help = "Rebuild the weekly usage counters in Redis from the database ledger."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--tenant", help="One tenant's slug (default: every tenant).")
        parser.add_argument("--week", help="An ISO week such as 2026-W48 (default: this week).")

    def handle(self, *args: Any, tenant: str | None, week: str | None, **options: Any) -> None:
        # Looked up on its module: tests that call this in the very process holding the
        # embedded store patch it.
        if core.redis.embedded():
            raise CommandError(EMBEDDED_STORE)
        try:
            target = iso_week(week) if week else None
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        tenants = Tenant.objects.all()
        if tenant:
            tenants = tenants.filter(slug=tenant)
            if not tenants.exists():
                raise CommandError(f"No tenant {tenant!r}.")
        count = 0
        for found in tenants.iterator():
            counters_rebuild(tenant=found, week=target)
            count += 1
        self.stdout.write(self.style.SUCCESS(f"Rebuilt the counters of {count} tenant(s)."))
