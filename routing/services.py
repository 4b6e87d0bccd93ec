"""Writes to providers, pooled keys and routes."""

from __future__ import annotations

from decimal import Decimal

from django.db import transaction
from django.views.decorators.debug import sensitive_variables

from routing import keyring
from routing.models import ModelRoute, Provider, ProviderKey
from tenants.models import Tier


def provider_create(
    *,
    slug: str,
    kind: str,
    base_url: str,
    connect_timeout: float = 5.0,
    first_byte_timeout: float = 60.0,
    idle_timeout: float = 60.0,
    total_timeout: float = 600.0,
) -> Provider:
    provider = Provider(
        slug=slug,
        kind=kind,
        base_url=base_url,
        connect_timeout=connect_timeout,
        first_byte_timeout=first_byte_timeout,
        idle_timeout=idle_timeout,
        total_timeout=total_timeout,
    )
    provider.full_clean()
    provider.save()
    return provider


@sensitive_variables("secret")
def provider_key_create(
    *, provider: Provider, label: str, secret: str, weight: int = 1, enabled: bool = True
) -> ProviderKey:
    key = ProviderKey(provider=provider, label=label, weight=weight, enabled=enabled)
    key.secret_ciphertext, key.last4 = keyring.seal(secret)
    key.full_clean()
    key.save()
    return key


def provider_keys_rotate_encryption() -> tuple[int, int]:
    """Re-encrypt every stored key with the newest encryption key.

    Returns (re-encrypted, already current). All or nothing: a key that no configured
    encryption key can open aborts the whole rotation (keyring.KeyringError).
    """
    rotated = current = 0
    with transaction.atomic():
        for key in ProviderKey.objects.select_for_update().order_by("pk"):
            if keyring.is_sealed_with_newest(key.secret_ciphertext):
                current += 1
                continue
            key.secret_ciphertext = keyring.reseal(key.secret_ciphertext)
            key.save(update_fields=["secret_ciphertext", "updated_at"])
            rotated += 1
    return rotated, current


def route_create(
    *,
    tier: Tier,
    model: str,
    provider: Provider,
    upstream_model: str,
    priority: int = 0,
    input_usd_per_mtok: Decimal = Decimal(0),
    output_usd_per_mtok: Decimal = Decimal(0),
) -> ModelRoute:
    route = ModelRoute(
        tier=tier,
        model=model,
        provider=provider,
        upstream_model=upstream_model,
        priority=priority,
        input_usd_per_mtok=input_usd_per_mtok,
        output_usd_per_mtok=output_usd_per_mtok,
    )
    route.full_clean()
    route.save()
    return route
