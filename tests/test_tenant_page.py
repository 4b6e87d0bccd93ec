"""The staff console's tenant page: what it shows, and its actions against the live proxy.

Each action is posted with the Django test client as a staff user (this process), and its
effect is checked on the live Daphne proxy (another process, whose cached tenant contexts live
SERVER_CONTEXT_TTL = 60 s with Redis): seeing it within CHANGE_VISIBLE_WITHIN shows that the
change reached it through the Redis generation poll, not the TTL.
"""

from __future__ import annotations

import contextlib
import html
import io
import json
import re
import shutil
import subprocess
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from django.conf import settings
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from pytest_django.fixtures import Settings

from audit.models import AuditEntry
from console.tenant_page import usd
from routing.services import route_create
from tenants.models import Tenant
from tenants.services import tenant_create, tier_create
from tests.conftest import CHANGE_VISIBLE_WITHIN, JwtKeys, LiveProxy, World, eventually, unique
from tests.support.mockserver import MockServer
from usage.models import UsageRecord, WeekReset
from usage.weeks import week_of

needs_redis = pytest.mark.skipif(not settings.REDIS_URL, reason="needs a Redis shared by processes")


# --- helpers ------------------------------------------------------------------------------


def staff_client(*, host: str | None = None) -> Client:
    user = User.objects.create_superuser(unique("staff"), password="pw-not-used")
    client = Client(HTTP_HOST=host) if host else Client()
    client.force_login(user)
    return client


def page_url(tenant: Tenant, action: str = "") -> str:
    name = f"console-tenant-{action}" if action else "console-tenant"
    return reverse(name, args=[tenant.pk])


def page(client: Client, tenant: Tenant) -> str:
    response = client.get(page_url(tenant))
    assert response.status_code == 200
    return response.content.decode()


def post(client: Client, tenant: Tenant, action: str, **data: Any) -> None:
    response = client.post(page_url(tenant, action), data)
    assert response.status_code == 303, response.content[:500]
    assert response["Location"] == page_url(tenant)


def nonce_of(text: str) -> str:
    found = re.search(r'name="nonce" value="([^"]+)"', text)
    assert found, "the issue form carries a nonce"
    return found.group(1)


def element(text: str, element_id: str) -> str:
    found = re.search(rf'id="{element_id}"[^>]*>(.*?)</', text, re.S)
    assert found, f"no #{element_id}"
    return html.unescape(found.group(1))


def issue(client: Client, tenant: Tenant, ttl: str = "1h") -> tuple[str, str]:
    """(the result page, the token it shows)."""
    data = {"ttl": ttl, "nonce": nonce_of(page(client, tenant))}
    response = client.post(page_url(tenant, "issue-token"), data)
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    text = response.content.decode()
    return text, element(text, "issued-token").strip()


def tenant_audit(tenant: Tenant) -> list[AuditEntry]:
    return list(
        AuditEntry.objects.filter(target_type="tenants.Tenant", target_id=str(tenant.pk)).order_by(
            "id"
        )
    )


def chat(proxy: LiveProxy, token: str, model: str = "auto") -> httpx.Response:
    return httpx.post(
        f"{proxy.url}/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )


def answers(proxy: LiveProxy, token: str, status: int, code: str | None = None, **kw: Any) -> None:
    """The proxy answers ``token`` with ``status`` (and error ``code``) within the stated
    interval."""

    def check() -> None:
        response = chat(proxy, token, **kw)
        assert response.status_code == status, response.text
        if code is not None:
            assert response.json()["error"]["code"] == code

    eventually(check, timeout=CHANGE_VISIBLE_WITHIN + 1)


@pytest.fixture
def signing(settings: Settings, jwt_keys: JwtKeys) -> None:
    # The page signs with JWT_SIGNING_JWK; the live proxy trusts the suite's "primary" key.
    settings.JWT_SIGNING_JWK = json.dumps(jwt_keys.primary)


def one_new_row(before: list[AuditEntry], tenant: Tenant, action: str) -> AuditEntry:
    after = tenant_audit(tenant)
    new = after[len(before) :]
    assert [row.action for row in new] == [action]
    return new[0]


# --- access -------------------------------------------------------------------------------


@pytest.fixture
def tenant(db: None) -> Tenant:
    tier = tier_create(slug=unique("page"), name="Page", weekly_token_cap=1000)
    return tenant_create(slug=unique("page"), name="Page tenant", tier=tier)


def test_it_sends_a_non_staff_user_to_the_login_page(tenant: Tenant) -> None:
    client = Client()
    client.force_login(User.objects.create_user(unique("user"), password="pw-not-used"))
    for url, method in ((page_url(tenant), "get"), (page_url(tenant, "suspend"), "post")):
        response = getattr(client, method)(url)
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("admin:login"))
    assert Client().get(page_url(tenant)).status_code == 302  # anonymous
    tenant.refresh_from_db()
    assert tenant.is_active


