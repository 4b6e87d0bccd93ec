"""Writes to tiers and tenants, and issuing tenant tokens.

Every write to what a tenant context is built from announces the change
(``core.signals.announce_config_change``): the cached contexts of every process are dropped
once the transaction commits. A field a create leaves out takes the model field's default,
stated once, on the model.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, TypedDict, Unpack

import jwt
from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from audit.services import audit_action
from core.signals import announce_config_change
from core.writes import apply_changes, save_and_announce
from tenants.models import Tenant, Tier

logger = logging.getLogger(__name__)


class TokenLifetimeInvalid(ValueError):
    """A token's lifetime is not positive or exceeds JWT_MAX_LIFETIME (it would be refused)."""


class TokenSigningUnavailable(Exception):
    pass


class TierFields(TypedDict, total=False):
    """A tier's settings besides its slug and name (left out: the model field's default)."""

    weekly_token_cap: int | None
    weekly_cost_cap_usd: Decimal | None
    requests_per_minute: int
    max_concurrent_requests: int
    default_max_tokens: int
    rate_limits_fail_open: bool
    alert_thresholds: str
    downgrade_model: str
    downgrade_at_percent: int | None


class TierChanges(TierFields, total=False):
    slug: str
    name: str


class TenantFields(TypedDict, total=False):
    """A tenant's settings besides its slug, name and tier (left out: the field's default)."""

    status: str
    weekly_token_cap_override: int | None
    weekly_cost_cap_usd_override: Decimal | None
    requests_per_minute_override: int | None
    max_concurrent_requests_override: int | None


class TenantChanges(TenantFields, total=False):
    slug: str
    name: str
    tier: Tier


def _by(user: User | None) -> str:
    return f" by {user.get_username()}" if user is not None else ""


def tier_create(*, slug: str, name: str, **fields: Unpack[TierFields]) -> Tier:
    tier = Tier(slug=slug, name=name, **fields)
    save_and_announce(tier)
    return tier


def tier_update(*, tier: Tier, **changes: Unpack[TierChanges]) -> Tier:
    """Set the given fields (and only those); nothing given, nothing written."""
    apply_changes(tier, dict(changes))
    return tier


def tier_delete(*, tier: Tier) -> None:
    """Delete a tier and its routes (refused while tenants are on it: ProtectedError)."""
    tier.delete()
    announce_config_change()


def tenant_create(*, slug: str, name: str, tier: Tier, **fields: Unpack[TenantFields]) -> Tenant:
    tenant = Tenant(slug=slug, name=name, tier=tier, **fields)
    save_and_announce(tenant)
    return tenant


def tenant_update(*, tenant: Tenant, **changes: Unpack[TenantChanges]) -> Tenant:
    """Set the given fields (and only those), a move to another tier included."""
    apply_changes(tenant, dict(changes))
    return tenant


def tenant_delete(*, tenant: Tenant) -> None:
    tenant.delete()
    announce_config_change()


def tenant_suspend(*, tenant: Tenant, by: User | None = None) -> Tenant:
    """Every request of the tenant is refused (403 tenant_suspended) until it is activated."""
    # One named audit row, whoever calls (the console, an admin action, a command); a
    # caller's own audit_action around this merges with it.
    with audit_action("tenant.suspended", target=tenant):
        apply_changes(tenant, {"status": Tenant.Status.SUSPENDED})
    logger.info("tenant %s suspended%s", tenant.slug, _by(by))
    return tenant


def tenant_activate(*, tenant: Tenant, by: User | None = None) -> Tenant:
    with audit_action("tenant.resumed", target=tenant):
        apply_changes(tenant, {"status": Tenant.Status.ACTIVE})
    logger.info("tenant %s activated%s", tenant.slug, _by(by))
    return tenant


@transaction.atomic
def tenant_revoke_tokens(*, tenant: Tenant, by: User | None = None) -> Tenant:
    """Bump token_version: every token issued before stops working."""
    # In the database, not from this instance: two revocations at once both count. update()
    # sends no model signal: the named audit row is this service's to write.
    with audit_action("tenant.tokens_revoked", target=tenant):
        Tenant.objects.filter(pk=tenant.pk).update(
            token_version=F("token_version") + 1, updated_at=timezone.now()
        )
    tenant.refresh_from_db(fields=["token_version", "updated_at"])
    announce_config_change()  # update() sends no model signal: the service says so itself
    logger.info("tenant %s: all tokens revoked%s", tenant.slug, _by(by))
    return tenant


@dataclass(frozen=True)
class IssuedToken:
    """A token just signed, to be handed over once: the proxy keeps no copy of it."""

    token: str = field(repr=False)  # never in a repr: reprs end up in logs and tracebacks
    expires_at: datetime
    jti: str  # the token's id: what a log or an audit row may name instead of the token


def tenant_token_issue(
    *, tenant: Tenant, ttl: timedelta, signing_jwk: str | None = None, by: User | None = None
) -> IssuedToken:
    """A JWT for ``tenant`` signed with JWT_SIGNING_JWK, and when it expires.

    It carries the tenant's current token_version, so "revoke all" stops it too.
    """
    seconds = int(ttl.total_seconds())
    if not 0 < seconds <= settings.JWT_MAX_LIFETIME:
        raise TokenLifetimeInvalid(
            f"A token lives between 1 second and JWT_MAX_LIFETIME ({settings.JWT_MAX_LIFETIME} "
            f"seconds); {seconds} seconds asked."
        )
    raw = signing_jwk or settings.JWT_SIGNING_JWK
    if not raw:
        raise TokenSigningUnavailable(
            "JWT_SIGNING_JWK is not set: this proxy only verifies tokens. "
            "Issue them where the signing key lives."
        )
    text = raw if raw.lstrip().startswith("{") else Path(raw).read_text()
    jwk: dict[str, Any] = json.loads(text)
    key = jwt.PyJWK(jwk, algorithm=jwk["alg"])
    now = int(time.time())
    jti = uuid.uuid4().hex
    claims = {
        "sub": tenant.slug,
        "aud": settings.JWT_AUDIENCE,
        "iss": settings.JWT_ISSUER,
        "iat": now,
        "exp": now + seconds,
        "jti": jti,
        "ver": tenant.token_version,
    }
    token = jwt.encode(claims, key.key, algorithm=jwk["alg"], headers={"kid": jwk["kid"]})
    expires_at = datetime.fromtimestamp(now + seconds, tz=UTC)
    logger.info("tenant %s: token %s issued, expires %s%s", tenant.slug, jti, expires_at, _by(by))
    return IssuedToken(token=token, expires_at=expires_at, jti=jti)


def token_issue(*, tenant: Tenant, ttl: timedelta, signing_jwk: str | None = None) -> str:
    """A JWT for ``tenant`` signed with JWT_SIGNING_JWK (the platform normally does this)."""
    return tenant_token_issue(tenant=tenant, ttl=ttl, signing_jwk=signing_jwk).token
