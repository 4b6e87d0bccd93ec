"""Writes to providers, pooled keys, routes and model aliases.

Every write to what a tenant context is built from announces the change
(``core.signals.announce_config_change``): the cached contexts of every process are dropped
once the transaction commits. A key staff (or a config file) turned on or gave a new secret
also loses what the proxy concluded about it (resting, refused). A field a create leaves out
takes the model field's default, stated once, on the model.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, TypedDict, Unpack

from django.db import transaction
from django.utils import timezone
from django.views.decorators.debug import sensitive_variables

from core.signals import announce_config_change
from core.writes import apply_changes, save_and_announce
from routing import keyring
from routing.health import key_health_clear
from routing.models import ModelAlias, ModelRoute, Provider, ProviderKey
from tenants.models import Tier


class ProviderFields(TypedDict, total=False):
    """A provider's settings besides slug, kind and base URL (left out: the field's default)."""

    connect_timeout: float
    first_byte_timeout: float
    idle_timeout: float
    total_timeout: float
    enabled: bool
    responses_api: bool


class ProviderChanges(ProviderFields, total=False):
    slug: str
    kind: str
    base_url: str


class KeyFields(TypedDict, total=False):
    weight: int
    enabled: bool


class KeyChanges(KeyFields, total=False):
    provider: Provider
    label: str


class RouteFields(TypedDict, total=False):
    priority: int
    input_usd_per_mtok: Decimal
    output_usd_per_mtok: Decimal
    cache_read_usd_per_mtok: Decimal | None
    cache_write_usd_per_mtok: Decimal | None
    enabled: bool


class RouteChanges(RouteFields, total=False):
    tier: Tier
    model: str
    provider: Provider
    upstream_model: str


def _forget_health(key_ids: list[int]) -> None:
    """After commit: the shared resting/refused state of these keys no longer holds."""

    def clear() -> None:
        for key_id in key_ids:
            key_health_clear(key_id)

    transaction.on_commit(clear)


# --- providers ------------------------------------------------------------------------------


def provider_create(
    *, slug: str, kind: str, base_url: str, **fields: Unpack[ProviderFields]
) -> Provider:
    provider = Provider(slug=slug, kind=kind, base_url=base_url, **fields)
    save_and_announce(provider)
    return provider


def provider_update(*, provider: Provider, **changes: Unpack[ProviderChanges]) -> Provider:
    """Set the given fields (and only those); nothing given, nothing written."""
    apply_changes(provider, dict(changes))
    return provider


@transaction.atomic
def provider_delete(*, provider: Provider) -> None:
    """Delete a provider and its keys (refused while routes use it: ProtectedError)."""
    key_ids = list(provider.keys.values_list("pk", flat=True))
    provider.delete()
    _forget_health(key_ids)
    announce_config_change()


# --- pooled keys ----------------------------------------------------------------------------


@sensitive_variables("secret")
def provider_key_create(
    *, provider: Provider, label: str, secret: str, **fields: Unpack[KeyFields]
) -> ProviderKey:
    key = ProviderKey(provider=provider, label=label, **fields)
    key.secret_ciphertext, key.last4 = keyring.seal(secret)
    save_and_announce(key)
    if key.enabled:
        _forget_health([key.pk])  # a key id the shared state may know from a deleted key
    return key


@sensitive_variables("secret")
def provider_key_update(
    *, key: ProviderKey, secret: str | None = None, **changes: Unpack[KeyChanges]
) -> ProviderKey:
    """Set the given fields (and only those) and, given a secret, replace the key's.

    A key switched on loses the reason it was switched off. A key left on by a change (staff
    saving it, a new secret) loses what the proxy concluded about it: it is tried again.
    """
    values: dict[str, Any] = dict(changes)
    if changes.get("enabled", key.enabled) and key.disabled_reason:
        values["disabled_reason"] = ""
    if secret:
        values["secret_ciphertext"], values["last4"] = keyring.seal(secret)
    if apply_changes(key, values) and key.enabled:
        _forget_health([key.pk])
    return key


def provider_key_disable(*, key: ProviderKey, reason: str = "") -> ProviderKey:
    """Switch a key off; ``reason`` (shown to staff) when the proxy does it itself."""
    apply_changes(key, {"enabled": False, "disabled_reason": reason[:200]})
    return key


def provider_key_note_error(*, key_id: int, error: str) -> None:
    """Record a provider's error with a key, for staff. Changes no tenant context (a resting
    key stays in the contexts; the rest is shared through Redis): nothing is announced."""
    ProviderKey.objects.filter(pk=key_id).update(
        last_error=error[:300], last_error_at=timezone.now()
    )


@transaction.atomic
def provider_key_delete(*, key: ProviderKey) -> None:
    key_id = key.pk
    key.delete()
    _forget_health([key_id])
    announce_config_change()


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
        if rotated:
            announce_config_change()  # the contexts hold the ciphertexts
    return rotated, current


# --- routes ---------------------------------------------------------------------------------


def route_create(
    *,
    tier: Tier,
    model: str,
    provider: Provider,
    upstream_model: str,
    **fields: Unpack[RouteFields],
) -> ModelRoute:
    route = ModelRoute(
        tier=tier, model=model, provider=provider, upstream_model=upstream_model, **fields
    )
    save_and_announce(route)
    return route


def route_update(*, route: ModelRoute, **changes: Unpack[RouteChanges]) -> ModelRoute:
    """Set the given fields (and only those); nothing given, nothing written."""
    apply_changes(route, dict(changes))
    return route


def route_delete(*, route: ModelRoute) -> None:
    route.delete()
    announce_config_change()


class AliasChanges(TypedDict, total=False):
    tier: Tier
    name: str
    model: str


def alias_create(*, tier: Tier, name: str, model: str) -> ModelAlias:
    """Let ``tier``'s tenants ask for ``model`` as ``name`` (exact, or a ``prefix*`` pattern)."""
    alias = ModelAlias(tier=tier, name=name, model=model)
    save_and_announce(alias)
    return alias


def alias_update(*, alias: ModelAlias, **changes: Unpack[AliasChanges]) -> ModelAlias:
    apply_changes(alias, dict(changes))
    return alias


def alias_delete(*, alias: ModelAlias) -> None:
    alias.delete()
    announce_config_change()