def test_it_refuses_actions_to_staff_without_the_tenant_permission(tenant: Tenant) -> None:
    user = User.objects.create_user(unique("viewer"), password="pw-not-used", is_staff=True)
    client = Client()
    client.force_login(user)
    assert client.get(page_url(tenant)).status_code == 403
    user.user_permissions.add(Permission.objects.get(codename="view_tenant"))
    client.force_login(User.objects.get(pk=user.pk))  # a fresh permission cache
    text = page(client, tenant)
    assert 'id="suspend-tenant"' not in text  # no action offered
    assert client.post(page_url(tenant, "suspend")).status_code == 403
    tenant.refresh_from_db()
    assert tenant.is_active


def test_it_takes_actions_only_as_posts_with_csrf(tenant: Tenant) -> None:
    client = staff_client()
    assert client.get(page_url(tenant, "suspend")).status_code == 405
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(User.objects.create_superuser(unique("strict"), password="pw-not-used"))
    assert strict.post(page_url(tenant, "suspend")).status_code == 403
    tenant.refresh_from_db()
    assert tenant.is_active


# --- what the page shows ------------------------------------------------------------------


def record(tenant: Tenant, **fields: Any) -> UsageRecord:
    now = timezone.now()
    values: dict[str, Any] = {
        "request_id": unique("req"),
        "tenant": tenant,
        "tier": tenant.tier,
        "model": "auto",
        "provider_slug": "moonshot",
        "upstream_model": "kimi-k2",
        "stream": False,
        "status": UsageRecord.Status.OK,
        "http_status": 200,
        "latency_ms": 120,
        "created_at": now,
        "week": week_of(now).id,
        **fields,
    }
    return UsageRecord.objects.create(**values)


def test_it_shows_the_week_net_of_resets_and_the_recent_requests(
    tenant: Tenant, redis_flushed: None
) -> None:
    record(tenant, input_tokens=300, output_tokens=200, cost_usd=Decimal("0.000123"))
    record(
        tenant,
        input_tokens=50,
        status=UsageRecord.Status.UPSTREAM_TIMEOUT,
        http_status=504,
        error_code="upstream_timeout",
        error_message="The provider did not answer in time.",
    )
    WeekReset.objects.create(
        tenant=tenant, week=week_of(timezone.now()).id, tokens=150, cost_usd=Decimal(0)
    )
    text = page(client=staff_client(), tenant=tenant)
    # 300 + 200 + 50 - 150, against the cap.
    used = '<span class="console-used">400</span> / <span class="console-cap">1,000</span>'
    assert used in text
    assert "40.0% of the weekly cap" in text
    assert "Projected by the end of the week" in text
    assert "Resets this week: 1" in text
    costs = re.findall(r'class="console-cost">([^<]*)<', text)
    assert costs == ["$0.00", "$0.000123"]  # the newest first; a sub-cent cost as it is
    assert "upstream_timeout" in text and "The provider did not answer in time." in text
    assert "504" in text


