from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from tenants.selectors import tenant_get
from tenants.services import TokenLifetimeInvalid, TokenSigningUnavailable, token_issue

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_ttl(value: str) -> timedelta:
    match = re.fullmatch(r"(\d+)([smhdw])", value.strip())
    if not match or int(match.group(1)) == 0:
        raise CommandError(f"--ttl {value!r}: expected a number and a unit, e.g. 30m, 12h, 7d.")
    return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


class Command(BaseCommand):
    help = "Print a JWT for TENANT (the token alone on stdout), signed with JWT_SIGNING_JWK."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("tenant", help="The tenant's slug.")
        parser.add_argument("--ttl", default="7d", help="Lifetime: 30m, 12h, 7d, 2w (default 7d).")

    def handle(self, *args: Any, tenant: str, ttl: str, **options: Any) -> None:
        lifetime = parse_ttl(ttl)
        found = tenant_get(slug=tenant)
        if found is None:
            raise CommandError(f"No tenant {tenant!r}.")
        if not found.is_active:
            self.stderr.write(f"warning: tenant {tenant!r} is suspended; the token will get 403.")
        try:
            self.stdout.write(token_issue(tenant=found, ttl=lifetime))
        except (TokenLifetimeInvalid, TokenSigningUnavailable) as exc:
            raise CommandError(str(exc)) from None
