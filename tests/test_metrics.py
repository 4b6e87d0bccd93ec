"""Prometheus metrics at /metrics: two Daphne processes report one set, moved by exactly the
traffic sent; the access rules; no secret, prompt or made-up name in a label."""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from prometheus_client.parser import text_string_to_metric_families

from routing.services import provider_create, provider_key_create, route_create
from tenants.services import tenant_create, tier_create
from tests.conftest import (
    JwtKeys,
    LiveProxy,
    World,
    eventually,
    ledger_rows,
    start_proxy,
    stop_proxy,
    unique,
)
from tests.support.mockserver import MockServer

METRICS_TOKEN = f"metrics-{uuid.uuid4().hex}"
HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Say hello"}]

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


class Pair:
    """Two proxy processes sharing one PROMETHEUS_MULTIPROC_DIR: ``a`` serves the metrics to
    a bearer token, ``b`` only to 10.0.0.0/8 (so to nobody here)."""

    def __init__(self, a: LiveProxy, b: LiveProxy, directory: Path) -> None:
        self.a, self.b, self.directory = a, b, directory

    def scrape(self) -> Samples:
        response = httpx.get(
            f"{self.a.url}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}
        )
        assert response.status_code == 200, response.text
        return parse(response.text)


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(value for (n, have), value in samples.items() if n == name and wanted <= have)


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return total(after, name, **labels) - total(before, name, **labels)


@pytest.fixture(scope="module")
def pair(
    django_db_setup: None, tmp_path_factory: pytest.TempPathFactory, jwt_keys: JwtKeys
) -> Iterator[Pair]:
    shared = tmp_path_factory.mktemp("prometheus")
    a = start_proxy(
        tmp_dir=tmp_path_factory.mktemp("metrics-a"),
        jwt_keys=jwt_keys,
        extra_env={"PROMETHEUS_MULTIPROC_DIR": str(shared), "PROXY_METRICS_TOKEN": METRICS_TOKEN},
    )
    b = start_proxy(
        tmp_dir=tmp_path_factory.mktemp("metrics-b"),
        jwt_keys=jwt_keys,
        extra_env={
            "PROMETHEUS_MULTIPROC_DIR": str(shared),
            "PROXY_METRICS_NETWORKS": "10.0.0.0/8",
        },
    )
    yield Pair(a, b, shared)
    stop_proxy(a)
    stop_proxy(b)


def chat(proxy: LiveProxy, token: str, **kwargs: Any) -> Any:
    client = openai.OpenAI(base_url=proxy.openai_base_url, api_key=token, max_retries=0)
    return client.chat.completions.create(messages=HELLO, **kwargs)


