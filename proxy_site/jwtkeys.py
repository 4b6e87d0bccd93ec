"""JSON Web Keys for tenant tokens: generation, the public half, and validation of a JWKS.

Kept free of Django settings because settings.py uses it while settings are being built.
Generation lives in core.devsecrets (development secrets need it below this layer).
"""

from __future__ import annotations

from typing import Any

from jwt.api_jwk import PyJWK

from core.devsecrets import generate_signing_jwk

__all__ = ["generate_signing_jwk", "public_jwk", "public_jwks_from_signing_jwk", "validate_jwks"]

_PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth")


def public_jwk(jwk: dict[str, Any]) -> dict[str, Any]:
    """The verification half of a JWK (symmetric ``oct`` keys are their own verification key)."""
    if jwk.get("kty") == "oct":
        return dict(jwk)
    return {k: v for k, v in jwk.items() if k not in _PRIVATE_MEMBERS}


def public_jwks_from_signing_jwk(jwk: dict[str, Any]) -> dict[str, Any]:
    return {"keys": [public_jwk(jwk)]}


def validate_jwks(data: Any, *, allowed_algorithms: list[str]) -> None:
    """Raise ValueError unless ``data`` is a usable JWKS for the allowed algorithms."""
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list) or not data["keys"]:
        raise ValueError('expected {"keys": [...]} with at least one key')
    seen: set[str] = set()
    for index, key in enumerate(data["keys"]):
        where = f"key #{index + 1}"
        if not isinstance(key, dict):
            raise ValueError(f"{where} is not an object")
        kid, alg = key.get("kid"), key.get("alg")
        if not isinstance(kid, str) or not kid:
            raise ValueError(f"{where} has no kid")
        if kid in seen:
            raise ValueError(f"kid {kid!r} appears twice")
        seen.add(kid)
        if alg not in allowed_algorithms:
            raise ValueError(f"{where} ({kid}) has alg {alg!r}, not one of JWT_ALGORITHMS")
        try:
            PyJWK(key, algorithm=alg)
        except Exception as exc:  # PyJWT raises several unrelated types for a bad key
            raise ValueError(f"{where} ({kid}) is not a valid {alg} key: {exc}") from None
