"""The provisioning API against its own OpenAPI schema, live: schemathesis generates requests
for every operation from /api/v1/schema/ (valid and invalid ones) and sends them to the
Daphne server as a write credential; no answer may be a 5xx, and every answer must be one the
schema declares: its status code, its content type and its body's schema."""

from __future__ import annotations

from decimal import Decimal

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from routing.services import provider_create, route_create
from tenants.services import tenant_create, tier_create
from tests.conftest import JwtKeys, LiveProxy
from tests.test_api import bearer, service_jwt

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture
def credential(jwt_keys: JwtKeys) -> dict[str, str]:
    return bearer(service_jwt(jwt_keys, scope="read write", sub="schemathesis"))


@pytest.fixture
def api_schema(
    request: pytest.FixtureRequest, proxy: LiveProxy, credential: dict[str, str]
) -> schemathesis.BaseSchema:
    # schemathesis 4.32's lazy loader renames the test node for its reports through
    # Node._nodeid, which pytest 9 no longer has: give it one to read.
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid
    # Something to find besides 404s: tiers, a route, a tenant (slug "acme") with a ledger.
    free = tier_create(slug="free", name="Free", weekly_token_cap=1000)
    tier_create(slug="pro", name="Pro", weekly_cost_cap_usd=Decimal("12.5"))
    provider = provider_create(slug="up", kind="openai", base_url="http://127.0.0.1:9/v1")
    route_create(tier=free, model="auto", provider=provider, upstream_model="small")
    tenant_create(slug="acme", name="Acme", tier=free)
    return schemathesis.openapi.from_url(
        f"{proxy.url}/api/v1/schema/?format=json", headers=credential, timeout=10
    )


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_it_answers_as_its_schema_says(
    case: schemathesis.Case,  # type: ignore[type-arg]
    proxy: LiveProxy,
    credential: dict[str, str],
) -> None:
    case.call_and_validate(base_url=proxy.url, headers=credential, checks=CHECKS, timeout=10)
