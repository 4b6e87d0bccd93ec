"""`/v1/messages` as an Anthropic client meets it: auth, errors, models, aliases, counting.

The translations themselves are tests/test_codec_*.py and tests/test_agents_sdk.py; this is
the endpoint around them, on a live Daphne server with the official anthropic SDK.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import anthropic
import httpx
import pytest

from routing.models import ModelRoute
from routing.services import alias_create, route_create
from tenants.services import tenant_create, tier_create
from tests.conftest import LiveProxy, World, ledger_rows, unique
from tests.support.mockserver import MockServer
from usage.limits import tokens_in

pytestmark = [
    pytest.mark.core,
    # The SDK warns that the world's claude-sonnet-4-5 is retired; the proxy's route is a name.
    pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning"),
]

HELLO: list[Any] = [{"role": "user", "content": "Say hello"}]


def sdk(proxy: LiveProxy, token: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=proxy.url, api_key=token, max_retries=0)


def post(proxy: LiveProxy, path: str, body: Any, **headers: str) -> httpx.Response:
    return httpx.post(
        f"{proxy.url}{path}",
        content=body if isinstance(body, bytes) else json.dumps(body).encode(),
        headers={"content-type": "application/json", **headers},
        timeout=10,
    )


def test_it_takes_the_token_in_x_api_key_or_as_a_bearer(proxy: LiveProxy, world: World) -> None:
    token = world.token(world.bob)
    body = {"model": "claude-sonnet-4-5", "max_tokens": 50, "messages": HELLO}
    by_key = post(proxy, "/v1/messages", body, **{"x-api-key": token})
    by_bearer = post(proxy, "/v1/messages", body, authorization=f"Bearer {token}")
    assert (by_key.status_code, by_bearer.status_code) == (200, 200)
    assert by_key.json()["type"] == "message"


@pytest.mark.parametrize(
    ("body", "headers", "status", "kind"),
    [
        ({"model": "claude-sonnet-4-5", "max_tokens": 5, "messages": HELLO}, {}, 401,
         "authentication_error"),
        (b"{not json", None, 400, "invalid_request_error"),
        ({"model": "claude-sonnet-4-5", "messages": HELLO}, None, 400, "invalid_request_error"),
        ({"model": "gpt-nothing", "max_tokens": 5, "messages": HELLO}, None, 404,
         "not_found_error"),
    ],
)  # fmt: skip
def test_it_refuses_in_anthropics_error_shape(
    proxy: LiveProxy,
    world: World,
    body: Any,
    headers: dict[str, str] | None,
    status: int,
    kind: str,
) -> None:
    sent = {"x-api-key": world.token(world.bob)} if headers is None else headers
    response = post(proxy, "/v1/messages", body, **sent)
    assert response.status_code == status
    error = response.json()
    assert error["type"] == "error" and error["error"]["type"] == kind
    assert isinstance(error["error"]["message"], str) and error["error"]["message"]
    assert response.headers["x-request-id"].startswith("req_")


def test_it_answers_the_sdks_own_error_classes(proxy: LiveProxy, world: World) -> None:
    client = sdk(proxy, world.token(world.bob))
    with pytest.raises(anthropic.NotFoundError) as caught:
        client.messages.create(model="gpt-nothing", max_tokens=5, messages=HELLO)
    assert caught.value.body == {
        "type": "error",
        "error": {"type": "not_found_error", "message": caught.value.body["error"]["message"]},  # type: ignore[index]
    }
    with pytest.raises(anthropic.AuthenticationError):
        sdk(proxy, "not-a-token").messages.create(
            model="claude-sonnet-4-5", max_tokens=5, messages=HELLO
        )


def test_it_serves_the_beta_client(proxy: LiveProxy, world: World, mock: MockServer) -> None:
    # The SDK's beta client (and Claude Code) post to /v1/messages?beta=true with betas.
    message = sdk(proxy, world.token(world.bob)).beta.messages.create(
        model="claude-sonnet-4-5",
        max_tokens=50,
        messages=HELLO,
        betas=["interleaved-thinking-2025-05-14", "context-1m-2025-08-07"],
    )
    sent = mock.requests()[-1]
    assert message.content[0].type == "text"
    assert message.content[0].text == sent["text_sent"]
    assert (
        sent["headers"]["anthropic-beta"] == "interleaved-thinking-2025-05-14,context-1m-2025-08-07"
    )
    assert sent["api_key"] == world.secrets["anthropic"]


def test_it_ends_a_failed_stream_with_anthropics_error_event(
    proxy: LiveProxy, world: World, mock: MockServer
) -> None:
    mock.configure(faults=[{"action": {"type": "stream_error", "chunks": 2}}])
    for tenant, model in ((world.bob, "claude-sonnet-4-5"), (world.alice, "auto")):
        with httpx.stream(
            "POST",
            f"{proxy.url}/v1/messages",
            json={"model": model, "max_tokens": 50, "messages": HELLO, "stream": True},
            headers={"x-api-key": world.token(tenant)},
            timeout=10,
        ) as response:
            body = response.read()
        events = [block for block in body.split(b"\n\n") if block.strip()]
        last = events[-1].split(b"\n")
        assert last[0] == b"event: error", (model, body)
        error = json.loads(last[1].removeprefix(b"data: "))
        assert error["type"] == "error" and error["error"]["type"] == "api_error"
        assert world.secrets["anthropic"] not in body.decode()
        assert world.secrets["moonshot"] not in body.decode()
        assert b"message_stop" not in body


def test_it_lists_models_in_the_shape_of_the_clients_api(proxy: LiveProxy, world: World) -> None:
    token = world.token(world.alice)
    listed = sdk(proxy, token).models.list()
    assert [model.id for model in listed.data] == ["auto", "claude-haiku"]
    assert all(model.type == "model" for model in listed.data)
    openai_shape = httpx.get(
        f"{proxy.url}/v1/models", headers={"authorization": f"Bearer {token}"}, timeout=10
    ).json()
    assert openai_shape["object"] == "list"
    assert [model["id"] for model in openai_shape["data"]] == ["auto", "claude-haiku"]


def test_it_counts_tokens_at_an_anthropic_provider(
    proxy: LiveProxy, world: World, mock: MockServer
) -> None:
    count = sdk(proxy, world.token(world.bob)).messages.count_tokens(
        model="claude-sonnet-4-5", messages=[{"role": "user", "content": "one two three"}]
    )
    sent = mock.requests()[-1]
    assert sent["path"] == "/v1/messages/count_tokens"
    assert sent["model"] == "claude-sonnet-4-5-20250929"
    assert sent["api_key"] == world.secrets["anthropic"]
    assert count.input_tokens == 3 + 3  # the mock's documented count: 3 + words per message
    # A call on a pooled key: in the ledger, at no cost (counting is free at Anthropic).
    (row,) = ledger_rows(world.bob, 1)
    assert (row.wire_format, row.status, row.total_tokens, row.cost_usd) == (
        "anthropic-count-tokens",
        "ok",
        0,
        Decimal(0),
    )


def test_it_holds_counting_to_the_tenants_rate_limit(
    proxy: LiveProxy, world: World, mock: MockServer
) -> None:
    tier = tier_create(slug=unique("slow"), name="Slow", requests_per_minute=2)
    route_create(tier=tier, model="claude", provider=world.anthropic, upstream_model="claude-up")
    tenant = tenant_create(slug=unique("slow"), name="Slow", tier=tier)
    body = {"model": "claude", "messages": HELLO}
    token = world.token(tenant)
    statuses = [
        post(proxy, "/v1/messages/count_tokens", body, **{"x-api-key": token}).status_code
        for _ in range(4)
    ]
    assert statuses == [200, 200, 429, 429]
    assert mock.calls() == 2  # refused before any pooled key was used
    refused = post(proxy, "/v1/messages/count_tokens", body, **{"x-api-key": token})
    assert refused.json()["error"]["type"] == "rate_limit_error"


def test_it_estimates_tokens_itself_on_an_openai_route(
    proxy: LiveProxy, world: World, mock: MockServer
) -> None:
    body = {"model": "auto", "messages": [{"role": "user", "content": "one two three " * 40}]}
    response = post(
        proxy, "/v1/messages/count_tokens", body, **{"x-api-key": world.token(world.alice)}
    )
    assert response.status_code == 200
    assert response.json() == {"input_tokens": tokens_in(len(json.dumps(body).encode()))}
    assert mock.calls() == 0


def test_it_serves_the_names_agents_send_through_a_tiers_aliases(
    proxy: LiveProxy, world: World, mock: MockServer
) -> None:
    route = ModelRoute.objects.get(tier=world.max, model="claude-sonnet-4-5")
    alias_create(tier=world.max, name="claude-*", model="claude-sonnet-4-5")
    route_create(
        tier=world.max, model="haiku", provider=world.anthropic, upstream_model="claude-haiku-up"
    )
    alias_create(tier=world.max, name="claude-haiku-*", model="haiku")  # longer: wins
    alias_create(tier=world.max, name="sonnet", model="claude-sonnet-4-5")
    client = sdk(proxy, world.token(world.bob))

    message = client.messages.create(model="claude-opus-4-8", max_tokens=20, messages=HELLO)
    assert message.model == "claude-opus-4-8"  # the name the client asked for
    assert mock.requests()[-1]["model"] == "claude-sonnet-4-5-20250929"
    client.messages.create(model="claude-haiku-4-5", max_tokens=20, messages=HELLO)
    assert mock.requests()[-1]["model"] == "claude-haiku-up"
    first, _ = ledger_rows(world.bob, 2)
    assert (first.model, first.route_id, first.wire_format) == (
        "claude-opus-4-8",
        route.pk,
        "anthropic-messages",
    )
    # Listed: routes and exact aliases, never a pattern; other tiers see none of it.
    assert [m.id for m in client.models.list().data] == ["claude-sonnet-4-5", "haiku", "sonnet"]
    alice = sdk(proxy, world.token(world.alice))
    with pytest.raises(anthropic.NotFoundError) as caught:
        alice.messages.create(model="sonnet", max_tokens=20, messages=HELLO)
    assert "does not exist or you do not have access to it" in str(caught.value)
