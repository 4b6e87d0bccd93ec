"""apply_config: declarative, idempotent, all-or-nothing."""

from __future__ import annotations

from io import StringIO
from pathlib import Path

import pytest
from django.apps import apps
from django.core.management import CommandError, call_command

from core.signals import config_changed
from routing import keyring
from routing.models import ModelRoute, Provider, ProviderKey
from tenants.models import Tenant, Tier

pytestmark = [pytest.mark.django_db, pytest.mark.core]

DEMO = Path(__file__).resolve().parent.parent / "config" / "demo.toml"
KEYS = {
    "DEMO_MOONSHOT_KEY_1": "sk-moon-one-1111",
    "DEMO_MOONSHOT_KEY_2": "sk-moon-two-2222",
    "DEMO_ANTHROPIC_KEY_1": "sk-ant-three-3333",
}


@pytest.fixture
def key_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in KEYS.items():
        monkeypatch.setenv(name, value)


def apply(path: Path, *args: str) -> str:
    out = StringIO()
    call_command("apply_config", str(path), *args, stdout=out)
    return out.getvalue()


def snapshot() -> list[tuple[object, ...]]:
    rows: list[tuple[object, ...]] = []
    for model in (Tier, Provider, ProviderKey, ModelRoute, Tenant):
        rows += [tuple(r.values()) for r in model._default_manager.order_by("pk").values()]
    return rows


def test_it_creates_everything_the_file_names(key_env: None) -> None:
    out = apply(DEMO)
    assert "created tier auto" in out
    assert Tier.objects.get(slug="auto").weekly_token_cap == 2_000_000
    assert Tenant.objects.get(slug="acme").tier.slug == "auto"
    assert ModelRoute.objects.filter(enabled=True).count() == 4
    key = ProviderKey.objects.get(provider__slug="moonshot", label="pool-2")
    assert key.weight == 2 and key.last4 == "2222"
    assert keyring.matches(key.secret_ciphertext, KEYS["DEMO_MOONSHOT_KEY_2"])


def test_it_changes_nothing_the_second_time(key_env: None) -> None:
    apply(DEMO)
    before = snapshot()
    out = apply(DEMO)
    assert "no changes" in out
    assert snapshot() == before  # not even updated_at or the key ciphertexts moved