def test_it_counts_the_traffic_of_two_processes_exactly(
    pair: Pair, world: World, mock: MockServer
) -> None:
    mock.configure(ttft=0.2, chunk_delay=0.01, chunks=4)
    capped_tier = tier_create(slug=unique("capped"), name="Capped", weekly_token_cap=5)
    route_create(
        tier=capped_tier,
        model="auto",
        provider=world.moonshot,
        upstream_model="kimi-k2",
        input_usd_per_mtok=Decimal("1"),
        output_usd_per_mtok=Decimal("1"),
    )
    capped = tenant_create(slug=unique("capped"), name="Capped", tier=capped_tier)
    before = pair.scrape()

    alice = world.token(world.alice)
    chat(pair.a, alice, model="auto")
    chat(pair.a, alice, model="auto")
    list(chat(pair.b, alice, model="auto", stream=True))
    claude = anthropic.Anthropic(base_url=pair.b.url, api_key=world.token(world.bob), max_retries=0)
    claude.messages.create(model="claude-sonnet-4-5", max_tokens=64, messages=HELLO)  # type: ignore[arg-type]
    with pytest.raises(openai.RateLimitError):
        chat(pair.a, world.token(capped), model="auto")
    with pytest.raises(openai.AuthenticationError):
        chat(pair.b, "not-a-token", model="auto")

    rows = ledger_rows(world.alice, 3)
    (bob_row,) = ledger_rows(world.bob, 1)
    after = pair.scrape()

    def delta(name: str, **labels: str) -> float:
        return moved(before, after, name, **labels)

    auto = {"tier": world.auto.slug, "model": "auto", "provider": world.moonshot.slug}
    sonnet = {"tier": world.max.slug, "model": "claude-sonnet-4-5"}
    requests = "llm_proxy_requests_total"
    assert delta(requests, **auto, wire_format="openai-chat", status="ok", code="200") == 3
    assert delta(requests, **auto) == 3
    assert (
        delta(requests, **sonnet, provider=world.anthropic.slug, wire_format="anthropic-messages")
        == 1
    )
    # Refused before admission: by a cap (its tier known), and unauthenticated (nothing known).
    assert delta(requests, tier=capped_tier.slug, status="refused", code="429", provider="") == 1
    assert delta("llm_proxy_refusals_total", tier=capped_tier.slug, reason="weekly_token_cap") == 1
    assert delta(requests, tier="", status="refused", code="401") == 1
    assert delta(requests) == 6

    # Tokens by kind and cost, to the token and the nano-dollar of the ledger.
    tokens = "gen_ai_client_token_usage"
    for kind, field in (("input", "input_tokens"), ("output", "output_tokens")):
        expected = sum(getattr(row, field) for row in rows)
        assert expected > 0
        assert delta(f"{tokens}_sum", tier=world.auto.slug, gen_ai_token_type=kind) == expected
        assert delta(f"{tokens}_count", tier=world.auto.slug, gen_ai_token_type=kind) == 3
    assert delta(
        f"{tokens}_sum",
        tier=world.max.slug,
        gen_ai_token_type="output",
        gen_ai_operation_name="chat",
        gen_ai_provider_name=world.anthropic.slug,
        gen_ai_request_model="claude-sonnet-4-5-20250929",
    ) == (bob_row.output_tokens)
    cost = delta("llm_proxy_cost_usd_total", tier=world.auto.slug)
    assert cost == pytest.approx(float(sum(row.cost_usd for row in rows)), abs=1e-9)
    assert cost > 0

    # Histograms: one observation per admitted request (all succeeded here).
    for tier, count in ((world.auto.slug, 3), (world.max.slug, 1)):
        assert delta("llm_proxy_request_duration_seconds_count", tier=tier) == count
        assert delta("llm_proxy_overhead_seconds_count", tier=tier) == count
        assert delta("gen_ai_server_time_to_first_token_count", tier=tier) == count
    duration = delta("llm_proxy_request_duration_seconds_sum", tier=world.auto.slug)
    overhead = delta("llm_proxy_overhead_seconds_sum", tier=world.auto.slug)
    first_token = delta("gen_ai_server_time_to_first_token_sum", tier=world.auto.slug)
    # The provider made each of them wait 0.2 s before its first token: not overhead.
    assert first_token >= 3 * 0.2 and duration >= first_token
    assert 0 < overhead < duration - 3 * 0.2
    assert delta("gen_ai_server_time_to_first_token_count") == 4

    # Upstream attempts by provider and key label; nothing failed.
    attempts = "llm_proxy_upstream_attempts_total"
    assert delta(attempts, provider=world.moonshot.slug, key="pool-1") == 3
    assert delta(attempts, provider=world.anthropic.slug, key="pool-1") == 1
    assert delta("llm_proxy_upstream_errors_total") == 0
    # Nothing in flight any more, in either process.
    assert total(after, "llm_proxy_requests_in_flight") == 0
    assert total(after, "llm_proxy_streams_open") == 0
    assert total(after, "llm_proxy_ledger_backlog_entries") >= 0


def test_it_counts_failed_attempts_key_rests_and_switch_offs(
    pair: Pair, world: World, mock: MockServer
) -> None:
    tier = tier_create(slug=unique("fo"), name="Failover", requests_per_minute=1000)
    secrets = {name: f"sk-{name}-{uuid.uuid4().hex}" for name in ("busy", "revoked", "good")}
    providers = {}
    for priority, name in enumerate(secrets):
        provider = provider_create(slug=unique(name), kind="openai", base_url=mock.openai_base_url)
        provider_key_create(provider=provider, label=f"key-{name}", secret=secrets[name])
        route_create(
            tier=tier,
            model="fo",
            provider=provider,
            upstream_model="kimi-k2",
            priority=priority,
            input_usd_per_mtok=Decimal("1"),
            output_usd_per_mtok=Decimal("1"),
        )
        providers[name] = provider.slug
    tenant = tenant_create(slug=unique("fo"), name="Failover", tier=tier)
    mock.configure(
        faults=[
            {"match": {"api_key": secrets["busy"]}, "action": {"type": "status", "status": 429}},
            {
                "match": {"api_key": secrets["revoked"]},
                "action": {"type": "status", "status": 401},
            },
        ]
    )
    before = pair.scrape()
    chat(pair.b, world.token(tenant), model="fo")
    after = pair.scrape()

    def delta(name: str, **labels: str) -> float:
        return moved(before, after, name, **labels)

    for name in secrets:
        labels = {"provider": providers[name], "key": f"key-{name}"}
        assert delta("llm_proxy_upstream_attempts_total", **labels) == 1
    busy = {"provider": providers["busy"], "key": "key-busy"}
    revoked = {"provider": providers["revoked"], "key": "key-revoked"}
    errors = "llm_proxy_upstream_errors_total"
    assert delta(errors, **busy, error="upstream_rate_limited") == 1
    assert delta(errors, **revoked, error="upstream_auth_failed") == 1
    assert delta(errors) == 2
    assert delta("llm_proxy_key_rests_total", **busy) == 1
    assert delta("llm_proxy_key_rests_total") == 1
    assert delta("llm_proxy_key_switch_offs_total", **revoked) == 1
    assert delta("llm_proxy_key_switch_offs_total") == 1
    ok = {"tier": tier.slug, "provider": providers["good"], "status": "ok"}
    assert delta("llm_proxy_requests_total", **ok) == 1


