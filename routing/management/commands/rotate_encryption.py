from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from routing.keyring import KeyringError
from routing.services import provider_keys_rotate_encryption


class Command(BaseCommand):
    help = (
        "Re-encrypt every stored provider key with the first key of PROXY_ENCRYPTION_KEYS. "
        "Run it after adding a new first key; then the old keys can be removed."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            rotated, current = provider_keys_rotate_encryption()
        except KeyringError as exc:
            raise CommandError(f"{exc} Nothing was changed.") from None
        self.stdout.write(
            self.style.SUCCESS(f"{rotated} key(s) re-encrypted, {current} already current.")
        )
