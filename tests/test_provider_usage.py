"""Usage a provider or a tenant could bend: validated, bounded by the reservation, never lost.

A provider's usage figures are its word; an impossible one (negative, not an integer,
absurdly large, more output than the limit it was sent, missing from a whole answer) is
billed by the proxy's estimate, flagged on the ledger row, and the counter still equals the
ledger. A tenant sending two completion limits gets exactly one of them honoured.
"""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from tenants.models import Tenant
from tests.conftest import LiveProxy, World, ledger_rows
from tests.support.mockserver import MockServer
from tests.test_caps_live import capped_tenant, counter, needs_redis
from usage.models import UsageRecord

CHUNKS = 6  # what the mock writes: one token per piece
LIMIT = 50  # the max_tokens every request here sends (the output bound)

# Each bad report in both APIs' own field names: (name, OpenAI usage, Anthropic usage).
BAD_USAGE: list[tuple[str, dict[str, Any] | None, dict[str, Any] | None]] = [
    (
        "negative",
        {"prompt_tokens": -5, "completion_tokens": -100, "total_tokens": -105},
        {"input_tokens": -5, "output_tokens": -100},
    ),
    (
        "huge",
        {"prompt_tokens": 10**20, "completion_tokens": 10**20, "total_tokens": 2 * 10**20},
        {"input_tokens": 10**20, "output_tokens": 10**20},
    ),
    (
        "floats",
        {"prompt_tokens": 12.0, "completion_tokens": 3.5, "total_tokens": 15.5},
        {"input_tokens": 12.0, "output_tokens": 3.5},
    ),
    (
        "strings",
        {"prompt_tokens": "12", "completion_tokens": "6", "total_tokens": "18"},
        {"input_tokens": "12", "output_tokens": "6"},
    ),
    ("missing", None, None),
    (
        "past the limit",
        {"prompt_tokens": 10, "completion_tokens": 5000, "total_tokens": 5010},
        {"input_tokens": 10, "output_tokens": 5000},
    ),
]


