"""apply_config: declarative, idempotent, all-or-nothing."""

from __future__ import annotations

from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

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


def apply(path: Path) -> str:
    out = StringIO()
    call_command("apply_config", str(path), stdout=out)
    return out.getvalue()


def snapshot() -> list[tuple[object, ...]]:
    rows: list[tuple[object, ...]] = []
    for model in (Tier, Provider, ProviderKey, ModelRoute, Tenant):
        rows += [tuple(r.values()) for r in model.objects.order_by("pk").values()]
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
