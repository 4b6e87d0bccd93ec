"""The audit log: every staff change to tiers, tenants, providers, keys, routes and aliases,
however it is made, and every named action, is one row (who, when, what, before -> after),
never holding a secret; the admin shows it read-only and exports it as CSV."""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django import forms
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import BaseCommand
from django.http import StreamingHttpResponse
from django.test import AsyncClient, Client

from audit.context import acting_as, current_actor
from audit.models import AuditEntry
from audit.selectors import audit_entries
from audit.services import audit_action, audit_record
from routing import services as routing_services
from routing.models import ModelAlias, ModelRoute, Provider, ProviderKey
from tenants import services as tenant_services
from tenants.models import Tenant, Tier

pytestmark = [pytest.mark.django_db, pytest.mark.core]

DEMO = Path(__file__).resolve().parent.parent / "config" / "demo.toml"
PLAINTEXT = "sk-live-PLAINTEXT-do-not-log-7f3a9c"
ROTATED = "sk-live-ROTATED-do-not-log-41b2e8"
EXPORT = "/admin/audit/auditentry/export.csv"


@pytest.fixture
def staff() -> User:
    return User.objects.create_superuser("ops", "ops@example.test", "pw")


@pytest.fixture
def ops(staff: User) -> Client:
    client = Client()
    client.force_login(staff)
    return client


def rows() -> list[AuditEntry]:
    return list(AuditEntry.objects.order_by("id"))


def new_rows(since: int) -> list[AuditEntry]:
    return list(AuditEntry.objects.filter(id__gt=since).order_by("id"))


def last_id() -> int:
    entry = AuditEntry.objects.order_by("-id").first()
    return entry.pk if entry is not None else 0


# --- the world each model needs ------------------------------------------------------------


def a_tier(slug: str = "free") -> Tier:
    return tenant_services.tier_create(slug=slug, name=slug.title(), weekly_token_cap=100)


def a_provider(slug: str = "moonshot") -> Provider:
    return routing_services.provider_create(
        slug=slug, kind="openai", base_url="https://moonshot.test/v1"
    )


def a_route(tier: Tier, provider: Provider, model: str = "auto") -> ModelRoute:
    return routing_services.route_create(
        tier=tier, model=model, provider=provider, upstream_model="kimi-k2"
    )


# --- through the services ------------------------------------------------------------------

# label -> (create, update, the update's expected change, delete)
Create = Callable[[], Any]
Update = Callable[[Any], object]
Delete = Callable[[Any], object]


def _create_tenant() -> Tenant:
    a_tier("pro")
    return tenant_services.tenant_create(slug="acme", name="Acme", tier=a_tier())


def _create_key() -> ProviderKey:
    return routing_services.provider_key_create(
        provider=a_provider(), label="pool-1", secret=PLAINTEXT
    )


def _create_route() -> ModelRoute:
    return a_route(a_tier(), a_provider())


def _create_alias() -> ModelAlias:
    route = a_route(a_tier(), a_provider())
    return routing_services.alias_create(tier=route.tier, name="claude-*", model="auto")


SERVICE_CASES: dict[str, tuple[Create, Update, dict[str, list[Any]], Delete]] = {
    "tenants.Tier": (
        a_tier,
        lambda tier: tenant_services.tier_update(tier=tier, weekly_token_cap=200),
        {"weekly_token_cap": [100, 200]},
        lambda tier: tenant_services.tier_delete(tier=tier),
    ),
    "tenants.Tenant": (
        _create_tenant,
        lambda tenant: tenant_services.tenant_update(
            tenant=tenant, tier=Tier.objects.get(slug="pro")
        ),
        {"tier": ["free", "pro"]},
        lambda tenant: tenant_services.tenant_delete(tenant=tenant),
    ),
    "routing.Provider": (
        a_provider,
        lambda provider: routing_services.provider_update(provider=provider, idle_timeout=30.0),
        {"idle_timeout": [60.0, 30.0]},
        lambda provider: routing_services.provider_delete(provider=provider),
    ),
    "routing.ProviderKey": (
        _create_key,
        lambda key: routing_services.provider_key_update(key=key, weight=3),
        {"weight": [1, 3]},
        lambda key: routing_services.provider_key_delete(key=key),
    ),
    "routing.ModelRoute": (
        _create_route,
        lambda route: routing_services.route_update(
            route=route, output_usd_per_mtok=Decimal("2.5")
        ),
        {"output_usd_per_mtok": ["0.000000", "2.5"]},
        lambda route: routing_services.route_delete(route=route),
    ),
    "routing.ModelAlias": (
        _create_alias,
        lambda alias: routing_services.alias_update(alias=alias, name="gpt-*"),
        {"name": ["claude-*", "gpt-*"]},
        lambda alias: routing_services.alias_delete(alias=alias),
    ),
}


