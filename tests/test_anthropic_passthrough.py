"""Anthropic clients on Anthropic routes: the request and the answer as sent, on recorded bytes.

Byte for byte but for the model name (the provider's never reaches the tenant) and the one
completion allowance the reservation holds; usage is read on the way without re-encoding.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from django.test import override_settings

from core.errors import ProxyError
from routing.codecs.anthropic_messages import MessagesRequest, parse_messages_request
from routing.codecs.anthropic_passthrough import AnthropicPassthrough
from routing.context import Route
from routing.sse import SSEParser
from tests.support.routes import make_route

pytestmark = pytest.mark.core

WIRE = Path(__file__).parent / "fixtures" / "wire"
CODEC = AnthropicPassthrough()


def route() -> Route:
    return make_route(
        "anthropic",
        base_url="https://api.anthropic.com",
        upstream_model="claude-sonnet-4-5-20250929",
        model="claude-opus-4-8",
    )


def request(body: dict[str, Any], **headers: str) -> MessagesRequest:
    return parse_messages_request(json.dumps(body).encode(), headers=headers, max_messages=100)


NEVER_SEEN: dict[str, Any] = {
    "model": "claude-opus-4-8",
    "max_tokens": 300,
    "messages": [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}},
                {"type": "hologram", "frames": [1, 2, 3]},
            ],
        }
    ],
    "future_option": {"level": 11},
    "thinking": {"type": "enabled", "budget_tokens": 1024},
    "context_management": {"edits": [{"type": "clear_tool_uses_20250919"}]},
}


def test_it_forwards_a_request_it_has_never_seen_unchanged_but_for_model_and_limit() -> None:
    outgoing = CODEC.build(
        route=route(),
        call=request(NEVER_SEEN, **{"anthropic-version": "2023-06-01"}),
        max_tokens=300,
    )
    assert outgoing.url == "https://api.anthropic.com/v1/messages"
    assert outgoing.payload == {**NEVER_SEEN, "model": "claude-sonnet-4-5-20250929"}
    assert outgoing.headers == {"anthropic-version": "2023-06-01"}


def test_it_forwards_the_clients_betas_that_are_allowed() -> None:
    call = request(NEVER_SEEN, **{"anthropic-beta": "a-1, b-2,c-3"})
    assert CODEC.build(route=route(), call=call, max_tokens=300).headers["anthropic-beta"] == (
        "a-1,b-2,c-3"
    )
    with override_settings(PROXY_ANTHROPIC_BETAS=frozenset({"b-2"})):
        headers = CODEC.build(route=route(), call=call, max_tokens=300).headers
    assert headers["anthropic-beta"] == "b-2"
    with override_settings(PROXY_ANTHROPIC_BETAS=frozenset()):
        assert "anthropic-beta" not in CODEC.build(route=route(), call=call, max_tokens=300).headers


def test_it_returns_the_answer_byte_for_byte_but_for_the_model_name() -> None:
    raw = (WIRE / "anthropic_message.json").read_bytes()
    body, usage = CODEC.completion(route=route(), call=request(NEVER_SEEN), raw=raw)
    assert body == raw.replace(b'"claude-sonnet-4-5-20250929"', b'"claude-opus-4-8"')
    sent = json.loads(raw)["usage"]
    assert usage.reported and not usage.invalid
    assert usage.input_tokens == (
        sent["input_tokens"] + sent["cache_read_input_tokens"] + sent["cache_creation_input_tokens"]
    )
    assert (usage.cache_read_tokens, usage.cache_write_tokens, usage.output_tokens) == (
        sent["cache_read_input_tokens"],
        sent["cache_creation_input_tokens"],
        sent["output_tokens"],
    )


def test_it_relays_each_stream_event_byte_for_byte_but_for_the_model_name() -> None:
    raw = (WIRE / "anthropic_stream.sse").read_bytes()
    stream = CODEC.stream(route=route(), call=request({**NEVER_SEEN, "stream": True}))
    out = b"".join(stream.feed(event) for event in SSEParser().feed(raw))
    assert out == raw.replace(b'"claude-sonnet-4-5-20250929"', b'"claude-opus-4-8"')
    assert stream.complete and stream.usage.reported
    assert stream.usage.cache_read_tokens > 0 and stream.usage.output_tokens > 0
    assert stream.content_deltas == raw.count(b"event: content_block_delta")


def test_it_ends_a_stream_on_the_providers_error_event() -> None:
    raw = (WIRE / "anthropic_stream_overloaded.sse").read_bytes()
    stream = CODEC.stream(route=route(), call=request({**NEVER_SEEN, "stream": True}))
    with pytest.raises(ProxyError) as caught:
        for event in SSEParser().feed(raw):
            stream.feed(event)
    assert (caught.value.status, caught.value.code) == (502, "upstream_error")
    assert "Overloaded" in caught.value.message
    assert not stream.complete


def test_it_refuses_an_error_sent_as_a_200() -> None:
    raw = b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'
    with pytest.raises(ProxyError) as caught:
        CODEC.completion(route=route(), call=request(NEVER_SEEN), raw=raw)
    assert caught.value.status == 502


def test_it_counts_no_thinking_signature_as_content() -> None:
    # A signature is no output the model wrote: a stream cut after it must not bill it.
    raw = (WIRE / "anthropic" / "stream_thinking_tools.sse").read_bytes()
    stream = CODEC.stream(route=route(), call=request({**NEVER_SEEN, "stream": True}))
    for event in SSEParser().feed(raw):
        stream.feed(event)
    deltas = raw.count(b"event: content_block_delta")
    assert raw.count(b'"type":"signature_delta"') == 1
    assert stream.content_deltas == deltas - 1
    # The same when an event comes without its `event:` line (the data is read then).
    bare = CODEC.stream(route=route(), call=request({**NEVER_SEEN, "stream": True}))
    for event in SSEParser().feed(raw.replace(b"event: content_block_delta\n", b"")):
        bare.feed(event)
    assert bare.content_deltas == deltas - 1
