"""The provisioning API (/api/v1/): platform credentials, every endpoint, the audit trail,
idempotency, and the platform's whole flow against the live proxy over HTTP only.

Most tests call the API in this process (Django's test client); the ones the issue asks to
see live (a tenant token refused by the API and a platform credential by the proxy,
Idempotency-Key on the live server, the end-to-end flow) use the live Daphne server.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import jwt
import openai
import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone
from pytest_django.fixtures import Settings

from api.authentication import SUB_MAX
from api.models import ApiToken, IdempotencyRecord
from api.services import api_token_create, api_token_revoke, credential_digest
from audit.models import AuditEntry
from routing.models import ModelRoute, Provider
from routing.services import provider_create, route_create
from tenants.models import Tenant, Tier
from tenants.services import tenant_activate, tenant_create, tier_create
from tests.conftest import JwtKeys, LiveProxy, World, claims_for, eventually, unique
from tests.support.mockserver import MockServer
from usage.models import UsageRecord
from usage.weeks import week_of

API = "/api/v1"


# --- credentials --------------------------------------------------------------------------


def service_jwt(
    keys: JwtKeys, *, scope: str | None = "read write", sub: str = "platform", **claims: Any
) -> str:
    now = int(time.time())
    payload: dict[str, Any] = {
        "sub": sub,
        "aud": settings.PROXY_API_AUDIENCE,
        "iss": settings.JWT_ISSUER,
        "iat": now,
        "exp": now + 300,
        "scope": scope,
        **claims,
    }
    return keys.sign({k: v for k, v in payload.items() if v is not None})


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class Api:
    """The API in this process, as one credential."""

    def __init__(self, token: str | None) -> None:
        self.client = Client()
        self.token = token

    def __call__(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
        raw: str | None = None,
    ) -> Any:
        all_headers = {**(bearer(self.token) if self.token else {}), **(headers or {})}
        data = raw if raw is not None else (json.dumps(body) if body is not None else None)
        kwargs: dict[str, Any] = {"headers": all_headers}
        if data is not None:
            kwargs.update(data=data, content_type="application/json")
        return getattr(self.client, method.lower())(API + path, **kwargs)


@pytest.fixture
def keys(settings: Settings, jwt_keys: JwtKeys) -> JwtKeys:
    # This process verifies as the live server does: the suite's keys.
    settings.JWT_JWKS = jwt_keys.served
    settings.JWT_ALGORITHMS = ["EdDSA", "HS256"]
    return jwt_keys


@pytest.fixture
def writer(db: None, keys: JwtKeys) -> Api:
    return Api(service_jwt(keys, scope="read write"))


@pytest.fixture
def reader(db: None, keys: JwtKeys) -> Api:
    return Api(service_jwt(keys, scope="read", sub="dashboard"))


@pytest.fixture
def tiers(db: None) -> tuple[Tier, Tier]:
    free = tier_create(slug="free", name="Free", weekly_token_cap=1000)
    pro = tier_create(slug="pro", name="Pro", weekly_cost_cap_usd=Decimal("12.5"))
    provider = provider_create(slug="up", kind="openai", base_url="http://127.0.0.1:9/v1")
    route_create(tier=free, model="auto", provider=provider, upstream_model="small")
    route_create(
        tier=pro,
        model="auto",
        provider=provider,
        upstream_model="large",
        input_usd_per_mtok=Decimal("3"),
        cache_read_usd_per_mtok=Decimal("0.3"),
    )
    return free, pro


def error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json"
    body: dict[str, Any] = response.json()["error"]
    assert body["code"] == code, body
    assert body["message"]
    return body


def audit_rows(actor: str) -> list[tuple[str, str]]:
    return list(
        AuditEntry.objects.filter(actor=actor)
        .order_by("at", "pk")
        .values_list("action", "target_repr")
    )


# --- authentication and scopes ------------------------------------------------------------


def test_it_serves_a_service_jwt_with_read_scope_and_refuses_it_a_write(
    reader: Api, tiers: tuple[Tier, Tier]
) -> None:
    assert reader("GET", "/tiers/").status_code == 200
    response = reader("POST", "/tenants/", {"slug": "a", "name": "A", "tier": "free"})
    error(response, 403, "insufficient_scope")
    assert not Tenant.objects.exists()


def test_it_lets_a_write_scope_read_and_write(writer: Api, tiers: tuple[Tier, Tier]) -> None:
    assert writer("GET", "/tiers/").status_code == 200
    response = writer("POST", "/tenants/", {"slug": "a", "name": "A", "tier": "free"})
    assert response.status_code == 201, response.content


def test_it_serves_staff_api_tokens_by_scope_and_records_their_use(
    db: None, tiers: tuple[Tier, Tier]
) -> None:
    read = api_token_create(name="reports", scopes="read", created_by=None)
    write = api_token_create(name="signup", scopes="read write", created_by=None)
    assert read.token.startswith("lpk_")
    # Only a hash is stored: the token itself is nowhere in the row.
    row = ApiToken.objects.get(name="reports")
    assert read.token not in json.dumps(list(ApiToken.objects.values()), default=str)
    assert row.last_used_at is None

    assert Api(read.token)("GET", "/tenants/").status_code == 200
    error(
        Api(read.token)("POST", "/tenants/", {"slug": "a", "name": "A", "tier": "free"}),
        403,
        "insufficient_scope",
    )
    response = Api(write.token)("POST", "/tenants/", {"slug": "a", "name": "A", "tier": "free"})
    assert response.status_code == 201
    row.refresh_from_db()
    assert row.last_used_at is not None


def test_it_refuses_a_revoked_or_unknown_api_token(db: None) -> None:
    made = api_token_create(name="old", scopes="read write", created_by=None)
    assert Api(made.token)("GET", "/tiers/").status_code == 200
    api_token_revoke(token=made.record)
    error(Api(made.token)("GET", "/tiers/"), 401, "unauthenticated")
    error(Api("lpk_" + "x" * 43)("GET", "/tiers/"), 401, "unauthenticated")


@pytest.mark.parametrize(
    "case",
    ["none", "tenant_token", "expired", "no_scope", "other_scope", "forged", "garbage", "basic"],
)
def test_it_answers_401_to_anything_but_a_platform_credential(
    db: None, keys: JwtKeys, case: str
) -> None:
    tenant = tenant_create(slug="t", name="T", tier=tier_create(slug="x", name="X"))
    token: str | None = {
        "none": None,
        # Signed by a trusted key and valid for the proxy, but for the proxy's audience.
        "tenant_token": keys.sign(claims_for(tenant, scope="read write")),
        "expired": service_jwt(keys, iat=int(time.time()) - 600, exp=int(time.time()) - 300),
        "no_scope": service_jwt(keys, scope=None),
        "other_scope": service_jwt(keys, scope="admin"),
        "forged": jwt.encode(
            {
                "sub": "platform",
                "aud": settings.PROXY_API_AUDIENCE,
                "iss": settings.JWT_ISSUER,
                "iat": int(time.time()),
                "exp": int(time.time()) + 60,
                "scope": "read write",
            },
            jwt.PyJWK(keys.stranger, algorithm="EdDSA").key,
            algorithm="EdDSA",
            headers={"kid": "primary"},
        ),
        "garbage": "not-a-token",
        "basic": None,
    }[case]
    api = Api(token)
    headers = {"Authorization": "Basic dXNlcjpwdw=="} if case == "basic" else None
    response = api("GET", "/tenants/", headers=headers)
    error(response, 401, "unauthenticated")
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_it_lets_a_method_the_view_lacks_answer_405_even_to_a_reader(reader: Api) -> None:
    error(reader("PUT", "/tiers/", {}), 405, "method_not_allowed")


# --- tenants ------------------------------------------------------------------------------


def test_it_creates_reads_lists_and_updates_tenants(writer: Api, tiers: tuple[Tier, Tier]) -> None:
    response = writer(
        "POST",
        "/tenants/",
        {"slug": "acme", "name": "Acme", "tier": "free", "weekly_token_cap_override": 500},
    )
    assert response.status_code == 201
    body = response.json()
    assert body["slug"] == "acme" and body["tier"] == "free" and body["status"] == "active"
    assert body["weekly_token_cap"] == 500 and body["weekly_token_cap_override"] == 500
    writer("POST", "/tenants/", {"slug": "beta", "name": "Beta", "tier": "pro"})

    assert writer("GET", "/tenants/acme/").json() == body
    listed = writer("GET", "/tenants/?page_size=1").json()
    assert listed["count"] == 2 and [t["slug"] for t in listed["results"]] == ["acme"]
    assert listed["next"] and listed["previous"] is None
    assert [t["slug"] for t in writer("GET", "/tenants/?tier=pro").json()["results"]] == ["beta"]

    patched = writer(
        "PATCH", "/tenants/acme/", {"name": "Acme Inc", "weekly_token_cap_override": None}
    )
    assert patched.status_code == 200
    assert patched.json()["name"] == "Acme Inc"
    assert patched.json()["weekly_token_cap"] == 1000  # the tier's again
    assert patched.json()["weekly_cost_cap_usd"] is None


def test_it_refuses_invalid_tenants_field_by_field(writer: Api, tiers: tuple[Tier, Tier]) -> None:
    body = error(
        writer("POST", "/tenants/", {"slug": "no spaces", "name": "", "tier": "gold"}),
        400,
        "invalid_request",
    )
    assert set(body["detail"]) == {"slug", "name", "tier"}
    error(writer("POST", "/tenants/", raw="{not json"), 400, "malformed_request")
    error(
        writer(
            "POST",
            "/tenants/",
            {"slug": "a", "name": "A", "tier": "free", "requests_per_minute_override": -1},
        ),
        400,
        "invalid_request",
    )
    writer("POST", "/tenants/", {"slug": "a", "name": "A", "tier": "free"})
    error(
        writer("POST", "/tenants/", {"slug": "a", "name": "Again", "tier": "free"}),
        409,
        "tenant_exists",
    )
    assert Tenant.objects.get(slug="a").name == "A"


def test_it_answers_not_found_and_method_not_allowed_as_json(writer: Api) -> None:
    error(writer("GET", "/tenants/nobody/"), 404, "not_found")
    error(writer("POST", "/tenants/nobody/suspend/"), 404, "not_found")
    error(writer("GET", "/routes/999999999999999999999/"), 404, "not_found")
    error(writer("GET", "/no/such/endpoint/"), 404, "not_found")
    error(writer("PUT", "/tenants/nobody/", {}), 405, "method_not_allowed")
    error(writer("GET", "/tenants/?page=99"), 404, "not_found")
    error(writer("GET", "/tenants/?status=gone"), 400, "invalid_request")


def test_it_suspends_resumes_moves_and_deactivates_a_tenant(
    writer: Api, tiers: tuple[Tier, Tier]
) -> None:
    writer("POST", "/tenants/", {"slug": "acme", "name": "Acme", "tier": "free"})
    version = Tenant.objects.get(slug="acme").token_version

    assert writer("POST", "/tenants/acme/suspend/").json()["status"] == "suspended"
    assert writer("POST", "/tenants/acme/suspend/").json()["status"] == "suspended"
    assert writer("POST", "/tenants/acme/resume/").json()["status"] == "active"
    moved = writer("POST", "/tenants/acme/tier/", {"tier": "pro"})
    assert moved.status_code == 200 and moved.json()["tier"] == "pro"
    error(writer("POST", "/tenants/acme/tier/", {"tier": "gold"}), 400, "invalid_request")

    revoked = writer("POST", "/tenants/acme/tokens/revoke/")
    assert revoked.status_code == 200
    assert Tenant.objects.get(slug="acme").token_version == version + 1

    gone = writer("DELETE", "/tenants/acme/")
    assert gone.status_code == 200 and gone.json()["status"] == "deactivated"
    tenant = Tenant.objects.get(slug="acme")  # the row stays
    assert tenant.status == Tenant.Status.SUSPENDED and tenant.token_version == version + 2
    # Read, never changed again through the API; deleting it again changes nothing.
    assert writer("GET", "/tenants/acme/").json()["status"] == "deactivated"
    assert writer("DELETE", "/tenants/acme/").status_code == 200
    assert Tenant.objects.get(slug="acme").token_version == version + 2
    for path, body in [
        ("/resume/", None),
        ("/tier/", {"tier": "free"}),
        ("/tokens/", {"ttl_seconds": 60}),
    ]:
        error(writer("POST", f"/tenants/acme{path}", body), 409, "tenant_deactivated")
    error(writer("PATCH", "/tenants/acme/", {"name": "x"}), 409, "tenant_deactivated")
    assert [t["slug"] for t in writer("GET", "/tenants/?status=deactivated").json()["results"]] == [
        "acme"
    ]
    assert writer("GET", "/tenants/?status=suspended").json()["count"] == 0


def test_it_issues_a_tenant_token_once_with_its_expiry_and_jti(
    writer: Api, tiers: tuple[Tier, Tier], settings: Settings, keys: JwtKeys
) -> None:
    settings.JWT_SIGNING_JWK = json.dumps(keys.primary)
    writer("POST", "/tenants/", {"slug": "acme", "name": "Acme", "tier": "free"})
    response = writer("POST", "/tenants/acme/tokens/", {"ttl_seconds": 600})
    assert response.status_code == 201
    assert response["Cache-Control"] == "no-store"
    body = response.json()
    claims = jwt.decode(body["token"], options={"verify_signature": False})
    assert claims["sub"] == "acme" and claims["aud"] == settings.JWT_AUDIENCE
    assert claims["jti"] == body["jti"] and body["token_type"] == "Bearer"
    assert claims["exp"] - claims["iat"] == 600
    assert abs(datetime.fromisoformat(body["expires_at"]).timestamp() - claims["exp"]) < 1
    error(writer("POST", "/tenants/acme/tokens/", {"ttl_seconds": 0}), 400, "invalid_request")
    too_long = settings.JWT_MAX_LIFETIME + 1
    error(
        writer("POST", "/tenants/acme/tokens/", {"ttl_seconds": too_long}), 400, "invalid_request"
    )
    # The audit row names the token by its jti, never the token.
    row = AuditEntry.objects.get(action="tenant.token_issued")
    assert row.changes["jti"] == [None, body["jti"]]
    assert body["token"] not in json.dumps(list(AuditEntry.objects.values()), default=str)


def test_it_answers_503_when_it_cannot_sign_tokens(
    writer: Api, tiers: tuple[Tier, Tier], settings: Settings
) -> None:
    settings.JWT_SIGNING_JWK = ""
    writer("POST", "/tenants/", {"slug": "acme", "name": "Acme", "tier": "free"})
    error(writer("POST", "/tenants/acme/tokens/", {"ttl_seconds": 60}), 503, "signing_unavailable")


# --- tiers and routes ---------------------------------------------------------------------


def test_it_reads_tiers_and_routes(reader: Api, tiers: tuple[Tier, Tier]) -> None:
    listed = reader("GET", "/tiers/").json()
    assert [t["slug"] for t in listed] == ["free", "pro"]
    pro = reader("GET", "/tiers/pro/").json()
    assert pro["weekly_cost_cap_usd"] == "12.5000" and pro["weekly_token_cap"] is None
    error(reader("GET", "/tiers/gold/"), 404, "not_found")

    routes = reader("GET", "/routes/?tier=pro").json()
    assert [(r["model"], r["upstream_model"], r["provider"]) for r in routes] == [
        ("auto", "large", "up")
    ]
    route = reader("GET", f"/routes/{routes[0]['id']}/").json()
    assert route["input_usd_per_mtok"] == "3.000000"
    assert route["cache_write_usd_per_mtok"] is None
    assert len(reader("GET", "/routes/").json()) == 2
    assert ModelRoute.objects.count() == 2 and Provider.objects.count() == 1


# --- usage --------------------------------------------------------------------------------


def ledger_row(tenant: Tenant, **fields: Any) -> UsageRecord:
    now = fields.pop("created_at", timezone.now())
    values: dict[str, Any] = {
        "request_id": uuid.uuid4().hex,
        "tenant": tenant,
        "tier": tenant.tier,
        "model": "auto",
        "provider_slug": "up",
        "upstream_model": "small",
        "stream": False,
        "input_tokens": 10,
        "output_tokens": 5,
        "cost_usd": Decimal("0.000123"),
        "status": UsageRecord.Status.OK,
        "http_status": 200,
        "latency_ms": 40,
        "created_at": now,
        "week": week_of(now).id,
        **fields,
    }
    return UsageRecord.objects.create(**values)


def test_it_reports_a_tenants_week_by_model_and_its_ledger(
    reader: Api, tiers: tuple[Tier, Tier]
) -> None:
    tenant = tenant_create(slug="acme", name="Acme", tier=tiers[0])
    other = tenant_create(slug="other", name="Other", tier=tiers[0])
    for _ in range(3):
        ledger_row(tenant)
    ledger_row(tenant, model="claude", status=UsageRecord.Status.UPSTREAM_ERROR, output_tokens=0)
    ledger_row(other)
    last_week = timezone.now() - timedelta(days=7)
    ledger_row(tenant, created_at=last_week, input_tokens=100)

    week = reader("GET", "/tenants/acme/usage/week/").json()
    assert week["week"] == week_of(timezone.now()).id
    assert week["tokens"] == 3 * 15 + 10 and week["weekly_token_cap"] == 1000
    assert Decimal(week["cost_usd"]) == 4 * Decimal("0.000123")
    past = reader("GET", f"/tenants/acme/usage/week/?week={last_week.date().isoformat()}").json()
    assert past["tokens"] == 105 and past["live"] is False
    iso = last_week.isocalendar()
    assert (
        reader("GET", f"/tenants/acme/usage/week/?week={iso.year}-W{iso.week:02d}").json() == past
    )
    error(reader("GET", "/tenants/acme/usage/week/?week=soon"), 400, "invalid_week")

    models = reader("GET", "/tenants/acme/usage/models/").json()["models"]
    assert [(m["model"], m["requests"], m["errors"], m["output_tokens"]) for m in models] == [
        ("auto", 3, 0, 15),
        ("claude", 1, 1, 0),
    ]

    page = reader("GET", "/usage/records/?tenant=acme&page_size=2").json()
    assert len(page["results"]) == 2 and page["next"]
    seen = [r["request_id"] for r in page["results"]]
    while page["next"]:
        page = reader("GET", page["next"].split(API, 1)[1]).json()
        seen += [r["request_id"] for r in page["results"]]
    assert len(seen) == len(set(seen)) == 5
    assert (
        reader("GET", "/usage/records/?tenant=acme&model=claude").json()["results"][0]["status"]
        == "upstream_error"
    )
    assert (
        len(
            reader("GET", "/usage/records/?status=ok&week=" + last_week.date().isoformat()).json()[
                "results"
            ]
        )
        == 1
    )
    error(reader("GET", "/usage/records/?page_size=2&cursor=bogus"), 404, "not_found")
    error(reader("GET", "/usage/records/?since=yesterday"), 400, "invalid_request")


def test_it_resets_a_tenants_week(writer: Api, tiers: tuple[Tier, Tier]) -> None:
    tenant = tenant_create(slug="acme", name="Acme", tier=tiers[0])
    ledger_row(tenant)
    response = writer("POST", "/tenants/acme/reset-week/")
    assert response.status_code == 200, response.content
    assert response.json()["forgiven_tokens"] == 15
    assert writer("GET", "/tenants/acme/usage/week/").json()["tokens"] == 0
    assert UsageRecord.objects.filter(tenant=tenant).count() == 1  # the ledger stays


# --- the audit trail ----------------------------------------------------------------------


def test_it_audits_every_write_as_the_credential(
    db: None, keys: JwtKeys, tiers: tuple[Tier, Tier], settings: Settings
) -> None:
    settings.JWT_SIGNING_JWK = json.dumps(keys.primary)
    made = api_token_create(name="signup", scopes="read write", created_by=None)
    api = Api(made.token)
    api("POST", "/tenants/", {"slug": "acme", "name": "Acme", "tier": "free"})
    api("PATCH", "/tenants/acme/", {"name": "Acme Inc"})
    api("POST", "/tenants/acme/suspend/")
    api("POST", "/tenants/acme/resume/")
    api("POST", "/tenants/acme/tier/", {"tier": "pro"})
    api("POST", "/tenants/acme/reset-week/")
    api("POST", "/tenants/acme/tokens/", {"ttl_seconds": 60})
    api("POST", "/tenants/acme/tokens/revoke/")
    api("DELETE", "/tenants/acme/")
    assert audit_rows("api:signup") == [
        ("created", "acme"),
        ("updated", "acme"),
        ("tenant.suspended", "acme"),
        ("tenant.resumed", "acme"),
        ("tenant.tier_moved", "acme"),
        ("tenant.week_reset", "acme"),
        ("tenant.token_issued", "acme"),
        ("tenant.tokens_revoked", "acme"),
        ("tenant.deactivated", "acme"),
    ]
    moved = AuditEntry.objects.get(action="tenant.tier_moved")
    assert moved.changes["tier"][1] != moved.changes["tier"][0]
    deactivated = AuditEntry.objects.get(action="tenant.deactivated")
    assert set(deactivated.changes) >= {"status", "token_version"}
    # A write that changes nothing (suspending a suspended tenant) writes nothing.
    Api(service_jwt(keys, sub="ops"))("POST", "/tenants/acme/suspend/")
    assert audit_rows("api:ops") == []


def test_it_treats_a_tenant_staff_resumed_after_a_delete_as_live_again(
    writer: Api, tiers: tuple[Tier, Tier]
) -> None:
    writer("POST", "/tenants/", {"slug": "acme", "name": "Acme", "tier": "free"})
    assert writer("DELETE", "/tenants/acme/").json()["status"] == "deactivated"
    # Staff resume it in the admin (the service the admin and the console call).
    tenant_activate(tenant=Tenant.objects.get(slug="acme"))
    assert writer("GET", "/tenants/acme/").json()["status"] == "active"
    # An API suspension now is an ordinary one: resumable through the API.
    assert writer("POST", "/tenants/acme/suspend/").json()["status"] == "suspended"
    assert writer("GET", "/tenants/?status=deactivated").json()["count"] == 0
    resumed = writer("POST", "/tenants/acme/resume/")
    assert resumed.status_code == 200 and resumed.json()["status"] == "active"
    # And deleting it again deactivates it again.
    assert writer("DELETE", "/tenants/acme/").json()["status"] == "deactivated"
    error(writer("POST", "/tenants/acme/resume/"), 409, "tenant_deactivated")


# --- idempotency --------------------------------------------------------------------------


def test_it_replays_a_create_with_the_same_idempotency_key(
    writer: Api, tiers: tuple[Tier, Tier]
) -> None:
    body = {"slug": "acme", "name": "Acme", "tier": "free"}
    key = {"Idempotency-Key": "signup-42"}
    first = writer("POST", "/tenants/", body, headers=key)
    again = writer("POST", "/tenants/", body, headers=key)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again["Idempotent-Replayed"] == "true" and "Idempotent-Replayed" not in first
    assert Tenant.objects.filter(slug="acme").count() == 1
    assert AuditEntry.objects.filter(action="created", target_repr="acme").count() == 1

    other = writer("POST", "/tenants/", {**body, "name": "Other"}, headers=key)
    error(other, 422, "idempotency_key_reused")
    # Without a key, a repeat is a second create: refused, the slug is taken.
    error(writer("POST", "/tenants/", body), 409, "tenant_exists")
    error(
        writer("POST", "/tenants/", body, headers={"Idempotency-Key": "x" * 256}),
        400,
        "invalid_idempotency_key",
    )


def test_it_keeps_idempotency_keys_per_credential_and_for_a_day(
    db: None, keys: JwtKeys, tiers: tuple[Tier, Tier]
) -> None:
    key = {"Idempotency-Key": "k1"}
    a, b = Api(service_jwt(keys, sub="a")), Api(service_jwt(keys, sub="b"))
    assert (
        a(
            "POST", "/tenants/", {"slug": "one", "name": "1", "tier": "free"}, headers=key
        ).status_code
        == 201
    )
    # Another credential's key k1 is its own.
    assert (
        b(
            "POST", "/tenants/", {"slug": "two", "name": "2", "tier": "free"}, headers=key
        ).status_code
        == 201
    )
    record = IdempotencyRecord.objects.get(credential=credential_digest("jwt:a"))
    assert record.expires_at - record.created_at == timedelta(hours=24)
    IdempotencyRecord.objects.filter(pk=record.pk).update(expires_at=timezone.now())
    # Expired: the key is free again.
    again = a("POST", "/tenants/", {"slug": "three", "name": "3", "tier": "free"}, headers=key)
    assert again.status_code == 201 and "Idempotent-Replayed" not in again
    # A failed request keeps no record: its retry is tried again.
    error(
        a(
            "POST",
            "/tenants/",
            {"slug": "one", "name": "1", "tier": "free"},
            headers={"Idempotency-Key": "k2"},
        ),
        409,
        "tenant_exists",
    )
    assert not IdempotencyRecord.objects.filter(key="k2").exists()


def test_it_keys_idempotency_on_a_digest_of_a_long_credential_and_refuses_an_absurd_sub(
    db: None, keys: JwtKeys, tiers: tuple[Tier, Tier]
) -> None:
    key = {"Idempotency-Key": "k1"}
    body = {"slug": "one", "name": "1", "tier": "free"}
    longest = Api(service_jwt(keys, sub="p" * SUB_MAX))
    first = longest("POST", "/tenants/", body, headers=key)
    again = longest("POST", "/tenants/", body, headers=key)
    assert first.status_code == again.status_code == 201
    assert again["Idempotent-Replayed"] == "true"
    record = IdempotencyRecord.objects.get()
    assert record.credential == credential_digest("jwt:" + "p" * SUB_MAX)
    # A sub the audit trail could not name exactly is no credential.
    absurd = Api(service_jwt(keys, sub="p" * 300))
    error(absurd("POST", "/tenants/", body, headers=key), 401, "unauthenticated")


def test_it_replays_a_token_issue_with_the_same_token_kept_sealed(
    writer: Api, tiers: tuple[Tier, Tier], settings: Settings, keys: JwtKeys
) -> None:
    settings.JWT_SIGNING_JWK = json.dumps(keys.primary)
    writer("POST", "/tenants/", {"slug": "acme", "name": "Acme", "tier": "free"})
    key = {"Idempotency-Key": "boot-7"}
    first = writer("POST", "/tenants/acme/tokens/", {"ttl_seconds": 600}, headers=key)
    again = writer("POST", "/tenants/acme/tokens/", {"ttl_seconds": 600}, headers=key)
    assert again.json()["token"] == first.json()["token"]
    assert again["Idempotent-Replayed"] == "true"
    assert AuditEntry.objects.filter(action="tenant.token_issued").count() == 1
    record = IdempotencyRecord.objects.get(key="boot-7")
    assert first.json()["token"] not in record.sealed_body  # sealed, not in plaintext
    # Kept no longer than the token lives.
    assert record.expires_at <= timezone.now() + timedelta(seconds=601)
    # The same key for another tenant's token: refused, not replayed.
    writer("POST", "/tenants/", {"slug": "beta", "name": "Beta", "tier": "free"})
    error(
        writer("POST", "/tenants/beta/tokens/", {"ttl_seconds": 600}, headers=key),
        422,
        "idempotency_key_reused",
    )


# --- the schema and the docs page ---------------------------------------------------------


def test_it_serves_its_schema_to_platform_credentials_and_staff(reader: Api, db: None) -> None:
    response = reader("GET", "/schema/?format=json")
    assert response.status_code == 200
    schema = json.loads(response.content)
    assert schema["openapi"].startswith("3.")
    create = schema["paths"]["/api/v1/tenants/"]["post"]
    assert any(p["name"] == "Idempotency-Key" and p["in"] == "header" for p in create["parameters"])
    assert {"serviceJwt", "apiToken"} <= set(schema["components"]["securitySchemes"])
    error(Api(None)("GET", "/schema/"), 401, "unauthenticated")

    staff = Client()
    staff.force_login(User.objects.create_superuser("ops", password="pw-not-used"))
    assert staff.get(f"{API}/schema/").status_code == 200
    docs = staff.get(f"{API}/docs/")
    assert docs.status_code == 200
    page = docs.content.decode()
    assert "swagger-ui" in page and "drf_spectacular_sidecar" in page
    assert "cdn" not in page.lower() and "unpkg" not in page.lower()
    signed_out = Client().get(f"{API}/docs/")
    assert signed_out.status_code == 302 and "/admin/login/" in signed_out["Location"]


def test_it_shows_an_api_token_once_in_the_admin_and_revokes_it_there(db: None) -> None:
    staff = Client()
    staff.force_login(User.objects.create_superuser("ops", password="pw-not-used"))
    response = staff.post("/admin/api/apitoken/add/", {"name": "signup", "scopes": "read write"})
    assert response.status_code == 200, response.content
    assert "no-store" in response["Cache-Control"]
    token = (
        response.content.decode().split('id="api-token"', 1)[1].split(">", 1)[1].split("<", 1)[0]
    )
    assert token.startswith("lpk_")
    record = ApiToken.objects.get(name="signup")
    assert record.created_by is not None and record.created_by.username == "ops"
    assert token not in staff.get(f"/admin/api/apitoken/{record.pk}/change/").content.decode()
    assert Api(token)("GET", "/tiers/").status_code == 200
    staff.post(
        "/admin/api/apitoken/",
        {"action": "revoke", "_selected_action": [record.pk]},
    )
    error(Api(token)("GET", "/tiers/"), 401, "unauthenticated")
    rows = AuditEntry.objects.filter(target_type="api.ApiToken").order_by("at", "pk")
    assert [(row.actor, row.action) for row in rows] == [
        ("ops", "api_token.created"),
        ("ops", "api_token.revoked"),
    ]


# --- live: the proxy and the API refuse each other's credentials ---------------------------


def test_it_refuses_a_tenant_token_at_the_api_and_a_platform_credential_at_the_proxy(
    proxy: LiveProxy, world: World
) -> None:
    tenant_token = world.token(world.alice)
    ok = httpx.post(
        f"{proxy.url}/v1/chat/completions",
        headers=bearer(tenant_token),
        json={"model": "auto", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert ok.status_code == 200, ok.text  # the token itself is good, for the proxy
    refused = httpx.get(f"{proxy.url}{API}/tenants/", headers=bearer(tenant_token))
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "unauthenticated"

    platform = [
        service_jwt(world.jwt_keys, sub=world.alice.slug, ver=world.alice.token_version),
        api_token_create(name="signup", scopes="read write", created_by=None).token,
    ]
    for credential in platform:
        assert (
            httpx.get(f"{proxy.url}{API}/tenants/", headers=bearer(credential)).status_code == 200
        )
        answer = httpx.post(
            f"{proxy.url}/v1/chat/completions",
            headers=bearer(credential),
            json={"model": "auto", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert answer.status_code == 401, answer.text
        assert answer.json()["error"]["code"] == "invalid_api_key"


def test_it_creates_one_tenant_for_a_repeated_create_on_the_live_server(
    proxy: LiveProxy, world: World
) -> None:
    credential = bearer(service_jwt(world.jwt_keys, sub="signup"))
    slug = unique("acme")
    body = {"slug": slug, "name": "Acme", "tier": world.auto.slug}
    headers = {**credential, "Idempotency-Key": uuid.uuid4().hex}
    answers = [
        httpx.post(f"{proxy.url}{API}/tenants/", json=body, headers=headers) for _ in range(3)
    ]
    assert [a.status_code for a in answers] == [201, 201, 201]
    assert answers[1].json() == answers[0].json() == answers[2].json()
    assert Tenant.objects.filter(slug=slug).count() == 1
    assert list(AuditEntry.objects.filter(target_repr=slug).values_list("actor", "action")) == [
        ("api:signup", "created")
    ]
    reused = httpx.post(
        f"{proxy.url}{API}/tenants/", json={**body, "name": "Other"}, headers=headers
    )
    assert reused.status_code == 422 and reused.json()["error"]["code"] == "idempotency_key_reused"


# --- live: the platform's flow, over HTTP only ---------------------------------------------


def test_it_runs_the_platform_flow_end_to_end_over_http(
    proxy: LiveProxy, world: World, mock: MockServer
) -> None:
    api = httpx.Client(
        base_url=f"{proxy.url}{API}", headers=bearer(service_jwt(world.jwt_keys, sub="platform"))
    )
    slug = unique("customer")
    created = api.post(
        "/tenants/",
        json={"slug": slug, "name": "Customer", "tier": world.auto.slug},
        headers={"Idempotency-Key": uuid.uuid4().hex},
    )
    assert created.status_code == 201, created.text
    issued = api.post(f"/tenants/{slug}/tokens/", json={"ttl_seconds": 3600})
    assert issued.status_code == 201, issued.text
    agent = openai.OpenAI(
        base_url=proxy.openai_base_url, api_key=issued.json()["token"], max_retries=0
    )

    reply = agent.chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "hi"}]
    )
    assert reply.choices[0].message.content
    assert mock.requests()[-1]["model"] == "kimi-k2"  # the auto tier's route

    def usage_landed() -> dict[str, Any]:
        records: list[dict[str, Any]] = api.get("/usage/records/", params={"tenant": slug}).json()[
            "results"
        ]
        assert len(records) == 1
        week = api.get(f"/tenants/{slug}/usage/week/").json()
        assert week["tokens"] == records[0]["input_tokens"] + records[0]["output_tokens"] > 0
        return records[0]

    record = eventually(usage_landed, timeout=10)
    assert record["upstream_model"] == "kimi-k2" and record["tier"] == world.auto.slug
    models = api.get(f"/tenants/{slug}/usage/models/").json()["models"]
    assert [(m["model"], m["requests"]) for m in models] == [("auto", 1)]

    # Upgrade: the max tier serves claude-sonnet-4-5 through its Anthropic route.
    moved = api.post(f"/tenants/{slug}/tier/", json={"tier": world.max.slug})
    assert moved.status_code == 200 and moved.json()["tier"] == world.max.slug

    def served_by_new_tier() -> None:
        answer = agent.chat.completions.create(
            model="claude-sonnet-4-5", messages=[{"role": "user", "content": "hi"}]
        )
        assert answer.choices[0].message.content
        assert mock.requests()[-1]["model"] == "claude-sonnet-4-5-20250929"

    eventually(lambda: _no_api_error(served_by_new_tier))

    suspended = api.post(f"/tenants/{slug}/suspend/")
    assert suspended.json()["status"] == "suspended"

    def refused() -> None:
        try:
            agent.chat.completions.create(
                model="claude-sonnet-4-5", messages=[{"role": "user", "content": "hi"}]
            )
        except openai.PermissionDeniedError:
            return
        raise AssertionError("still served")

    eventually(refused)


def _no_api_error(check: Any) -> None:
    # While the move is on its way to the live server's cached context, the old tier has
    # no claude-sonnet-4-5: a 404 then is the lag, which `eventually` waits out.
    try:
        check()
    except openai.NotFoundError as exc:
        raise AssertionError(str(exc)) from None
