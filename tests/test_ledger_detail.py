"""What the ledger says of each request beyond its tokens: time to first token, the error the
client was told, the model a soft cap downgraded it from."""

from __future__ import annotations

from decimal import Decimal

import openai
import pytest

from routing.services import route_create
from tenants.services import tenant_create, tier_create
from tests.conftest import LiveProxy, World, ledger_rows, unique
from tests.support.mockserver import MockServer

pytestmark = pytest.mark.core

HELLO = [{"role": "user", "content": "Say hello"}]


def client_for(proxy: LiveProxy, token: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.openai_base_url, api_key=token, max_retries=0)


def test_it_records_the_time_to_the_first_token(
    proxy: LiveProxy, world: World, mock: MockServer
) -> None:
    mock.configure(ttft=0.3, chunk_delay=0.05, chunks=4)
    client = client_for(proxy, world.token(world.alice))
    list(client.chat.completions.create(model="auto", messages=HELLO, stream=True))  # type: ignore[arg-type]
    client.chat.completions.create(model="auto", messages=HELLO)  # type: ignore[arg-type]
    streamed, whole = ledger_rows(world.alice, 2)
    # A stream's first content left after the provider's first piece (0.3 s) and well before
    # its end; a whole answer's first byte is its body, sent once it is complete.
    assert streamed.ttft_ms is not None and 300 <= streamed.ttft_ms < streamed.latency_ms
    assert whole.ttft_ms is not None and whole.ttft_ms >= 300 + 3 * 50
    assert whole.ttft_ms <= whole.latency_ms


def test_it_records_what_the_client_was_told_when_it_failed(
    proxy: LiveProxy, world: World, mock: MockServer
) -> None:
    mock.configure(faults=[{"action": {"type": "status", "status": 400}}])
    client = client_for(proxy, world.token(world.alice))
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="auto", messages=HELLO)  # type: ignore[arg-type]
    (row,) = ledger_rows(world.alice, 1)
    assert (row.status, row.http_status, row.error_code) == (
        "upstream_error",
        400,
        "upstream_invalid_request",
    )
    body = caught.value.body
    assert isinstance(body, dict) and row.error_message == body["message"]  # what it was told
    assert row.error_message.startswith("The provider rejected the request")
    assert row.ttft_ms is None  # nothing of an answer was sent
    assert world.secrets["moonshot"] not in row.error_message


def test_it_serves_a_tenant_past_its_soft_cap_with_the_downgrade_model(
    proxy: LiveProxy, world: World, mock: MockServer
) -> None:
    tier = tier_create(
        slug=unique("soft"),
        name="Soft",
        weekly_token_cap=100,
        downgrade_model="cheap",
        downgrade_at_percent=10,
        requests_per_minute=1000,
    )
    for model, upstream, price in (("best", "kimi-best", "10"), ("cheap", "kimi-cheap", "1")):
        route_create(
            tier=tier,
            model=model,
            provider=world.moonshot,
            upstream_model=upstream,
            input_usd_per_mtok=Decimal(price),
            output_usd_per_mtok=Decimal(price),
        )
    tenant = tenant_create(slug=unique("soft"), name="Soft", tier=tier)
    client = client_for(proxy, world.token(tenant))
    first = client.chat.completions.with_raw_response.create(
        model="best",
        messages=HELLO,  # type: ignore[arg-type]
        max_tokens=20,
    )
    assert "x-llm-proxy-downgraded-from" not in first.headers
    assert mock.requests()[-1]["model"] == "kimi-best"
    # The first request used more than 10 % of the 100-token cap: the next is downgraded.
    (row,) = ledger_rows(tenant, 1)
    assert row.total_tokens * 100 >= 100 * 10
    second = client.chat.completions.with_raw_response.create(
        model="best",
        messages=HELLO,  # type: ignore[arg-type]
        max_tokens=20,
    )
    assert second.headers["x-llm-proxy-downgraded-from"] == "best"
    assert mock.requests()[-1]["model"] == "kimi-cheap"
    assert second.parse().model == "cheap"
    _, downgraded = ledger_rows(tenant, 2)
    assert (downgraded.model, downgraded.downgraded_from) == ("cheap", "best")
    # Billed at the cheaper route's prices.
    assert downgraded.cost_usd == Decimal(downgraded.total_tokens) / Decimal(1_000_000)