def test_it_names_an_unset_environment_variable(
    key_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DEMO_ANTHROPIC_KEY_1")
    with pytest.raises(CommandError, match="DEMO_ANTHROPIC_KEY_1"):
        apply(DEMO)
    assert not Tier.objects.exists()  # validated before anything was written


def test_it_updates_what_changed_and_disables_what_was_removed(
    key_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    apply(DEMO)
    text = DEMO.read_text()
    text = text.replace('output_usd_per_mtok = "15.00"', 'output_usd_per_mtok = "16.00"')
    # Drop the second auto route and the second moonshot key.
    text = text.replace(
        '[[routes]]\ntier = "auto"\nmodel = "kimi-k2"',
        '[[routes]]\ntier = "auto"\nmodel = "kimi-k2x"',
    )
    text = text.replace('  { label = "pool-2", env = "DEMO_MOONSHOT_KEY_2", weight = 2 },\n', "")
    monkeypatch.setenv("DEMO_MOONSHOT_KEY_1", "sk-moon-new-9999")
    changed = tmp_path / "changed.toml"
    changed.write_text(text)
    out = apply(changed)
    assert "updated key moonshot/pool-1 (secret)" in out
    assert ProviderKey.objects.get(label="pool-1", provider__slug="moonshot").last4 == "9999"
    assert not ProviderKey.objects.get(label="pool-2").enabled
    assert not ModelRoute.objects.get(model="kimi-k2").enabled
    assert ModelRoute.objects.get(model="kimi-k2x").enabled
    assert {str(r.output_usd_per_mtok) for r in ModelRoute.objects.filter(tier__slug="max")} == {
        "16.000000"
    }
    assert "no changes" in apply(changed)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[tiers.auto]\nname = "A"\nweekly_tokens = 5\n', "unknown field"),
        ("[tiers.auto]\nweekly_token_cap = 5\n", "missing field"),
        ('[tiers.auto]\nname = "A"\nrequests_per_minute = "many"\n', "must be an integer"),
        (
            '[[routes]]\ntier = "nope"\nmodel = "m"\nprovider = "p"\nupstream_model = "u"\n',
            "no tier",
        ),
        ('[providers.p]\nkind = "openai"\nbase_url = "not a url"\n', "base_url"),
        ('[providers.p]\nkind = "soap"\nbase_url = "https://x.test"\n', "kind"),
        ("[tiers.auto\n", "not valid TOML"),
        ("[extras]\nx = 1\n", "Unknown top-level"),
    ],
)
def test_it_explains_a_bad_file(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(CommandError, match=message):
        apply(path)
    assert not Tier.objects.exists() and not Provider.objects.exists()


# --- --dry-run ------------------------------------------------------------------------------


def everything() -> dict[str, list[tuple[object, ...]]]:
    """Every row of every model (the audit log's too, once it exists), by model."""
    return {
        model._meta.label: [
            tuple(r.values()) for r in model._default_manager.order_by("pk").values()
        ]
        for model in apps.get_models()
        if model._meta.app_label not in ("sessions",)
    }


def changes(out: str) -> list[str]:
    """The change lines of apply_config's output (all but the summary)."""
    return out.splitlines()[:-1]


def changed_demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The demo file with a price changed, a route renamed, a key dropped and rotated."""
    text = DEMO.read_text()
    text = text.replace('output_usd_per_mtok = "15.00"', 'output_usd_per_mtok = "16.00"')
    text = text.replace(
        '[[routes]]\ntier = "auto"\nmodel = "kimi-k2"',
        '[[routes]]\ntier = "auto"\nmodel = "kimi-k2x"',
    )
    text = text.replace('  { label = "pool-2", env = "DEMO_MOONSHOT_KEY_2", weight = 2 },\n', "")
    monkeypatch.setenv("DEMO_MOONSHOT_KEY_1", "sk-moon-new-9999")
    path = tmp_path / "changed.toml"
    path.write_text(text)
    return path


def test_it_dry_runs_a_first_apply_writing_nothing(key_env: None) -> None:
    before = everything()
    dry = apply(DEMO, "--dry-run")
    assert everything() == before
    assert dry.splitlines()[-1].endswith("nothing was written.")
    real = apply(DEMO)
    assert "created tier auto" in changes(dry)
    assert changes(dry) == changes(real)  # what it said is what a real run does
    assert everything() != before


def test_it_dry_runs_changes_to_an_existing_setup_writing_nothing(
    key_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    apply(DEMO)
    path = changed_demo(tmp_path, monkeypatch)
    before = everything()
    dry = apply(path, "--dry-run")
    assert everything() == before  # no price, route, key or secret moved
    assert "updated key moonshot/pool-1 (secret)" in changes(dry)
    assert ProviderKey.objects.get(label="pool-2").enabled
    real = apply(path)
    assert changes(dry) == changes(real)
    assert not ProviderKey.objects.get(label="pool-2").enabled


def test_it_dry_runs_an_unchanged_file_as_no_changes(key_env: None) -> None:
    apply(DEMO)
    assert changes(apply(DEMO, "--dry-run")) == []


def test_it_refuses_a_bad_file_on_a_dry_run_too(
    key_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DEMO_ANTHROPIC_KEY_1")
    with pytest.raises(CommandError, match="DEMO_ANTHROPIC_KEY_1"):
        apply(DEMO, "--dry-run")


@pytest.mark.django_db(transaction=True)
def test_it_announces_no_config_change_on_a_dry_run(key_env: None) -> None:
    # A real transaction, committed or rolled back for real: the announcements (and the key
    # health clean-up) wait for a commit, which a dry run never makes.
    announced: list[object] = []

    def receiver(**kwargs: object) -> None:
        announced.append(kwargs)

    config_changed.connect(receiver, dispatch_uid="test-dry-run")
    try:
        apply(DEMO, "--dry-run")
        assert announced == []
        assert not Tier.objects.exists()
        apply(DEMO)
        assert announced  # the same file, really applied, announces its changes
    finally:
        config_changed.disconnect(dispatch_uid="test-dry-run")
