"""Bad input gets a clear OpenAI-shaped error and never reaches the provider."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from django.conf import settings

from tests.conftest import LiveProxy, World
from tests.support.mockserver import MockServer
from usage.models import UsageRecord

pytestmark = pytest.mark.core

HELLO = b'{"model": "auto", "messages": [{"role": "user", "content": "hi"}]'


def post(
    proxy: LiveProxy, token: str, content: bytes | Iterator[bytes], **headers: str
) -> httpx.Response:
    return httpx.post(
        f"{proxy.url}/v1/chat/completions",
        content=content,
        headers={"Authorization": f"Bearer {token}", "content-type": "application/json", **headers},
        timeout=30,
    )


def assert_openai_error(
    response: httpx.Response, status: int, code: str | None = None
) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    if code is not None:
        assert error["code"] == code
    return error


def test_it_hides_models_outside_the_tenants_tier(
    proxy: LiveProxy, world: World, mock: MockServer
) -> None:
    client = openai.OpenAI(
        base_url=proxy.openai_base_url, api_key=world.token(world.alice), max_retries=0
    )
    with pytest.raises(openai.NotFoundError) as other_tier:
        client.chat.completions.create(
            model="claude-sonnet-4-5", messages=[{"role": "user", "content": "hi"}]
        )
    with pytest.raises(openai.NotFoundError) as nowhere:
        client.chat.completions.create(
            model="no-such-mod", messages=[{"role": "user", "content": "hi"}]
        )
    assert other_tier.value.code == nowhere.value.code == "model_not_found"
    # Bob's model and a model that exists nowhere read the same, but for the name asked.
    assert other_tier.value.message.replace(
        "claude-sonnet-4-5", "X"
    ) == nowhere.value.message.replace("no-such-mod", "X")
    assert mock.calls() == 0


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"{not json", None),
        (b"", None),
        (b"[1, 2]", None),
        (b'"a string"', None),
        (b'{"model": "auto"}', "messages"),
        (b'{"model": "auto", "messages": []}', "messages"),
        (b'{"model": "auto", "messages": "hi"}', "messages"),
        (b'{"messages": [{"role": "user", "content": "hi"}]}', "model"),
        (b'{"model": 7, "messages": [{"role": "user", "content": "hi"}]}', "model"),
        (b'{"model": "auto", "messages": [{"role": "wizard", "content": "hi"}]}', "messages[0]"),
        (b'{"model": "auto", "messages": [{"role": "user", "content": 5}]}', "messages[0]"),
        (
            b'{"model": "auto", "messages": [{"role": "user", "content": "hi"}], "stream": "yes"}',
            "stream",
        ),
        (
            b'{"model": "auto", "messages": [{"role": "user", "content": "hi"}], "max_tokens": -1}',
            "max_tokens",
        ),
        (
            HELLO + b', "max_tokens": 1e400}',
            None,
        ),
        (
            HELLO + b', "temperature": NaN}',
            None,
        ),
        (
            b'{"model": "auto", "messages": [{"role": "user", "content": "hi"}], "temperature": 9}',
            "temperature",
        ),
        (b'\xff\xfe{"model": "auto"}', None),
        # UTF-16 (json.loads would take it, lone surrogates and all): JSON over HTTP is UTF-8.
        (
            '{"model": "auto", "messages": [{"role": "user", "content": "\\ud800"}]}'.encode(
                "utf-16-le"
            ),
            None,
        ),
        (b"[" * 100_000 + b"]" * 100_000, None),
        (
            b'{"model": "auto", "messages": [{"role": "user", "content": "hi"}], "n": '
            + b"9" * 5000
            + b"}",
            None,
        ),
    ],
)
def test_it_rejects_a_malformed_body(
    proxy: LiveProxy, world: World, mock: MockServer, body: bytes, param: str | None
) -> None:
    error = assert_openai_error(post(proxy, world.token(world.alice), body), 400)
    assert error["type"] == "invalid_request_error"
    if param is not None:
        assert error["param"] == param
    assert mock.calls() == 0


def test_it_refuses_an_oversized_body_by_its_declared_length(
    proxy: LiveProxy, world: World, mock: MockServer
) -> None:
    limit = settings.PROXY_MAX_BODY_BYTES
    padding = "x" * limit
    body = json.dumps({"model": "auto", "messages": [{"role": "user", "content": padding}]})
    assert_openai_error(
        post(proxy, world.token(world.alice), body.encode()), 413, "request_too_large"
    )
    assert mock.calls() == 0


def test_it_refuses_an_oversized_chunked_body(
    proxy: LiveProxy, world: World, mock: MockServer
) -> None:
    chunk = b"x" * 65536
    count = settings.PROXY_MAX_BODY_BYTES // len(chunk) + 2

    def body() -> Iterator[bytes]:
        yield b'{"model": "auto", "messages": [{"role": "user", "content": "'
        for _ in range(count):
            yield chunk
        yield b'"}]}'

    assert_openai_error(post(proxy, world.token(world.alice), body()), 413, "request_too_large")
    assert mock.calls() == 0


def test_it_answers_a_wrong_method_in_json(proxy: LiveProxy, world: World) -> None:
    response = httpx.get(
        f"{proxy.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {world.token(world.alice)}"},
    )
    assert_openai_error(response, 405, "method_not_allowed")


def _chat(**fields: bytes) -> bytes:
    """A chat body with some fields given as raw JSON text (json.dumps cannot write them)."""
    parts = [b'"messages": ' + fields.pop("messages", b'[{"role": "user", "content": "hi"}]')]
    parts += [f'"{name}": '.encode() + value for name, value in fields.items()]
    return b'{"model": "MODEL", ' + b", ".join(parts) + b"}"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (_chat(messages=b'[{"role": "user", "content": "a\\ud800b"}]'), "messages[0].content"),
        (_chat(messages=b'[{"role": "user", "content": "\xed\xa0\x80"}]'), "messages[0].content"),
        (_chat(user=b'"\\udfff"'), "user"),
        (_chat(logit_bias=b'{"50256": 1e400}'), "logit_bias.50256"),
        (_chat(top_logprobs=b"1e400", logprobs=b"true"), "top_logprobs"),
        (_chat(metadata=b'{"run": -1e400}'), "metadata.run"),
        (
            _chat(messages=b'[{"role": "user", "content": [{"type": "text", "text": 1e999}]}]'),
            "messages[0].content[0].text",
        ),
    ],
)
def test_it_refuses_values_no_encoder_can_write_without_billing(
    proxy: LiveProxy, world: World, mock: MockServer, body: bytes, param: str
) -> None:
    # Both tiers: pass-through to an OpenAI-kind provider, and translation to Anthropic.
    for tenant, model in ((world.alice, b"auto"), (world.bob, b"claude-sonnet-4-5")):
        response = post(proxy, world.token(tenant), body.replace(b"MODEL", model))
        error = assert_openai_error(response, 400, "invalid_request")
        assert error["param"] == param
    assert mock.calls() == 0
    assert not UsageRecord.objects.filter(tenant__in=[world.alice, world.bob]).exists()
    # The process is unharmed: a good request right after is served.
    good = post(proxy, world.token(world.alice), _chat().replace(b"MODEL", b"auto"))
    assert good.status_code == 200, good.text


def test_it_keeps_a_valid_surrogate_pair(proxy: LiveProxy, world: World, mock: MockServer) -> None:
    body = _chat(messages=b'[{"role": "user", "content": "\\ud83d\\ude00"}]')
    response = post(proxy, world.token(world.alice), body.replace(b"MODEL", b"auto"))
    assert response.status_code == 200, response.text
    assert mock.requests()[-1]["body"]["messages"][0]["content"] == "\U0001f600"
