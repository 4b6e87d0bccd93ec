"""Writes to tiers and tenants, and issuing tenant tokens."""

from __future__ import annotations

import json
import time
import uuid
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import jwt
from django.conf import settings
from django.db import transaction
from django.db.models import F

from tenants.models import Tenant, Tier


class TokenSigningUnavailable(Exception):
    pass


def tier_create(
    *,
    slug: str,
    name: str,
    weekly_token_cap: int | None = None,
    weekly_cost_cap_usd: Decimal | None = None,
    requests_per_minute: int = 60,
    max_concurrent_requests: int = 4,
    default_max_tokens: int = 4096,
    rate_limits_fail_open: bool = False,
) -> Tier:
    tier = Tier(
        slug=slug,
        name=name,
        weekly_token_cap=weekly_token_cap,
        weekly_cost_cap_usd=weekly_cost_cap_usd,
        requests_per_minute=requests_per_minute,
        max_concurrent_requests=max_concurrent_requests,
        default_max_tokens=default_max_tokens,
        rate_limits_fail_open=rate_limits_fail_open,
    )
    tier.full_clean()
    tier.save()
    return tier


def tenant_create(*, slug: str, name: str, tier: Tier, **overrides: Any) -> Tenant:
    tenant = Tenant(slug=slug, name=name, tier=tier, **overrides)
    tenant.full_clean()
    tenant.save()
    return tenant


def tenant_suspend(*, tenant: Tenant) -> Tenant:
    tenant.status = Tenant.Status.SUSPENDED
    tenant.save(update_fields=["status", "updated_at"])
    return tenant


def tenant_activate(*, tenant: Tenant) -> Tenant:
    tenant.status = Tenant.Status.ACTIVE
    tenant.save(update_fields=["status", "updated_at"])
    return tenant


@transaction.atomic
def tenant_revoke_tokens(*, tenant: Tenant) -> Tenant:
    """Bump token_version: every token issued before stops working."""
    Tenant.objects.filter(pk=tenant.pk).update(token_version=F("token_version") + 1)
    tenant.refresh_from_db(fields=["token_version"])
    tenant.save(update_fields=["updated_at"])  # fires post_save: drops cached contexts
    return tenant


def token_issue(*, tenant: Tenant, ttl: timedelta, signing_jwk: str | None = None) -> str:
    """A JWT for ``tenant`` signed with JWT_SIGNING_JWK (the platform normally does this)."""
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
    claims = {
        "sub": tenant.slug,
        "aud": settings.JWT_AUDIENCE,
        "iss": settings.JWT_ISSUER,
        "iat": now,
        "exp": now + int(ttl.total_seconds()),
        "jti": uuid.uuid4().hex,
        "ver": tenant.token_version,
    }
    return jwt.encode(claims, key.key, algorithm=jwk["alg"], headers={"kid": jwk["kid"]})