@pytest.mark.parametrize("label", list(SERVICE_CASES))
def test_it_writes_one_row_per_service_create_update_and_delete(label: str) -> None:
    create, update, expected, delete = SERVICE_CASES[label]
    with acting_as("api:platform"):
        obj = create()
        created = [row for row in rows() if row.target_type == label]
        assert [row.action for row in created] == ["created"]
        assert created[0].target_id == str(obj.pk) and created[0].target_repr == str(obj)
        assert "updated_at" not in created[0].changes and "created_at" not in created[0].changes

        since = last_id()
        update(obj)
        (updated,) = new_rows(since)
        assert (updated.action, updated.target_type) == ("updated", label)
        assert updated.changes == expected  # the field changed, and nothing else

        since = last_id()
        delete(obj)
        (deleted,) = new_rows(since)
        assert (deleted.action, deleted.target_type) == ("deleted", label)
        assert deleted.target_id == created[0].target_id
    assert {row.actor for row in rows()} == {"api:platform"}


def test_it_names_the_system_when_nobody_is_acting() -> None:
    a_tier()
    (row,) = rows()
    assert (row.actor, row.actor_user_id) == ("system", None)


def test_it_writes_no_row_for_a_save_that_changes_nothing() -> None:
    tier = a_tier()
    since = last_id()
    tier.save()  # only updated_at moves
    assert new_rows(since) == []


def test_it_records_a_tier_move_by_name_and_a_cascade_row_by_row() -> None:
    tier, provider = a_tier(), a_provider()
    a_route(tier, provider, "auto")
    a_route(tier, provider, "fast")
    since = last_id()
    tenant_services.tier_delete(tier=tier)  # its routes go with it: each is recorded
    deleted = new_rows(since)
    assert sorted(row.target_type for row in deleted) == [
        "routing.ModelRoute",
        "routing.ModelRoute",
        "tenants.Tier",
    ]
    assert all(row.action == "deleted" for row in deleted)


# --- secrets -------------------------------------------------------------------------------


def _ciphertexts() -> set[str]:
    return set(ProviderKey.objects.values_list("secret_ciphertext", flat=True))


def test_it_records_a_key_and_its_rotation_without_plaintext_or_ciphertext() -> None:
    key = _create_key()
    seen = _ciphertexts()
    routing_services.provider_key_update(key=key, secret=ROTATED)
    seen |= _ciphertexts()
    key_rows = [row for row in rows() if row.target_type == "routing.ProviderKey"]
    assert key_rows[0].changes["secret"] == [None, "(hidden)"]
    assert key_rows[1].changes["secret"] == ["(hidden)", "(changed)"]
    assert "secret_ciphertext" not in key_rows[1].changes
    dumped = json.dumps([[r.changes, r.note, r.target_repr] for r in rows()])
    for secret in (PLAINTEXT, ROTATED, *seen):
        assert secret not in dumped


def test_it_keeps_no_value_of_a_secret_a_caller_hands_over() -> None:
    tier = a_tier()
    entry = audit_record(
        action="token.issued",
        target=tier,
        changes={"client_secret": [None, PLAINTEXT], "expires_at": "2030-01-01"},
    )
    entry.refresh_from_db()
    assert entry.changes == {
        "client_secret": [None, "(hidden)"],
        "expires_at": [None, "2030-01-01"],
    }


# --- named actions -------------------------------------------------------------------------


def test_it_writes_exactly_one_row_for_an_action_that_saves_its_target() -> None:
    tenant = _create_tenant()
    since = last_id()
    with acting_as("ops"), audit_action("tenant.suspended", target=tenant):
        tenant_services.tenant_suspend(tenant=tenant)
    (row,) = new_rows(since)
    assert (row.action, row.actor) == ("tenant.suspended", "ops")
    assert row.changes == {"status": ["active", "suspended"]}
    assert (row.target_type, row.target_id) == ("tenants.Tenant", str(tenant.pk))


def test_it_records_a_change_made_with_update_which_sends_no_signal() -> None:
    tenant = _create_tenant()
    version = tenant.token_version
    since = last_id()
    with audit_action("tokens.revoked", target=tenant):
        tenant_services.tenant_revoke_tokens(tenant=tenant)
    (row,) = new_rows(since)
    assert row.action == "tokens.revoked"
    assert row.changes == {"token_version": [version, version + 1]}


