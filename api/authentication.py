# DRF and drf-spectacular ship no type hints: their base classes are Any to mypy.
# mypy: disallow-subclassing-any=False
"""Platform credentials: who may call the provisioning API.

``Authorization: Bearer <credential>`` with either

- a service JWT, signed by one of the JWT_JWKS keys tenant tokens are verified with, but for
  the audience PROXY_API_AUDIENCE (a tenant token, audience JWT_AUDIENCE, is refused here, and
  a service JWT is refused by the proxy, which checks for JWT_AUDIENCE), with a ``scope``
  claim ("read", "write" or "read write") and ``sub`` naming the platform service; or
- a staff API token (``lpk_...``) made in the admin, looked up by its SHA-256.

Every way a credential can be wrong gets the same 401; the reason goes to the log, never the
credential.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone
from rest_framework.authentication import BaseAuthentication
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.request import Request

from api.models import ApiToken
from tenants.auth import TokenInvalid, decode_verified, trusted_keys

logger = logging.getLogger(__name__)

API_TOKEN_PREFIX = "lpk_"  # noqa: S105 (a prefix, not a secret)
SCOPES = frozenset({"read", "write"})
# last_used_at is written at most this often per token: not one UPDATE per request.
_LAST_USED_GRANULARITY = timedelta(minutes=1)
_REQUIRED_CLAIMS = ["exp", "iat", "sub", "scope"]
# A sub names a platform service; audit rows name it as api:<sub> in a 200-character column,
# so a longer one could not be told apart from another there.
SUB_MAX = 196


@dataclass(frozen=True)
class Principal:
    """The platform credential a request carries (DRF's ``request.user``)."""

    name: str  # the JWT's sub, or the API token's name
    scopes: frozenset[str]
    kind: str  # "jwt" or "token"
    # Stable per credential: what idempotency keys are scoped to.
    credential_id: str = field(repr=False)

    # What Django and DRF ask of a user.
    is_authenticated = True
    is_staff = False
    pk = None

    @property
    def actor(self) -> str:
        return f"api:{self.name}"

    def get_username(self) -> str:
        return self.actor

    def can_read(self) -> bool:
        # Write implies read: a platform that may create a tenant may look at it.
        return bool(self.scopes & SCOPES)

    def can_write(self) -> bool:
        return "write" in self.scopes


def hash_api_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_api_token() -> str:
    return API_TOKEN_PREFIX + secrets.token_urlsafe(32)


def _refused(reason: str) -> AuthenticationFailed:
    logger.info("platform credential rejected: %s", reason)
    return AuthenticationFailed("Invalid or missing platform credential.", code="unauthenticated")


class PlatformAuthentication(BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[Principal, str] | None:
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header:
            return None
        scheme, _, value = header.partition(" ")
        credential = value.strip()
        if scheme.lower() != "bearer" or not credential:
            raise _refused("not a bearer credential")
        if credential.startswith(API_TOKEN_PREFIX):
            return _api_token(credential), credential
        return _service_jwt(credential), credential

    def authenticate_header(self, request: Request) -> str:
        # Its presence makes DRF answer 401 (not 403) to a request without a credential.
        return 'Bearer realm="llm-proxy-api"'


def _api_token(credential: str) -> Principal:
    token = ApiToken.objects.filter(token_hash=hash_api_token(credential)).first()
    if token is None:
        raise _refused("unknown API token")
    if token.revoked_at is not None:
        raise _refused(f"API token {token.name} revoked")
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at > _LAST_USED_GRANULARITY:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return Principal(
        name=token.name, scopes=token.scope_set, kind="token", credential_id=f"token:{token.pk}"
    )


def _service_jwt(credential: str) -> Principal:
    claims = verify_service_jwt(credential)
    scopes = frozenset(claims["scope"].split()) & SCOPES
    if not scopes:
        raise _refused("no read or write scope")
    sub = claims["sub"]
    return Principal(name=sub, scopes=scopes, kind="jwt", credential_id=f"jwt:{sub}")


def verify_service_jwt(token: str) -> dict[str, Any]:
    """The claims of a service JWT, or AuthenticationFailed. The same checks as tenant tokens
    (tenants/auth.py decode_verified: allowed algorithms only, a key used only with its own
    algorithm, the lifetime bounded by JWT_MAX_LIFETIME), but for the API's audience."""
    try:
        claims = decode_verified(
            token,
            keys=trusted_keys(),
            audience=settings.PROXY_API_AUDIENCE,
            required=_REQUIRED_CLAIMS,
        )
    except TokenInvalid as exc:
        raise _refused(exc.reason) from None
    sub, scope = claims.get("sub"), claims.get("scope")
    if not isinstance(sub, str) or not sub.strip() or not isinstance(scope, str):
        raise _refused("sub or scope of the wrong type")
    if len(sub) > SUB_MAX:
        raise _refused(f"sub longer than {SUB_MAX} characters")
    return claims