def test_it_shows_costs_with_every_digit_below_a_cent() -> None:
    assert usd(Decimal("0.000123000")) == "$0.000123"
    assert usd(Decimal("0.000000001")) == "$0.000000001"
    assert usd(Decimal("1.5")) == "$1.50"
    assert usd(Decimal("12.345")) == "$12.345"
    assert usd(Decimal("0")) == "$0.00"


def test_it_links_to_the_page_from_the_tenant_admin(tenant: Tenant) -> None:
    response = staff_client().get(reverse("admin:tenants_tenant_change", args=[tenant.pk]))
    assert f'href="{page_url(tenant)}"' in response.content.decode()


# --- the actions, live ----------------------------------------------------------------------


def test_it_issues_a_token_once_that_works_until_all_are_revoked(
    proxy: LiveProxy, world: World, signing: None
) -> None:
    tenant = world.alice
    client = staff_client(host=proxy.url.removeprefix("http://"))
    before = tenant_audit(tenant)
    text = page(client, tenant)
    data = {"ttl": "1h", "nonce": nonce_of(text)}
    response = client.post(page_url(tenant, "issue-token"), data)
    assert response.status_code == 200 and "no-store" in response["Cache-Control"]
    result = response.content.decode()
    token = element(result, "issued-token").strip()
    expires = re.search(r'id="issued-token-expires" datetime="([^"]+)"', result)
    assert expires is not None
    lifetime = datetime.fromisoformat(expires.group(1)) - timezone.now()
    assert timedelta(minutes=59) < lifetime <= timedelta(hours=1)

    row = one_new_row(before, tenant, "tenant.token_issued")
    assert token not in json.dumps(row.changes) + row.note
    assert row.actor.startswith("staff-")

    assert chat(proxy, token).status_code == 200
    # The snippets name this proxy (the request's host) and work as they stand.
    assert element(result, "proxy-url") == proxy.url
    openai_snippet = element(result, "snippet-openai")
    assert f'"{token}"' in openai_snippet
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        exec(openai_snippet, {})  # noqa: S102  # our own page's code, against our own proxy
    assert printed.getvalue().strip()
    assert f'"{token}"' in element(result, "snippet-anthropic")
    if shutil.which("curl"):
        curl = subprocess.run(
            ["sh", "-c", element(result, "snippet-curl")], capture_output=True, timeout=20
        )
        assert curl.returncode == 0 and b'"choices"' in curl.stdout

    # Shown once: a resubmission (a reload) neither shows it again nor issues another.
    again = client.post(page_url(tenant, "issue-token"), data)
    assert again.status_code == 303
    assert token not in page(client, tenant)
    assert len(tenant_audit(tenant)) == len(before) + 1

    warm = world.token(tenant)  # a token issued elsewhere, cached by the proxy as valid
    assert chat(proxy, warm).status_code == 200
    version = tenant.token_version
    before = tenant_audit(tenant)
    post(client, tenant, "revoke-tokens")
    tenant.refresh_from_db()
    assert tenant.token_version == version + 1
    row = one_new_row(before, tenant, "tenant.tokens_revoked")
    assert row.changes["token_version"] == [version, version + 1]
    answers(proxy, token, 403, "token_revoked")
    answers(proxy, warm, 403, "token_revoked")
    # A token issued after the revocation works.
    _, fresh = issue(client, tenant)
    answers(proxy, fresh, 200)


def test_it_suspends_and_resumes_on_the_next_request_in_every_process(
    proxy: LiveProxy, second_proxy: LiveProxy, world: World, signing: None
) -> None:
    tenant = world.alice
    client = staff_client()
    _, token = issue(client, tenant)
    for server in (proxy, second_proxy):
        assert chat(server, token).status_code == 200  # cached by each process as active

    before = tenant_audit(tenant)
    post(client, tenant, "suspend")
    tenant.refresh_from_db()
    assert tenant.status == Tenant.Status.SUSPENDED
    row = one_new_row(before, tenant, "tenant.suspended")
    assert row.changes["status"] == ["active", "suspended"]
    for server in (proxy, second_proxy):
        answers(server, token, 403, "tenant_suspended")
    assert 'id="resume-tenant"' in page(client, tenant)

    before = tenant_audit(tenant)
    post(client, tenant, "resume")
    tenant.refresh_from_db()
    assert tenant.is_active
    one_new_row(before, tenant, "tenant.resumed")
    for server in (proxy, second_proxy):
        answers(server, token, 200)