def chat(proxy: LiveProxy, token: str, model: str, *, stream: bool) -> httpx.Response:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "hi there"}],
        "max_tokens": LIMIT,
        "stream": stream,
    }
    return httpx.post(
        f"{proxy.url}/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )


def assert_counter_is_the_ledger(tenant: Tenant, rows: list[UsageRecord]) -> None:
    assert counter(tenant) == (sum(row.total_tokens for row in rows), 0)


@needs_redis
@pytest.mark.parametrize("stream", [False, True], ids=["answer", "stream"])
@pytest.mark.parametrize(("case", "openai_usage", "anthropic_usage"), BAD_USAGE)
def test_it_bills_an_impossible_usage_report_by_its_estimate(
    proxy: LiveProxy,
    world: World,
    mock: MockServer,
    case: str,
    openai_usage: dict[str, Any] | None,
    anthropic_usage: dict[str, Any] | None,
    stream: bool,
) -> None:
    tenant = capped_tenant(world)
    token = world.token(tenant)
    mock.configure(chunks=CHUNKS)
    # Pass-through to an OpenAI-kind provider, and translation from an Anthropic one.
    for model, usage in (("auto", openai_usage), ("claude", anthropic_usage)):
        mock.configure(faults=[{"action": {"type": "usage", "usage": usage}, "times": 1}])
        response = chat(proxy, token, model, stream=stream)
        assert response.status_code == 200, response.text  # the answer itself is good
        assert "[DONE]" in response.text if stream else "choices" in response.json()
    assert [r["fault"] for r in mock.requests()[-2:]] == ["usage", "usage"]
    rows = ledger_rows(tenant, 2)
    for row in rows:
        assert (row.status, row.usage_invalid, row.usage_reported) == ("ok", True, False), case
        # The prompt estimate, and the output the proxy saw: never negative, never past the
        # limit the provider was sent, never the provider's impossible figure.
        assert 0 < row.input_tokens < 100
        assert 0 < row.output_tokens <= LIMIT
        if stream:
            assert row.output_tokens == CHUNKS  # one content delta per piece
        assert row.cost_usd > 0
    assert_counter_is_the_ledger(tenant, rows)


@needs_redis
def test_it_trusts_a_possible_usage_report(
    proxy: LiveProxy, world: World, mock: MockServer
) -> None:
    tenant = capped_tenant(world)
    mock.configure(chunks=CHUNKS)
    for stream in (False, True):
        for model in ("auto", "claude"):
            assert chat(proxy, world.token(tenant), model, stream=stream).status_code == 200
    rows = ledger_rows(tenant, 4)
    for row, record in zip(rows, mock.requests()[-4:], strict=True):
        assert (row.usage_invalid, row.usage_reported) == (False, True)
        assert (row.input_tokens, row.output_tokens) == (
            record["usage"]["input_tokens"],
            record["usage"]["output_tokens"],
        )
    assert_counter_is_the_ledger(tenant, rows)


@needs_redis
@pytest.mark.parametrize("stream", [False, True], ids=["answer", "stream"])
def test_it_holds_a_tenant_to_the_one_limit_it_reserved(
    proxy: LiveProxy, world: World, mock: MockServer, stream: bool
) -> None:
    cap = 3000
    tenant = capped_tenant(world, weekly_token_cap=cap)
    # A provider that keeps to max_tokens even when max_completion_tokens is set (as some
    # OpenAI-compatible servers do), able to write far past the cap.
    mock.configure(chunks=8000, faults=[{"action": {"type": "prefer_max_tokens"}}])
    client = openai.OpenAI(
        base_url=proxy.openai_base_url, api_key=world.token(tenant), max_retries=0
    )
    body: dict[str, Any] = {
        "model": "auto",
        "messages": [{"role": "user", "content": "hi"}],
        "max_completion_tokens": 10,
        "max_tokens": 8000,
    }
    if stream:
        chunks = list(client.chat.completions.create(**body, stream=True))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    else:
        answer = client.chat.completions.create(**body)
        text = answer.choices[0].message.content or ""
    sent = mock.requests()[-1]["body"]
    assert (sent["max_completion_tokens"], sent["max_tokens"]) == (10, 10)
    assert len(text) <= 10 * 12  # ten pieces of the mock's words at most
    [row] = ledger_rows(tenant, 1)
    assert row.output_tokens <= 10
    used, reserved = counter(tenant)
    assert used == row.total_tokens <= cap and reserved == 0


def test_it_reserves_the_smaller_of_two_limits(
    proxy: LiveProxy, world: World, mock: MockServer
) -> None:
    client = openai.OpenAI(
        base_url=proxy.openai_base_url, api_key=world.token(world.alice), max_retries=0
    )
    mock.configure(chunks=40, faults=[{"action": {"type": "prefer_max_tokens"}}])
    client.chat.completions.create(
        model="auto",
        messages=[{"role": "user", "content": "hi"}],
        max_completion_tokens=30,
        max_tokens=5,
    )
    sent = mock.requests()[-1]["body"]
    assert (sent["max_completion_tokens"], sent["max_tokens"]) == (5, 5)
    # One field stays one field: OpenAI's reasoning models refuse max_tokens.
    client.chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "hi"}], max_completion_tokens=7
    )
    sent = mock.requests()[-1]["body"]
    assert sent["max_completion_tokens"] == 7 and "max_tokens" not in sent


def test_it_ends_a_stream_whose_provider_sends_an_event_that_is_not_json(
    proxy: LiveProxy, world: World, mock: MockServer
) -> None:
    mock.configure(chunks=CHUNKS, faults=[{"action": {"type": "garbage_line", "chunks": 2}}])
    with httpx.stream(
        "POST",
        f"{proxy.url}/v1/chat/completions",
        json={"model": "auto", "messages": [{"role": "user", "content": "hi"}], "stream": True},
        headers={"Authorization": f"Bearer {world.token(world.alice)}"},
        timeout=30,
    ) as response:
        assert response.status_code == 200
        body = response.read().decode()
    assert "[DONE]" not in body and "<html>" not in body
    events = [line for line in body.splitlines() if line.startswith("data: ")]
    assert '"error"' in events[-1] and "upstream_error" in events[-1]
    assert sum('"error"' in event for event in events) == 1
    [row] = ledger_rows(world.alice, 1)
    assert (row.status, row.http_status) == ("upstream_error", 502)