def test_it_merges_a_nested_action_on_the_same_target_into_one_row() -> None:
    tenant = _create_tenant()
    since = last_id()
    with audit_action("tier.moved", target=tenant) as action:
        with audit_action("tenant.updated", target=tenant) as inner:
            tenant_services.tenant_update(tenant=tenant, tier=Tier.objects.get(slug="pro"))
            inner.note = "support ticket 42"
        tenant_services.tenant_update(tenant=tenant, name="Acme Inc")
        action.changes["reason"] = "upgrade"
    (row,) = new_rows(since)
    assert row.action == "tier.moved" and row.note == "support ticket 42"
    assert row.changes == {
        "name": ["Acme", "Acme Inc"],
        "tier": ["free", "pro"],
        "reason": [None, "upgrade"],
    }


def test_it_still_records_other_objects_an_action_saves() -> None:
    tenant = _create_tenant()
    since = last_id()
    with audit_action("tenant.suspended", target=tenant):
        tenant_services.tenant_suspend(tenant=tenant)
        a_tier("extra")
    assert sorted(row.action for row in new_rows(since)) == ["created", "tenant.suspended"]


def test_it_writes_nothing_for_an_action_that_fails() -> None:
    tenant = _create_tenant()
    since = last_id()
    with pytest.raises(RuntimeError), audit_action("tenant.suspended", target=tenant):
        raise RuntimeError("refused")
    assert new_rows(since) == []


def test_it_writes_a_row_for_an_action_that_saves_nothing() -> None:
    tenant = _create_tenant()
    with acting_as("ops"), audit_action("token.issued", target=tenant) as action:
        action.changes["expires_at"] = "2030-01-01T00:00:00+00:00"
    (row,) = audit_entries(target=tenant, action="token.issued")
    assert row.changes == {"expires_at": [None, "2030-01-01T00:00:00+00:00"]}


# --- commands ------------------------------------------------------------------------------


def test_it_names_apply_config_as_the_actor_of_what_it_writes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("DEMO_MOONSHOT_KEY_1", "DEMO_MOONSHOT_KEY_2", "DEMO_ANTHROPIC_KEY_1"):
        monkeypatch.setenv(name, f"sk-{name.lower()}-{PLAINTEXT}")
    call_command("apply_config", str(DEMO), stdout=StringIO())
    written = rows()
    assert written and {row.actor for row in written} == {"command:apply_config"}
    assert {row.target_type for row in written} >= {
        "tenants.Tier",
        "tenants.Tenant",
        "routing.Provider",
        "routing.ProviderKey",
        "routing.ModelRoute",
    }
    assert PLAINTEXT not in json.dumps([row.changes for row in written])
    since = last_id()
    call_command("apply_config", str(DEMO), stdout=StringIO())
    assert new_rows(since) == []  # nothing changed, nothing recorded
    assert current_actor().name == "system"  # the command's actor ended with it


class _Outer(BaseCommand):
    def handle(self, *args: Any, **options: Any) -> None:
        a_tier(f"outer-{Tier.objects.count()}")


def test_it_lets_an_explicit_actor_win_over_the_command_name() -> None:
    with acting_as("alice"):
        call_command(_Outer(), stdout=StringIO())
    (row,) = rows()
    assert row.actor == "alice"
    call_command(_Outer(), stdout=StringIO())
    assert rows()[-1].actor == "command:test_audit"  # named after the command's module


# --- through the admin ---------------------------------------------------------------------


def _form_data(client: Client, url: str) -> dict[str, Any]:
    """What the admin's form would post as it stands (its initial or current values)."""
    response = client.get(url)
    assert response.status_code == 200, url
    form: forms.ModelForm[Any] = response.context["adminform"].form
    data: dict[str, Any] = {}
    for name, bound in form.fields.items():
        value = form[name].value()
        if isinstance(bound, forms.BooleanField):
            if value:
                data[name] = "on"
        elif value is not None:
            data[name] = value
    return data


ADMIN_URL = {
    "tenants.Tier": "/admin/tenants/tier/",
    "tenants.Tenant": "/admin/tenants/tenant/",
    "routing.Provider": "/admin/routing/provider/",
    "routing.ProviderKey": "/admin/routing/providerkey/",
    "routing.ModelRoute": "/admin/routing/modelroute/",
    "routing.ModelAlias": "/admin/routing/modelalias/",
}


