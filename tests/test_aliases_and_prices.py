"""Model aliases (what agents ask for) and prompt-caching prices: resolved and billed exactly."""

from __future__ import annotations

from decimal import Decimal
from io import StringIO
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command

from routing.context import load_context
from routing.models import ModelAlias, ModelRoute
from routing.services import alias_create, provider_create, provider_key_create, route_create
from tenants.models import Tier
from tenants.services import tenant_create, tier_create
from usage.bill import Price
from usage.limits import estimate

pytestmark = [pytest.mark.django_db, pytest.mark.core]


@pytest.fixture
def tier() -> Tier:
    tier = tier_create(slug="max", name="Max")
    provider = provider_create(slug="anthropic", kind="anthropic", base_url="https://a.test")
    provider_key_create(provider=provider, label="pool-1", secret="sk-ant-secret-1234")
    for model in ("claude-sonnet-4-5", "claude-haiku-4-5"):
        route_create(tier=tier, model=model, provider=provider, upstream_model=f"{model}-2025")
    tenant_create(slug="bob", name="Bob", tier=tier)
    return tier


def test_it_resolves_a_route_then_an_exact_alias_then_the_longest_pattern(tier: Tier) -> None:
    alias_create(tier=tier, name="claude-*", model="claude-sonnet-4-5")
    alias_create(tier=tier, name="claude-haiku-*", model="claude-haiku-4-5")
    alias_create(tier=tier, name="claude-haiku-4-5-fast", model="claude-sonnet-4-5")
    context = load_context("bob")
    assert context is not None

    def target(name: str) -> str | None:
        routes = context.routes_for(name)
        assert all(route.model == name for route in routes)  # under the name asked for
        return routes[0].upstream_model if routes else None

    assert target("claude-haiku-4-5") == "claude-haiku-4-5-2025"  # its own route
    assert target("claude-haiku-4-5-fast") == "claude-sonnet-4-5-2025"  # exact alias
    assert target("claude-haiku-3") == "claude-haiku-4-5-2025"  # longer pattern
    assert target("claude-opus-4-8") == "claude-sonnet-4-5-2025"  # shorter pattern
    assert target("gpt-4o") is None
    assert context.models == ["claude-haiku-4-5", "claude-haiku-4-5-fast", "claude-sonnet-4-5"]


def test_it_catches_every_other_name_with_a_bare_star(tier: Tier) -> None:
    alias_create(tier=tier, name="*", model="claude-haiku-4-5")
    context = load_context("bob")
    assert context is not None
    assert context.routes_for("anything-at-all")[0].upstream_model == "claude-haiku-4-5-2025"


@pytest.mark.parametrize(("name", "model"), [("claude-*-x", "a"), ("c*", "claude-*")])
def test_it_refuses_a_star_anywhere_but_at_the_end(tier: Tier, name: str, model: str) -> None:
    with pytest.raises(ValidationError):
        alias_create(tier=tier, name=name, model=model)


def test_it_applies_aliases_from_the_config_file_declaratively(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("DEMO_MOONSHOT_KEY_1", "DEMO_MOONSHOT_KEY_2", "DEMO_ANTHROPIC_KEY_1"):
        monkeypatch.setenv(name, f"sk-{name.lower()}-1234")
    demo = Path(__file__).resolve().parent.parent / "config" / "demo.toml"
    call_command("apply_config", str(demo), stdout=StringIO())
    assert set(ModelAlias.objects.values_list("tier__slug", "name", "model")) == {
        ("auto", "claude-*", "auto"),
        ("max", "claude-*", "claude-sonnet-5-5"),
    }
    route = ModelRoute.objects.get(tier__slug="max", model="claude-sonnet-5-5")
    assert (route.cache_read_usd_per_mtok, route.cache_write_usd_per_mtok) == (
        Decimal("0.30"),
        Decimal("3.75"),
    )
    changed = demo.read_text().replace(
        '[[aliases]]\ntier = "max"\nname = "claude-*"\nmodel = "claude-sonnet-5-5"\n', ""
    )
    path = tmp_path / "changed.toml"
    path.write_text(changed)
    out = StringIO()
    call_command("apply_config", str(path), stdout=out)
    assert "deleted alias max:claude-*" in out.getvalue()
    assert list(ModelAlias.objects.values_list("tier__slug", flat=True)) == ["auto"]


def test_it_prices_cache_reads_and_writes_at_their_own_prices() -> None:
    price = Price(
        Decimal(3),
        Decimal(15),
        cache_read_usd_per_mtok=Decimal("0.30"),
        cache_write_usd_per_mtok=Decimal("3.75"),
    )
    # 1,000 prompt tokens of which 600 read from the cache and 300 written to it.
    cost = price.cost(
        input_tokens=1000, output_tokens=100, cache_read_tokens=600, cache_write_tokens=300
    )
    assert cost == (100 * 3 + 600 * Decimal("0.30") + 300 * Decimal("3.75") + 100 * 15) / 10**6
    plain = Price(Decimal(3), Decimal(15))  # no cache prices: every prompt token at input
    assert plain.cost(
        input_tokens=1000, output_tokens=100, cache_read_tokens=600, cache_write_tokens=300
    ) == (1000 * 3 + 100 * 15) / Decimal(10**6)


def test_it_reserves_every_prompt_token_at_the_dearest_input_price() -> None:
    price = Price(Decimal(3), Decimal(15), cache_write_usd_per_mtok=Decimal("3.75"))
    tokens, nanos = estimate(prices=[price], body_bytes=3000, max_tokens=100)
    assert tokens == 1000 + 100
    assert nanos == (1000 * Decimal("3.75") + 100 * 15) * 1000  # nano-dollars per mtok
