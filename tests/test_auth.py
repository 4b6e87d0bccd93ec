"""JWT authentication at the live proxy: every bad token gets the same 401."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from datetime import timedelta
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from tenants.models import Tenant
from tenants.services import (
    TokenLifetimeInvalid,
    tenant_create,
    tenant_revoke_tokens,
    tenant_suspend,
    token_issue,
)
from tests.conftest import CHANGE_VISIBLE_WITHIN, LiveProxy, World, claims_for, eventually
from tests.support.mockserver import MockServer


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def raw_token(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    return f"{signing_input}.{b64(signature)}"


def hs256_forged_with(secret: bytes, header: dict[str, Any], claims: dict[str, Any]) -> str:
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


def get_models(proxy: LiveProxy, **headers: str) -> httpx.Response:
    return httpx.get(f"{proxy.url}/v1/models", headers=headers, timeout=10)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def bad_tokens(world: World) -> dict[str, dict[str, str]]:
    """Every way a token can be wrong, as request headers."""
    keys, alice = world.jwt_keys, world.alice
    good = claims_for(alice)
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    primary_private = jwt.PyJWK(keys.primary, algorithm="EdDSA").key
    assert isinstance(primary_private, Ed25519PrivateKey)
    primary_public = primary_private.public_key()
    public_pem = primary_public.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    public_raw = primary_public.public_bytes(Encoding.Raw, PublicFormat.Raw)
    now = int(time.time())
    return {
        "missing": {},
        "empty bearer": {"Authorization": "Bearer"},
        "basic scheme": {"Authorization": "Basic " + b64(b"alice:secret")},
        "alg none": bearer(raw_token({"alg": "none", "typ": "JWT"}, good)),
        "alg none with kid": bearer(raw_token({"alg": "none", "kid": "primary"}, good)),
        "alg None capitalised": bearer(raw_token({"alg": "None", "kid": "primary"}, good)),
        "RS256 not allowed": bearer(
            jwt.encode(good, rsa_key, algorithm="RS256", headers={"kid": "primary"})
        ),
        "ES256 not allowed": bearer(
            jwt.encode(good, ec_key, algorithm="ES256", headers={"kid": "primary"})
        ),
        "HS256 keyed with the EdDSA public key (PEM)": bearer(
            hs256_forged_with(public_pem, {"alg": "HS256", "kid": "primary"}, good)
        ),
        "HS256 keyed with the EdDSA public key (raw)": bearer(
            hs256_forged_with(public_raw, {"alg": "HS256", "kid": "primary"}, good)
        ),
        "HS256 under the EdDSA kid with the HMAC secret": bearer(
            hs256_forged_with(
                jwt.utils.base64url_decode(keys.hmac["k"]), {"alg": "HS256", "kid": "primary"}, good
            )
        ),
        "signed by an untrusted key": bearer(keys.sign(good, key=keys.stranger)),
        "tampered payload": bearer(
            keys.sign(good).split(".")[0]
            + "."
            + b64(json.dumps({**good, "sub": world.bob.slug}).encode())
            + "."
            + keys.sign(good).split(".")[2]
        ),
        "missing exp": bearer(keys.sign(claims_for(alice, exp=None))),
        "expired": bearer(keys.sign(claims_for(alice, iat=now - 7200, exp=now - 3600))),
        "nbf in the future": bearer(keys.sign(claims_for(alice, nbf=now + 600))),
        "iat in the future": bearer(keys.sign(claims_for(alice, iat=now + 600))),
        "missing iat": bearer(keys.sign(claims_for(alice, iat=None))),
        "exp a numeric string": bearer(keys.sign(claims_for(alice, exp=str(now + 3600)))),
        "exp true": bearer(keys.sign(claims_for(alice, exp=True))),
        "iat a numeric string": bearer(keys.sign(claims_for(alice, iat=str(now)))),
        "iat negative": bearer(keys.sign(claims_for(alice, iat=-1))),
        "iat true": bearer(keys.sign(claims_for(alice, iat=True))),
        "nbf a numeric string": bearer(keys.sign(claims_for(alice, nbf=str(now - 10)))),
        "lifetime over 30 days": bearer(
            keys.sign(claims_for(alice, iat=now - 10, exp=now + 31 * 24 * 3600))
        ),
        "missing ver": bearer(keys.sign(claims_for(alice, ver=None))),
        "ver not an integer": bearer(keys.sign(claims_for(alice, ver="1"))),
        "wrong audience": bearer(keys.sign(claims_for(alice, aud="someone-else"))),
        "wrong issuer": bearer(keys.sign(claims_for(alice, iss="evil"))),
        "unknown kid": bearer(keys.sign(good, kid="nope")),
        "kid path injection": bearer(keys.sign(good, kid="../../etc/passwd")),
        "jku pointing elsewhere": bearer(
            keys.sign(good, key=keys.stranger, jku="http://127.0.0.1:9/jwks.json")
        ),
        "embedded jwk header": bearer(
            keys.sign(
                good,
                key=keys.stranger,
                jwk={k: v for k, v in keys.stranger.items() if k != "d"},
            )
        ),
        "oversized": bearer(keys.sign(claims_for(alice, pad="x" * 9000))),
        "garbage": bearer("not-a-token"),
        "three garbage parts": bearer("a.b.c"),
        "unknown tenant": bearer(keys.sign(claims_for(alice, sub="nobody-here"))),
        "via x-api-key, forged": {"x-api-key": raw_token({"alg": "none"}, good)},
    }


def test_it_rejects_every_bad_token_with_one_identical_401(
    proxy: LiveProxy, world: World, mock: MockServer
) -> None:
    bodies = set()
    for name, headers in bad_tokens(world).items():
        response = get_models(proxy, **headers)
        assert response.status_code == 401, name
        bodies.add(response.text)
        chat = httpx.post(
            f"{proxy.url}/v1/chat/completions",
            headers=headers,
            json={"model": "auto", "messages": [{"role": "user", "content": "hi"}]},
            timeout=10,
        )
        assert chat.status_code == 401, name
        bodies.add(chat.text)
    assert len(bodies) == 1
    error = json.loads(bodies.pop())["error"]
    assert error["code"] == "invalid_api_key" and error["type"] == "invalid_request_error"
    assert mock.calls() == 0


def test_it_accepts_a_token_as_bearer_or_x_api_key(proxy: LiveProxy, world: World) -> None:
    token = world.token(world.alice)
    assert get_models(proxy, **bearer(token)).status_code == 200
    assert get_models(proxy, **{"x-api-key": token}).status_code == 200


def test_it_accepts_clock_skew_within_the_leeway(proxy: LiveProxy, world: World) -> None:
    now = int(time.time())
    token = world.jwt_keys.sign(claims_for(world.alice, iat=now + 10, nbf=now + 10))
    assert get_models(proxy, **bearer(token)).status_code == 200


def test_it_verifies_with_any_configured_kid(proxy: LiveProxy, world: World) -> None:
    keys = world.jwt_keys
    claims = claims_for(world.alice)
    for key in (keys.primary, keys.rotated, keys.hmac):
        assert get_models(proxy, **bearer(keys.sign(claims, key=key))).status_code == 200


def test_it_forbids_a_suspended_tenant(proxy: LiveProxy, world: World, mock: MockServer) -> None:
    token = world.token(world.alice)
    assert get_models(proxy, **bearer(token)).status_code == 200
    tenant_suspend(tenant=world.alice)

    def forbidden() -> httpx.Response:
        response = get_models(proxy, **bearer(token))
        assert response.status_code == 403
        return response

    response = eventually(forbidden, timeout=CHANGE_VISIBLE_WITHIN)
    assert response.json()["error"]["code"] == "tenant_suspended"


def test_it_revokes_older_tokens_when_the_version_is_bumped(proxy: LiveProxy, world: World) -> None:
    old = world.token(world.alice)
    assert get_models(proxy, **bearer(old)).status_code == 200
    started = time.monotonic()
    tenant_revoke_tokens(tenant=world.alice)

    def revoked() -> None:
        assert get_models(proxy, **bearer(old)).status_code == 403

    # Revocation reaches another process holding the tenant in its cache within
    # PROXY_CONTEXT_POLL through Redis (or the context TTL on the embedded store).
    eventually(revoked, timeout=CHANGE_VISIBLE_WITHIN)
    assert time.monotonic() - started <= CHANGE_VISIBLE_WITHIN
    new = world.token(world.alice)  # carries the new version
    assert get_models(proxy, **bearer(new)).status_code == 200


@pytest.mark.core
def test_it_lists_only_the_models_of_the_tenants_tier(proxy: LiveProxy, world: World) -> None:
    alice = get_models(proxy, **bearer(world.token(world.alice))).json()
    bob = get_models(proxy, **bearer(world.token(world.bob))).json()
    assert alice["object"] == "list"
    assert [m["id"] for m in alice["data"]] == ["auto", "claude-haiku"]
    assert [m["id"] for m in bob["data"]] == ["claude-sonnet-4-5"]


def test_it_gives_a_tenant_reusing_a_slug_none_of_the_old_tokens(
    proxy: LiveProxy, world: World
) -> None:
    old = world.token(world.alice)
    assert get_models(proxy, **bearer(old)).status_code == 200
    slug, tier = world.alice.slug, world.alice.tier
    Tenant.objects.filter(pk=world.alice.pk).update(slug=f"{slug}-renamed")
    newcomer = tenant_create(slug=slug, name="Someone else", tier=tier)
    assert newcomer.token_version != world.alice.token_version  # versions start at random

    def refused() -> None:
        assert get_models(proxy, **bearer(old)).status_code in (401, 403)

    eventually(refused, timeout=CHANGE_VISIBLE_WITHIN)


def test_it_issues_no_token_that_outlives_jwt_max_lifetime(proxy: LiveProxy, world: World) -> None:
    signing = json.dumps(world.jwt_keys.primary)
    with pytest.raises(TokenLifetimeInvalid):
        token_issue(tenant=world.alice, ttl=timedelta(days=31), signing_jwk=signing)
    with pytest.raises(TokenLifetimeInvalid):
        token_issue(tenant=world.alice, ttl=timedelta(0), signing_jwk=signing)
    token = token_issue(tenant=world.alice, ttl=timedelta(days=30), signing_jwk=signing)
    assert get_models(proxy, authorization=f"Bearer {token}").status_code == 200