def _admin_cases() -> dict[str, tuple[Callable[[], dict[str, Any]], dict[str, Any], str]]:
    """label -> (the world and the add form's values, a change, the changed field)."""

    def tier() -> dict[str, Any]:
        return {"slug": "free", "name": "Free", "weekly_token_cap": "100"}

    def tenant() -> dict[str, Any]:
        return {"slug": "acme", "name": "Acme", "tier": a_tier().pk}

    def provider() -> dict[str, Any]:
        return {"slug": "moonshot", "kind": "openai", "base_url": "https://moonshot.test/v1"}

    def key() -> dict[str, Any]:
        return {"provider": a_provider().pk, "label": "pool-1", "secret": PLAINTEXT}

    def route() -> dict[str, Any]:
        return {
            "tier": a_tier().pk,
            "model": "auto",
            "provider": a_provider().pk,
            "upstream_model": "kimi-k2",
        }

    def alias() -> dict[str, Any]:
        return {"tier": _create_route().tier.pk, "name": "claude-*", "model": "auto"}

    return {
        "tenants.Tier": (tier, {"weekly_token_cap": "200"}, "weekly_token_cap"),
        "tenants.Tenant": (tenant, {"status": "suspended"}, "status"),
        "routing.Provider": (provider, {"idle_timeout": "30"}, "idle_timeout"),
        "routing.ProviderKey": (key, {"weight": "3"}, "weight"),
        "routing.ModelRoute": (route, {"priority": "5"}, "priority"),
        "routing.ModelAlias": (alias, {"name": "gpt-*"}, "name"),
    }


