"""Model aliases (what agents ask for) and prompt-caching prices: resolved and billed exactly."""

from __future__ import annotations

import json
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


@pytest.mark.parametrize(
    ("name", "model"),
    [("claude-*-x", "claude-haiku-4-5"), ("c*", "claude-*"), ("claude-*", "claude-sonet-4-5")],
)
def test_it_refuses_a_misplaced_star_or_a_target_the_tier_does_not_route(
    tier: Tier, name: str, model: str
) -> None:
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


def test_it_bills_a_lost_requests_cache_tokens_at_their_prices() -> None:
    """A request whose worker died is billed from its last progress, cache kinds included:
    a cache write costs more than plain input, so dropping it would undercharge."""
    from datetime import UTC, datetime

    from usage.bill import Bill, Tokens
    from usage.limits import Admission, _lost_bill
    from usage.weeks import week_of

    now = datetime(2026, 12, 1, tzinfo=UTC)
    price = Price(
        Decimal(3),
        Decimal(15),
        cache_read_usd_per_mtok=Decimal("0.30"),
        cache_write_usd_per_mtok=Decimal("3.75"),
    )
    pending = Bill(
        request_id="req_lost",
        tenant_id=1,
        tier_id=1,
        route_id=1,
        provider_key_id=1,
        model="claude",
        provider_slug="anthropic",
        upstream_model="claude-up",
        stream=True,
        tokens=Tokens(input=100),
        price=price,
        status="lost",
        http_status=0,
        attempts=1,
        latency_ms=0,
        created_at=now,
        week=week_of(now).id,
    )
    admission = Admission(
        request_id="req_lost",
        tenant_id=1,
        week=week_of(now),
        pending=pending,
        progress=lambda: Tokens(
            input=1000, output=50, cache_read=600, cache_write=300, reasoning=20
        ),
        reserved_tokens=2000,
    )
    tokens = _lost_bill(admission).tokens
    assert (tokens.input, tokens.output, tokens.cache_read, tokens.cache_write) == (
        1000,
        50,
        600,
        300,
    )
    assert tokens.reasoning == 20
    # Bounded like the rest: no kind past what holds it.
    admission.progress = lambda: Tokens(input=10, output=5, cache_read=40, cache_write=40)
    tokens = _lost_bill(admission).tokens
    assert (tokens.cache_read, tokens.cache_write) == (10, 0)


def test_it_refuses_a_model_name_longer_than_the_ledger_holds() -> None:
    """A pattern alias takes any name, and the ledger records the name asked for: one longer
    than its column would stop the drain (PostgreSQL refuses it) for every tenant."""
    from core.errors import ProxyError
    from routing.codecs.anthropic_messages import parse_messages_request
    from routing.codecs.openai_chat import MAX_MODEL_NAME, parse_chat_request

    name = "claude-" + "x" * MAX_MODEL_NAME
    chat = {"model": name, "messages": [{"role": "user", "content": "hi"}]}
    with pytest.raises(ProxyError) as caught:
        parse_chat_request(json.dumps(chat).encode(), max_messages=10)
    assert (caught.value.status, caught.value.param) == (400, "model")
    with pytest.raises(ProxyError) as caught:
        parse_messages_request(
            json.dumps({**chat, "max_tokens": 5}).encode(), headers={}, max_messages=10
        )
    assert caught.value.status == 400
    parse_chat_request(
        json.dumps({**chat, "model": name[:MAX_MODEL_NAME]}).encode(), max_messages=10
    )


def test_it_keeps_a_ledger_record_its_columns_cannot_hold_out_of_the_batch() -> None:
    from usage.ledger import record_row

    record = {
        "request_id": "req_long",
        "tenant_id": 1,
        "tier_id": 1,
        "model": "m" * 201,
        "created_at": "2026-12-01T00:00:00+00:00",
        "cost_nanos": 0,
    }
    with pytest.raises(ValueError, match="model is too long"):
        record_row(record)  # the drain moves it to the dead-letter stream


def test_it_names_the_tenants_model_in_an_error_whatever_characters_it_has() -> None:
    """An alias pattern lets the tenant's name be any string: it replaces the upstream
    name as text, never as a regular-expression template (`\\g<0>` would quote it back)."""
    from dataclasses import replace

    from routing.redaction import redact
    from tests.support.routes import make_route

    route = make_route("anthropic", base_url="https://a.test", upstream_model="claude-up-2025")
    for public in ("claude-\\g<0>", "claude-\\1"):
        aliased = replace(route, model=public)
        text = redact(
            "model claude-up-2025 does not support this",
            route=aliased,
            key=aliased.provider.keys[0],
        )
        assert text == f"model {public} does not support this"
