"""One write path: every change to what a tenant context is built from goes through a service,
which announces it (core.signals.config_changed, on commit); the announcement drops this
process's cached contexts and moves the shared generation, so every other process follows.
Every staff action on a tenant leaves one entry in the admin's log."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from io import StringIO
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from django.conf import settings
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth.models import User
from django.contrib.contenttypes.models import ContentType
from django.core.management import call_command
from django.db import models, transaction
from django.test import Client, TestCase, override_settings
from django.utils import timezone

from core.redis import sync_client
from core.signals import config_changed
from routing import services
from routing.context import context_cache
from routing.generation import CONFIG_GENERATION_KEY
from routing.health import KEY_HEALTH_KEY, key_health_get
from routing.models import ModelRoute, Provider, ProviderKey
from tenants import services as tenant_services
from tenants.models import Tenant, Tier
from usage.weeks import week_of

pytestmark = pytest.mark.core

CHANGELIST = "/admin/tenants/tenant/"


# --- helpers and fixtures ------------------------------------------------------------------


@dataclass
class Config:
    tier: Tier
    other_tier: Tier  # no tenant, no route: free to move to or delete
    tenant: Tenant
    provider: Provider
    other_provider: Provider  # no route: free to delete
    key: ProviderKey
    route: ModelRoute


@pytest.fixture(autouse=True)
def empty_store() -> None:
    sync_client().flushdb()  # this suite's own Redis database (or the embedded store)


@pytest.fixture
def config(db: None) -> Config:
    tier = tenant_services.tier_create(slug="wp-tier", name="Write path")
    provider = services.provider_create(
        slug="wp-moonshot", kind="openai", base_url="https://moonshot.test/v1"
    )
    return Config(
        tier=tier,
        other_tier=tenant_services.tier_create(slug="wp-other", name="Other"),
        tenant=tenant_services.tenant_create(slug="wp-acme", name="Acme", tier=tier),
        provider=provider,
        other_provider=services.provider_create(
            slug="wp-spare", kind="anthropic", base_url="https://anthropic.test"
        ),
        key=services.provider_key_create(provider=provider, label="pool-1", secret="sk-wp-1111"),
        route=services.route_create(
            tier=tier, model="auto", provider=provider, upstream_model="kimi-k2"
        ),
    )


@pytest.fixture
def announced() -> Iterator[list[object]]:
    """Every config_changed sent during the test."""
    sent: list[object] = []

    def receiver(sender: object, **kwargs: object) -> None:
        sent.append(sender)

    config_changed.connect(receiver, weak=False, dispatch_uid="test-write-path")
    yield sent
    config_changed.disconnect(dispatch_uid="test-write-path")


@pytest.fixture
def staff(db: None) -> User:
    return User.objects.create_superuser("wp-ops", "ops@example.test", "pw")


@pytest.fixture
def ops(staff: User) -> Client:
    """The admin, logged in as a superuser."""
    client = Client()
    client.force_login(staff)
    return client


def shared_generation() -> bytes | None:
    """The generation every process compares with its own (None: never set)."""
    value = sync_client().get(CONFIG_GENERATION_KEY)
    return value if isinstance(value, bytes) else None


def log_of(tenant: Tenant) -> list[LogEntry]:
    return list(
        LogEntry.objects.filter(
            content_type=ContentType.objects.get_for_model(Tenant), object_id=str(tenant.pk)
        )
    )


def act(client: Client, action: str, *tenants: Tenant) -> None:
    """Run a changelist action of the tenant admin on ``tenants``."""
    response = client.post(
        CHANGELIST,
        {"action": action, "_selected_action": [str(t.pk) for t in tenants], "index": "0"},
    )
    assert response.status_code == 302, response.content.decode()[:2000]


def apply(path: Path) -> str:
    out = StringIO()
    call_command("apply_config", str(path), stdout=out)
    return out.getvalue()


# --- staff actions: one log entry each -----------------------------------------------------


@pytest.mark.parametrize(
    ("action", "message"),
    [
        ("suspend", "Suspended"),
        ("activate", "Activated"),
        ("revoke_tokens", "Revoked all tokens"),
        ("reset_week", f"Reset week {week_of(timezone.now()).id}: forgave 0 tokens, $0."),
    ],
)
def test_it_logs_each_staff_action_on_a_tenant_once(
    ops: Client,
    staff: User,
    config: Config,
    announced: list[object],
    action: str,
    message: str,
) -> None:
    bystander = tenant_services.tenant_create(slug="wp-bystander", name="B", tier=config.tier)
    with TestCase.captureOnCommitCallbacks(execute=True):
        act(ops, action, config.tenant)
    [entry] = log_of(config.tenant)
    assert entry.action_flag == CHANGE
    assert entry.user_id == staff.pk
    assert entry.get_change_message().startswith(message)
    assert log_of(bystander) == []
    # The changes to what tenant contexts hold are announced; forgiving usage is not one.
    assert len(announced) == (0 if action == "reset_week" else 1)


def test_it_logs_one_entry_per_tenant_for_an_action_on_several(ops: Client, config: Config) -> None:
    other = tenant_services.tenant_create(slug="wp-other", name="Other", tier=config.tier)
    act(ops, "suspend", config.tenant, other)
    for tenant in (config.tenant, other):
        [entry] = log_of(tenant)
        assert entry.get_change_message() == "Suspended"
        tenant.refresh_from_db()
        assert not tenant.is_active


def test_it_logs_a_tier_change_made_in_the_change_form_once(
    ops: Client, config: Config, announced: list[object]
) -> None:
    form = {
        "slug": config.tenant.slug,
        "name": "Acme Corp",
        "tier": str(config.other_tier.pk),
        "status": Tenant.Status.ACTIVE,
        "weekly_token_cap_override": "",
        "weekly_cost_cap_usd_override": "",
        "requests_per_minute_override": "",
        "max_concurrent_requests_override": "",
        "_save": "Save",
    }
    with TestCase.captureOnCommitCallbacks(execute=True):
        response = ops.post(f"{CHANGELIST}{config.tenant.pk}/change/", form)
    assert response.status_code == 302, response.content.decode()[:2000]
    config.tenant.refresh_from_db()
    assert (config.tenant.tier, config.tenant.name) == (config.other_tier, "Acme Corp")
    [entry] = log_of(config.tenant)
    assert entry.get_change_message() == "Moved from tier wp-tier to tier wp-other. Changed Name."
    assert len(announced) == 1


def test_it_creates_a_tenant_from_the_admin_through_the_service(
    ops: Client, config: Config, announced: list[object]
) -> None:
    form = {
        "slug": "wp-new",
        "name": "New",
        "tier": str(config.tier.pk),
        "status": Tenant.Status.ACTIVE,
        "_save": "Save",
    }
    with TestCase.captureOnCommitCallbacks(execute=True):
        response = ops.post(f"{CHANGELIST}add/", form)
    assert response.status_code == 302, response.content.decode()[:2000]
    created = Tenant.objects.get(slug="wp-new")
    assert response["Location"] == CHANGELIST  # the admin went on with the saved tenant
    assert [entry.get_change_message() for entry in log_of(created)] == ["Added."]
    assert len(announced) == 1


def test_it_adds_and_deletes_keys_from_the_admin_through_the_services(
    ops: Client, config: Config, announced: list[object]
) -> None:
    url = "/admin/routing/providerkey/"
    form = {
        "provider": str(config.provider.pk),
        "label": "pool-2",
        "secret": "sk-wp-admin-9876",
        "weight": "2",
        "enabled": "on",
    }
    with TestCase.captureOnCommitCallbacks(execute=True):
        response = ops.post(f"{url}add/", form)
    assert response.status_code == 302, response.content.decode()[:2000]
    added = ProviderKey.objects.get(provider=config.provider, label="pool-2")
    assert (added.weight, added.last4) == (2, "9876")
    assert len(announced) == 1

    announced.clear()
    sync_client().hset(KEY_HEALTH_KEY, str(added.pk), "off")
    selected = [str(added.pk), str(config.key.pk)]
    with TestCase.captureOnCommitCallbacks(execute=True):
        response = ops.post(
            url, {"action": "delete_selected", "_selected_action": selected, "post": "yes"}
        )
    assert response.status_code == 302, response.content.decode()[:2000]
    assert not ProviderKey.objects.exists()
    assert len(announced) == 2  # one per key deleted
    assert key_health_get() == {}  # nothing is left of what the proxy knew of them


# --- a change made with QuerySet.update() reaches every process ----------------------------


@pytest.mark.django_db(transaction=True)
def test_it_announces_a_change_made_with_update_when_it_commits(
    config: Config, announced: list[object]
) -> None:
    """tenant_revoke_tokens bumps the version with QuerySet.update(), which sends no model
    signal: the service announces the change itself, once it is committed."""
    generation, shared = context_cache.generation, shared_generation()
    version = config.tenant.token_version

    with transaction.atomic():
        tenant_services.tenant_revoke_tokens(tenant=config.tenant)
        # Not before the commit: another process could cache the old rows again.
        assert announced == []
        assert (context_cache.generation, shared_generation()) == (generation, shared)

    assert len(announced) == 1
    assert context_cache.generation > generation  # this process: its contexts are dropped
    assert shared_generation() not in (None, shared)  # every other process: at its next poll
    assert Tenant.objects.get(pk=config.tenant.pk).token_version == version + 1


def test_it_announces_nothing_for_a_change_rolled_back(
    config: Config, announced: list[object]
) -> None:
    shared = shared_generation()
    with TestCase.captureOnCommitCallbacks(execute=True):
        with pytest.raises(RuntimeError), transaction.atomic():
            tenant_services.tenant_suspend(tenant=config.tenant)
            raise RuntimeError("rolled back")
    assert announced == []
    assert shared_generation() == shared


def rotate_encryption(config: Config) -> None:
    with override_settings(
        PROXY_ENCRYPTION_KEYS=[Fernet.generate_key().decode(), *settings.PROXY_ENCRYPTION_KEYS]
    ):
        assert services.provider_keys_rotate_encryption() == (1, 0)


WRITES: dict[str, Callable[[Config], object]] = {
    "tier_create": lambda c: tenant_services.tier_create(slug="wp-t3", name="T3"),
    "tier_update": lambda c: tenant_services.tier_update(tier=c.tier, weekly_token_cap=10),
    "tier_delete": lambda c: tenant_services.tier_delete(tier=c.other_tier),
    "tenant_create": lambda c: tenant_services.tenant_create(slug="wp-n", name="N", tier=c.tier),
    "tenant_update": lambda c: tenant_services.tenant_update(tenant=c.tenant, tier=c.other_tier),
    "tenant_delete": lambda c: tenant_services.tenant_delete(tenant=c.tenant),
    "tenant_suspend": lambda c: tenant_services.tenant_suspend(tenant=c.tenant),
    "tenant_activate": lambda c: tenant_services.tenant_activate(tenant=c.tenant),
    "tenant_revoke_tokens": lambda c: tenant_services.tenant_revoke_tokens(tenant=c.tenant),
    "provider_create": lambda c: services.provider_create(
        slug="wp-p3", kind="openai", base_url="https://p3.test/v1"
    ),
    "provider_update": lambda c: services.provider_update(provider=c.provider, enabled=False),
    "provider_delete": lambda c: services.provider_delete(provider=c.other_provider),
    "provider_key_create": lambda c: services.provider_key_create(
        provider=c.provider, label="pool-2", secret="sk-wp-2222"
    ),
    "provider_key_update": lambda c: services.provider_key_update(key=c.key, weight=3),
    "provider_key_new_secret": lambda c: services.provider_key_update(
        key=c.key, secret="sk-wp-3333"
    ),
    "provider_key_disable": lambda c: services.provider_key_disable(key=c.key),
    "provider_key_delete": lambda c: services.provider_key_delete(key=c.key),
    "provider_keys_rotate_encryption": rotate_encryption,
    "route_create": lambda c: services.route_create(
        tier=c.tier, model="auto", provider=c.provider, upstream_model="kimi-k2.5"
    ),
    "route_update": lambda c: services.route_update(route=c.route, priority=5),
    "route_delete": lambda c: services.route_delete(route=c.route),
}


@pytest.mark.parametrize("write", list(WRITES))
def test_it_announces_every_write_to_what_a_context_is_built_from(
    config: Config, announced: list[object], write: str
) -> None:
    generation, shared = context_cache.generation, shared_generation()
    with TestCase.captureOnCommitCallbacks(execute=True):
        WRITES[write](config)
        assert announced == []  # on commit, not before
    assert len(announced) == 1
    assert context_cache.generation == generation + 1
    assert shared_generation() not in (None, shared)


def test_it_writes_and_announces_nothing_for_an_update_that_changes_nothing(
    config: Config, announced: list[object]
) -> None:
    updated_at = config.tier.updated_at
    with TestCase.captureOnCommitCallbacks(execute=True):
        tenant_services.tier_update(tier=config.tier)
    assert announced == []
    assert Tier.objects.get(pk=config.tier.pk).updated_at == updated_at


def default_of(model: type[models.Model], name: str) -> object:
    model_field = model._meta.get_field(name)
    assert isinstance(model_field, models.Field)
    return model_field.get_default()


def test_it_takes_a_left_out_field_from_the_model_default(config: Config) -> None:
    for name in ("requests_per_minute", "max_concurrent_requests", "default_max_tokens"):
        assert getattr(config.tier, name) == default_of(Tier, name)
    assert config.provider.total_timeout == default_of(Provider, "total_timeout")
    assert config.route.input_usd_per_mtok == default_of(ModelRoute, "input_usd_per_mtok")
    assert config.key.weight == default_of(ProviderKey, "weight")


# --- key health: cleared by the key services, and only when a key is back on ---------------


def test_it_forgets_a_refused_keys_health_only_when_it_is_switched_on_again(
    config: Config,
) -> None:
    sync_client().hset(KEY_HEALTH_KEY, str(config.key.pk), "off")
    with TestCase.captureOnCommitCallbacks(execute=True):
        services.provider_key_disable(key=config.key, reason="401 from the provider")
    config.key.refresh_from_db()
    assert (config.key.enabled, config.key.disabled_reason) == (False, "401 from the provider")
    assert key_health_get() == {config.key.pk: "off"}

    with TestCase.captureOnCommitCallbacks(execute=True):
        services.provider_key_update(key=config.key, enabled=True)
    config.key.refresh_from_db()
    assert (config.key.enabled, config.key.disabled_reason) == (True, "")
    assert key_health_get() == {}


def test_it_notes_a_resting_keys_error_without_announcing(
    config: Config, announced: list[object]
) -> None:
    with TestCase.captureOnCommitCallbacks(execute=True):
        services.provider_key_note_error(key_id=config.key.pk, error="429 slow down")
    config.key.refresh_from_db()
    assert (config.key.last_error, config.key.enabled) == ("429 slow down", True)
    assert config.key.last_error_at is not None
    assert announced == []


# --- apply_config writes through the services ----------------------------------------------

FILE = """
[tiers.wp-file]
name = "From a file"

[tenants.wp-filed]
name = "Filed"
tier = "wp-file"
{status}
"""


@pytest.mark.django_db
def test_it_announces_a_tenant_suspended_by_a_config_file(
    tmp_path: Path, announced: list[object]
) -> None:
    path = tmp_path / "config.toml"
    path.write_text(FILE.format(status=""))
    with TestCase.captureOnCommitCallbacks(execute=True):
        assert "created tenant wp-filed" in apply(path)
    assert announced  # the tier and the tenant were created through the services

    announced.clear()
    generation, shared = context_cache.generation, shared_generation()
    path.write_text(FILE.format(status='status = "suspended"'))
    with TestCase.captureOnCommitCallbacks(execute=True):
        assert "updated tenant wp-filed (status)" in apply(path)
    assert not Tenant.objects.get(slug="wp-filed").is_active
    assert len(announced) == 1
    assert context_cache.generation == generation + 1
    assert shared_generation() not in (None, shared)

    announced.clear()
    with TestCase.captureOnCommitCallbacks(execute=True):
        assert "no changes" in apply(path)
    assert announced == []
