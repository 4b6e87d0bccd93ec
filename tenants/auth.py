"""Tenant authentication: a JWT per request, verified without touching the database.

Every way a token can be wrong gets the same 401 body, so a caller learns nothing about
which check failed; the reason goes to the log (never the token itself). A valid token for
a suspended tenant or an outdated ``ver`` gets 403 (routing/context.py's ``aauthenticate``,
which holds the tenant's cached context to compare them with).
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import jwt
from django.conf import settings
from django.http import HttpRequest

from core.errors import ProxyError

logger = logging.getLogger(__name__)

_REQUIRED_CLAIMS = ["exp", "iat", "sub", "ver"]


def unauthorized() -> ProxyError:
    return ProxyError(
        401,
        "Invalid or missing token. Send your tenant JWT as `Authorization: Bearer <token>` "
        "or `x-api-key: <token>`.",
        code="invalid_api_key",
    )


_VERIFIED_CACHE_SIZE = 10_000
# Year 10000: past it, datetime cannot hold the time, and no real token gets near it.
_LATEST_TIMESTAMP = 253_402_300_800


@dataclass(frozen=True)
class _KeySet:
    source: dict[str, Any]
    keys: dict[str, jwt.PyJWK]
    # Agents send the same token on every request: a token verified once is remembered
    # (bounded, and only until its exp) so the signature is not checked again each time.
    verified: OrderedDict[str, dict[str, Any]] = field(default_factory=OrderedDict)


_keyset: _KeySet | None = None


def _current_keyset() -> _KeySet:
    # Parsed once per JWKS value (settings may be swapped in tests or on reload).
    global _keyset
    source = settings.JWT_JWKS
    if _keyset is None or _keyset.source is not source:
        keys = {k["kid"]: jwt.PyJWK(k, algorithm=k["alg"]) for k in source["keys"]}
        _keyset = _KeySet(source=source, keys=keys)
    return _keyset


def token_from(request: HttpRequest) -> str | None:
    header = request.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        return value.strip() if scheme.lower() == "bearer" and value.strip() else None
    return request.headers.get("x-api-key") or None


def verify_token(token: str) -> dict[str, Any]:
    """The token's claims, or ProxyError(401). Pure: no I/O."""
    if len(token) > settings.JWT_MAX_TOKEN_BYTES:
        raise reject("token over the size limit")
    keyset = _current_keyset()
    claims = keyset.verified.get(token)
    if claims is not None:
        if claims["exp"] > time.time():
            keyset.verified.move_to_end(token)
            return claims
        del keyset.verified[token]
    claims = _verify(token, keyset.keys)
    keyset.verified[token] = claims
    if len(keyset.verified) > _VERIFIED_CACHE_SIZE:
        keyset.verified.popitem(last=False)
    return claims


class TokenInvalid(Exception):
    """A JWT that fails a check; ``reason`` says which (for the log, never the client)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def trusted_keys() -> dict[str, jwt.PyJWK]:
    """The JWT_JWKS keys by kid, parsed once per JWKS value."""
    return _current_keyset().keys


def decode_verified(
    token: str, *, keys: dict[str, jwt.PyJWK], audience: str, required: list[str]
) -> dict[str, Any]:
    """A JWT's claims once its signature, algorithm, audience, issuer, times and lifetime
    hold, or TokenInvalid. Tenant tokens (this module) and the provisioning API's service
    tokens (api/authentication.py) differ only in their audience and required claims."""
    if len(token) > settings.JWT_MAX_TOKEN_BYTES:
        raise TokenInvalid("token over the size limit")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError:
        raise TokenInvalid("malformed token header") from None
    alg = header.get("alg")
    # Checked before any key is chosen: "none" and anything not configured never get further.
    if alg not in settings.JWT_ALGORITHMS:
        raise TokenInvalid(f"algorithm {alg!r} not allowed")
    kid = header.get("kid")
    if kid is None and len(keys) == 1:
        key = next(iter(keys.values()))
    elif isinstance(kid, str) and kid in keys:
        key = keys[kid]
    else:
        raise TokenInvalid("unknown kid")
    # A key is used only with its own algorithm: an HS256 token can never be checked
    # against an RSA/EdDSA public key used as an HMAC secret.
    if key.algorithm_name != alg:
        raise TokenInvalid("algorithm does not match the key")
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key=key.key,
            algorithms=[alg],
            audience=audience,
            issuer=settings.JWT_ISSUER,
            leeway=settings.JWT_LEEWAY_SECONDS,
            options={"require": required, "verify_iat": True},
        )
    except jwt.InvalidTokenError as exc:
        raise TokenInvalid(type(exc).__name__) from None
    # PyJWT compares exp/iat/nbf after int() and accepts "123" or true for them; the cache
    # above and everything downstream compares them as numbers, so they must be numbers.
    for name in ("exp", "iat", "nbf"):
        if name in claims and not _is_time(claims[name]):
            raise TokenInvalid(f"{name} is not a number")
    if claims["exp"] - claims["iat"] > settings.JWT_MAX_LIFETIME:
        raise TokenInvalid("lifetime over JWT_MAX_LIFETIME")
    return claims


def _verify(token: str, keys: dict[str, jwt.PyJWK]) -> dict[str, Any]:
    try:
        claims = decode_verified(
            token, keys=keys, audience=settings.JWT_AUDIENCE, required=_REQUIRED_CLAIMS
        )
    except TokenInvalid as exc:
        raise reject(exc.reason) from None
    if not isinstance(claims.get("sub"), str) or type(claims.get("ver")) is not int:
        raise reject("sub or ver of the wrong type")
    return claims


def _is_time(value: Any) -> bool:
    # NumericDate (RFC 7519): a JSON number of seconds. bool is an int to Python, not to JSON;
    # a timestamp before 1970 is no token of ours.
    return type(value) in (int, float) and math.isfinite(value) and 0 <= value < _LATEST_TIMESTAMP


def reject(reason: str) -> ProxyError:
    logger.info("token rejected: %s", reason)
    return unauthorized()