def test_it_moves_a_tenant_to_the_other_tiers_models(
    proxy: LiveProxy, world: World, signing: None
) -> None:
    tenant = world.alice
    client = staff_client()
    _, token = issue(client, tenant)
    assert chat(proxy, token, model="auto").status_code == 200
    assert chat(proxy, token, model="claude-sonnet-4-5").status_code == 404

    before = tenant_audit(tenant)
    text = page(client, tenant)
    assert f'<option value="{world.max.pk}">' in text
    assert f'<option value="{world.auto.pk}">' not in text  # not to where it is
    post(client, tenant, "move-tier", tier=world.max.pk)
    tenant.refresh_from_db()
    assert tenant.tier_id == world.max.pk
    row = one_new_row(before, tenant, "tenant.tier_moved")
    assert row.changes["tier"] == [world.auto.slug, world.max.slug]
    answers(proxy, token, 200, model="claude-sonnet-4-5")
    answers(proxy, token, 404, "model_not_found", model="auto")


@needs_redis
def test_it_resets_the_week_so_the_cap_no_longer_refuses(
    proxy: LiveProxy, world: World, mock: MockServer, signing: None
) -> None:
    tier = tier_create(
        slug=unique("capped"),
        name="Capped",
        weekly_token_cap=120,
        requests_per_minute=100_000,
        max_concurrent_requests=10_000,
    )
    route_create(
        tier=tier,
        model="auto",
        provider=world.moonshot,
        upstream_model="up-auto",
        input_usd_per_mtok=Decimal("1"),
        output_usd_per_mtok=Decimal("2"),
    )
    tenant = tenant_create(slug=unique("capped"), name="Capped", tier=tier)
    client = staff_client()
    _, token = issue(client, tenant)
    for _ in range(20):
        response = chat(proxy, token)
        if response.status_code == 429:
            break
        assert response.status_code == 200, response.text
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "insufficient_quota"

    before = tenant_audit(tenant)
    post(client, tenant, "reset-week")
    reset = WeekReset.objects.get(tenant=tenant)
    assert reset.tokens > 0
    row = one_new_row(before, tenant, "tenant.week_reset")
    assert row.changes["forgiven_tokens"] == [None, reset.tokens]
    answers(proxy, token, 200)
    assert "Resets this week: 1" in page(client, tenant)


def test_it_never_shows_a_provider_key_and_the_token_only_on_its_result(
    proxy: LiveProxy, world: World, signing: None
) -> None:
    tenant = world.alice
    client = staff_client()
    assert chat(proxy, world.token(tenant)).status_code == 200  # a ledger row to show
    eventually(lambda: _assert(UsageRecord.objects.filter(tenant=tenant).exists()))
    result, token = issue(client, tenant)
    pages = {
        "tenant page": page(client, tenant),
        "issue result": result,
        "tenant admin": client.get(
            reverse("admin:tenants_tenant_change", args=[tenant.pk])
        ).content.decode(),
    }
    for name, text in pages.items():
        for secret in world.secrets.values():
            assert secret not in text, f"a provider key in the {name}"
        assert (token in text) == (name == "issue result"), name
    for row in AuditEntry.objects.all():
        dumped = json.dumps(row.changes) + row.note + row.target_repr
        assert token not in dumped
        assert not any(secret in dumped for secret in world.secrets.values())


def _assert(condition: bool) -> None:
    assert condition


def test_it_offers_no_tier_move_when_there_is_no_other_tier(db: None) -> None:
    tier = tier_create(slug=unique("only"), name="Only")
    tenant = tenant_create(slug=unique("alone"), name="Alone", tier=tier)
    text = page(staff_client(), tenant)
    assert 'id="move-tier"' not in text
    assert 'id="issue-token"' in text