def test_it_serves_metrics_only_to_its_token_or_networks(pair: Pair) -> None:
    url = f"{pair.a.url}/metrics"
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert httpx.get(url, headers={"Authorization": METRICS_TOKEN}).status_code == 401
    good = httpx.get(url, headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert good.status_code == 200
    assert good.headers["content-type"].startswith("text/plain")
    assert "llm_proxy_requests_in_flight" in good.text
    # b serves 10.0.0.0/8 only: a loopback client is refused, whatever header it sends.
    refused = httpx.get(f"{pair.b.url}/metrics", headers={"X-Forwarded-For": "10.1.2.3"})
    assert refused.status_code == 403
    assert "llm_proxy" not in refused.text
    assert httpx.post(url, headers={"Authorization": f"Bearer {METRICS_TOKEN}"}).status_code == 405


def test_it_puts_no_secret_prompt_or_made_up_name_in_a_label(
    pair: Pair, world: World, mock: MockServer
) -> None:
    marker = f"prompt-{uuid.uuid4().hex}"
    made_up = f"model-{uuid.uuid4().hex}"
    token = world.token(world.alice)
    client = openai.OpenAI(base_url=pair.a.openai_base_url, api_key=token, max_retries=0)
    client.chat.completions.create(model="auto", messages=[{"role": "user", "content": marker}])
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(
            model=made_up, messages=[{"role": "user", "content": marker}]
        )
    with pytest.raises(openai.AuthenticationError):
        chat(pair.a, f"{marker}-token", model="auto")
    ledger_rows(world.alice, 1)
    text = httpx.get(
        f"{pair.a.url}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}
    ).text
    values = {value for (_, labels) in parse(text) for _, value in labels}
    forbidden = [marker, made_up, token, METRICS_TOKEN, world.alice.slug, *world.secrets.values()]
    for secret in forbidden:
        assert secret not in text
        assert not any(secret in value for value in values)
    assert world.auto.slug in values  # the scan did read the labels


def test_it_labels_tenants_only_when_asked(
    django_db_setup: None,
    tmp_path: Path,
    jwt_keys: JwtKeys,
    world: World,
    mock: MockServer,
) -> None:
    proxy = start_proxy(
        tmp_dir=tmp_path,
        jwt_keys=jwt_keys,
        extra_env={
            "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prometheus"),
            "PROXY_METRICS_TENANT_LABEL": "true",
        },
    )
    try:
        chat(proxy, world.token(world.alice), model="auto")
        ledger_rows(world.alice, 1)
        # No token set: served to loopback (PROXY_METRICS_NETWORKS' default).
        response = httpx.get(f"{proxy.url}/metrics")
        assert response.status_code == 200
        samples = parse(response.text)
        assert total(samples, "llm_proxy_requests_total", tenant=world.alice.slug) == 1
        assert total(samples, "llm_proxy_cost_usd_total", tenant=world.alice.slug) > 0
    finally:
        stop_proxy(proxy)


def test_it_forgets_the_live_gauges_of_a_killed_process(
    pair: Pair, world: World, mock: MockServer, tmp_path: Path, jwt_keys: JwtKeys
) -> None:
    doomed = start_proxy(
        tmp_dir=tmp_path,
        jwt_keys=jwt_keys,
        extra_env={"PROMETHEUS_MULTIPROC_DIR": str(pair.directory)},
    )
    mock.configure(ttft=30)  # the stream stays open until its process dies
    token = world.token(world.alice)

    def stream() -> None:
        with contextlib.suppress(openai.APIError):  # its proxy is killed under it
            list(chat(doomed, token, model="auto", stream=True))

    reader = threading.Thread(target=stream, daemon=True)
    reader.start()
    try:

        def opened() -> None:
            samples = pair.scrape()
            assert total(samples, "llm_proxy_requests_in_flight") == 1
            assert total(samples, "llm_proxy_streams_open") == 1

        eventually(opened, timeout=5)  # the keep-alives open the stream after a second
    finally:
        doomed.process.kill()  # no exit handler runs
        doomed.process.wait(10)
    samples = pair.scrape()
    assert total(samples, "llm_proxy_requests_in_flight") == 0
    assert total(samples, "llm_proxy_streams_open") == 0
    reader.join(10)