@pytest.mark.parametrize("label", list(ADMIN_URL))
def test_it_writes_one_row_per_admin_add_change_and_delete_naming_the_staff_user(
    label: str, ops: Client, staff: User
) -> None:
    world, change, field = _admin_cases()[label]
    values = world()
    base = ADMIN_URL[label]
    since = last_id()
    data = {**_form_data(ops, f"{base}add/"), **values}
    response = ops.post(f"{base}add/", data)
    assert response.status_code == 302, response.content.decode()[:3000]
    (created,) = [row for row in new_rows(since) if row.target_type == label]
    assert created.action == "created"
    pk = created.target_id

    since = last_id()
    data = {**_form_data(ops, f"{base}{pk}/change/"), **change}
    data.pop("secret", None)  # empty: the key keeps its secret
    response = ops.post(f"{base}{pk}/change/", data)
    assert response.status_code == 302, response.content.decode()[:3000]
    (updated,) = new_rows(since)
    assert updated.action == "updated" and list(updated.changes) == [field]
    assert str(updated.changes[field][1]) in {change[field], f"{change[field]}.0"}

    since = last_id()
    response = ops.post(f"{base}{pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    (deleted,) = new_rows(since)
    assert (deleted.action, deleted.target_id) == ("deleted", pk)
    for row in (created, updated, deleted):
        assert (row.actor, row.actor_user_id) == ("ops", staff.pk)


def test_it_never_shows_a_key_secret_in_rows_the_admin_or_the_csv(ops: Client) -> None:
    provider = a_provider()
    base = ADMIN_URL["routing.ProviderKey"]
    data = {**_form_data(ops, f"{base}add/"), "provider": provider.pk, "label": "pool-1"}
    assert ops.post(f"{base}add/", {**data, "secret": PLAINTEXT}).status_code == 302
    key = ProviderKey.objects.get()
    seen = _ciphertexts()
    data = _form_data(ops, f"{base}{key.pk}/change/")
    assert ops.post(f"{base}{key.pk}/change/", {**data, "secret": ROTATED}).status_code == 302
    seen |= _ciphertexts()
    rotation = rows()[-1]
    # The last four characters are what the admin shows of a key anyway (••••c9a3).
    assert rotation.changes == {
        "last4": [PLAINTEXT[-4:], ROTATED[-4:]],
        "secret": ["(hidden)", "(changed)"],
    }

    pages = [
        ops.get("/admin/audit/auditentry/").content.decode(),
        ops.get("/admin/audit/auditentry/?q=pool").content.decode(),
        *(ops.get(f"/admin/audit/auditentry/{row.pk}/change/").content.decode() for row in rows()),
        _csv(ops.get(EXPORT)),
    ]
    assert "(changed)" in pages[0]  # the rotation is listed
    for page in pages:
        for secret in (PLAINTEXT, ROTATED, *seen):
            assert secret not in page


# --- the admin of the log ------------------------------------------------------------------


def _csv(response: Any) -> str:
    assert isinstance(response, StreamingHttpResponse)
    assert response["Content-Type"].startswith("text/csv")
    return b"".join(response.streaming_content).decode()  # type: ignore[arg-type]


def test_it_refuses_to_add_change_or_delete_an_entry(ops: Client) -> None:
    entry = audit_record(action="week.reset", target=a_tier())
    assert ops.get("/admin/audit/auditentry/add/").status_code == 403
    assert ops.post("/admin/audit/auditentry/add/", {"action": "forged"}).status_code == 403
    change = f"/admin/audit/auditentry/{entry.pk}/change/"
    assert ops.get(change).status_code == 200  # view only
    ops.post(change, {"action": "forged", "actor": "someone"})
    assert ops.get(f"/admin/audit/auditentry/{entry.pk}/delete/").status_code == 403
    bulk = {"action": "delete_selected", "_selected_action": [entry.pk], "post": "yes"}
    ops.post("/admin/audit/auditentry/", bulk)
    entry.refresh_from_db()
    assert (entry.action, entry.actor) == ("week.reset", "system")
    assert AuditEntry.objects.count() == 2  # the tier's creation and the reset


def test_it_exports_every_filtered_row_as_csv(ops: Client) -> None:
    tier = a_tier()
    tenant_services.tier_update(tier=tier, name="Free plan")
    for number in range(150):  # more than one page of the list
        audit_record(action="week.reset", target=tier, note=f"reset {number}")
    page = ops.get("/admin/audit/auditentry/").content.decode()
    assert f"{EXPORT}?" in page  # the list links its export, filters included
    everything = _csv(ops.get(EXPORT)).splitlines()
    assert everything[0].startswith("at,actor,actor_user_id,action,target_type")
    assert len(everything) == 1 + 152
    resets = _csv(ops.get(EXPORT, {"action": "week.reset"})).splitlines()
    assert len(resets) == 1 + 150
    updated = _csv(ops.get(EXPORT, {"action": "updated"})).splitlines()
    assert len(updated) == 2
    audit_record(action="week.reset", target=tier, note='=HYPERLINK("http://evil.test")')
    (_, line) = _csv(ops.get(EXPORT, {"q": "HYPERLINK"})).splitlines()
    assert line.endswith('\'=HYPERLINK(""http://evil.test"")"')  # no formula in a cell
    assert ops.get(EXPORT, {"nonsense__field": "1"}).status_code == 400


def test_it_filters_the_list_by_actor_action_target_type_and_date(ops: Client) -> None:
    with acting_as("alice"):
        a_tier("one")
    with acting_as("bob"):
        a_provider()

    def listed(**params: Any) -> set[str]:
        response = ops.get("/admin/audit/auditentry/", params)
        assert response.status_code == 200
        return {f"{e.actor} {e.action} {e.target_type}" for e in response.context["cl"].result_list}

    assert listed(actor="alice") == {"alice created tenants.Tier"}
    assert listed(target_type="routing.Provider") == {"bob created routing.Provider"}
    assert listed(action="created", actor="bob") == {"bob created routing.Provider"}
    year = AuditEntry.objects.get(actor="bob").at.year
    assert len(listed(at__year=year)) == 2
    assert listed(at__year=year - 1) == set()
    assert listed(q="alice") == {"alice created tenants.Tier"}


# --- under ASGI (Daphne): the async middleware and the streamed export ---------------------


@pytest.mark.django_db(transaction=True)
async def test_it_names_the_staff_user_and_streams_the_export_under_asgi(staff: User) -> None:
    client = AsyncClient()
    await client.aforce_login(staff)
    tier = await sync_to_async(a_tier)()
    base = ADMIN_URL["tenants.Tier"]
    response = await client.post(
        f"{base}{tier.pk}/change/",
        {
            "slug": "free",
            "name": "Free",
            "weekly_token_cap": "300",
            "requests_per_minute": "60",
            "max_concurrent_requests": "4",
            "default_max_tokens": "4096",
        },
    )
    assert response.status_code == 302
    updated = await AuditEntry.objects.filter(action="updated").aget()
    assert (updated.actor, updated.actor_user_id) == ("ops", staff.pk)
    assert updated.changes == {"weekly_token_cap": [100, 300]}

    export = await client.get(EXPORT)
    assert isinstance(export, StreamingHttpResponse) and export.is_async
    content: Any = export.streaming_content
    text = b"".join([chunk async for chunk in content]).decode()
    assert len(text.splitlines()) == 3 and '"weekly_token_cap"' in text
