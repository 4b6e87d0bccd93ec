"""The mock provider speaks each wire format exactly: the official SDKs, pointed straight at
it, parse every reply, stream and error as they would the real service's."""

from __future__ import annotations

import base64
import itertools
import json
import re
import time
from collections.abc import Iterator, Sequence
from typing import Any

import anthropic
import httpx
import openai
import pytest
from anthropic.types import (
    InputJSONDelta,
    Message,
    MessageParam,
    RawContentBlockDeltaEvent,
    RawContentBlockStartEvent,
    RawMessageDeltaEvent,
    RawMessageStartEvent,
    RawMessageStreamEvent,
    TextBlock,
    TextDelta,
    ThinkingBlock,
    ToolUseBlock,
)
from openai.types.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionMessageParam
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from tests.support.mockserver import MockServer

KEY = "sk-test-0123456789"
EVENTS: TypeAdapter[RawMessageStreamEvent] = TypeAdapter(RawMessageStreamEvent)
FULL_TEXT = "Hello from the mock provider. Every piece"  # the default 8 pieces
# (3 + 2 words) + (3 + 4 words), see the prompt-token formula in devtools/mockprovider.py
OPENAI_MESSAGES: list[ChatCompletionMessageParam] = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Say hello to me"},
]
OPENAI_PROMPT_TOKENS = 12
ANTHROPIC_SYSTEM = "Be brief."
ANTHROPIC_MESSAGES: list[MessageParam] = [{"role": "user", "content": "Say hello to me"}]
ANTHROPIC_PROMPT_TOKENS = 12
DEFAULT_CONFIG: dict[str, Any] = {
    "chunks": 8,
    "chunk_delay": 0.0,
    "ttft": 0.0,
    "text": None,
    "faults": [],
    "tool_calls": None,
    "tool_text": None,
    "arguments_chunk": 8,
    "thinking": None,
    "cache": None,
}


@pytest.fixture(scope="module")
def mock() -> Iterator[MockServer]:
    server = MockServer.start(chunks=8)
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _fresh_mock(mock: MockServer) -> None:
    mock.reset()


@pytest.fixture
def oai(mock: MockServer) -> Iterator[openai.OpenAI]:
    client = openai.OpenAI(base_url=mock.openai_base_url, api_key=KEY, max_retries=0)
    yield client
    client.close()


@pytest.fixture
def claude(mock: MockServer) -> Iterator[anthropic.Anthropic]:
    client = anthropic.Anthropic(base_url=mock.anthropic_base_url, api_key=KEY, max_retries=0)
    yield client
    client.close()


@pytest.fixture
def raw(mock: MockServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=mock.url, timeout=10.0, trust_env=False) as client:
        yield client


def _openai_stream_body(**extra: Any) -> dict[str, Any]:
    return {"model": "gpt-mock", "messages": OPENAI_MESSAGES, "stream": True, **extra}


def _data_events(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    for line in lines:
        if line.startswith("data: ") and line != "data: [DONE]":
            yield json.loads(line.removeprefix("data: "))


def _text(content: Sequence[object]) -> str:
    """The text of the first content block, which must be a text block."""
    block = content[0]
    assert isinstance(block, TextBlock), block
    return block.text


def _delta_text(event: RawMessageStreamEvent) -> str:
    """The text a content_block_delta event carries."""
    assert isinstance(event, RawContentBlockDeltaEvent), event
    assert isinstance(event.delta, TextDelta), event.delta
    return event.delta.text


def _wait_finished(mock: MockServer, timeout: float = 5.0) -> dict[str, Any]:
    """The only record, once the mock has finished handling it."""
    deadline = time.monotonic() + timeout
    while True:
        (record,) = mock.requests()
        if record["finished_at"] is not None or time.monotonic() > deadline:
            return record
        time.sleep(0.02)


# --- OpenAI ---------------------------------------------------------------------------------


def test_it_answers_openai_chat_completions(oai: openai.OpenAI, mock: MockServer) -> None:
    completion = oai.chat.completions.create(model="gpt-mock", messages=OPENAI_MESSAGES)

    assert completion.id.startswith("chatcmpl-")
    assert completion.object == "chat.completion"
    assert completion.model == "gpt-mock"
    assert completion.service_tier == "default"
    assert completion.system_fingerprint == "fp_mock"
    (choice,) = completion.choices
    assert choice.message.role == "assistant"
    assert choice.message.content == FULL_TEXT
    assert choice.message.refusal is None
    assert choice.finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == OPENAI_PROMPT_TOKENS
    assert completion.usage.completion_tokens == 8
    assert completion.usage.total_tokens == OPENAI_PROMPT_TOKENS + 8

    (record,) = mock.requests()
    assert record["id"] == completion.id
    assert record["api"] == "openai"
    assert record["path"] == "/v1/chat/completions"
    assert record["api_key"] == KEY
    assert record["headers"]["authorization"] == f"Bearer {KEY}"
    assert record["model"] == "gpt-mock"
    assert record["stream"] is False
    assert record["body"]["messages"] == OPENAI_MESSAGES
    assert record["status"] == 200
    assert record["text_sent"] == FULL_TEXT
    assert record["chunks_sent"] == 8
    assert record["usage"] == {"input_tokens": OPENAI_PROMPT_TOKENS, "output_tokens": 8}
    assert record["disconnected"] is False
    assert record["fault"] is None
    assert mock.calls() == 1


@pytest.mark.parametrize("limit", ["max_tokens", "max_completion_tokens"])
def test_it_truncates_openai_replies_at_the_token_limit(oai: openai.OpenAI, limit: str) -> None:
    completion = oai.chat.completions.create(
        model="gpt-mock",
        messages=OPENAI_MESSAGES,
        max_tokens=3 if limit == "max_tokens" else openai.omit,
        max_completion_tokens=3 if limit == "max_completion_tokens" else openai.omit,
    )

    assert completion.choices[0].message.content == "Hello from the"
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 3


def test_it_streams_openai_chunks(oai: openai.OpenAI) -> None:
    chunks: list[ChatCompletionChunk] = list(oai.chat.completions.create(**_openai_stream_body()))

    assert len(chunks) == 1 + 8 + 1
    assert len({chunk.id for chunk in chunks}) == 1
    assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    assert all(chunk.model == "gpt-mock" and chunk.usage is None for chunk in chunks)
    first, *pieces, last = (chunk.choices[0] for chunk in chunks)
    assert first.delta.role == "assistant" and first.delta.content == ""
    assert "".join(piece.delta.content or "" for piece in pieces) == FULL_TEXT
    assert all(piece.finish_reason is None for piece in [first, *pieces])
    assert last.delta.content is None and last.finish_reason == "stop"


def test_it_streams_openai_usage_when_asked(oai: openai.OpenAI, raw: httpx.Client) -> None:
    chunks: list[ChatCompletionChunk] = list(
        oai.chat.completions.create(
            **_openai_stream_body(max_tokens=5, stream_options={"include_usage": True})
        )
    )

    *content, finish, usage = chunks
    assert all(chunk.usage is None for chunk in [*content, finish])
    assert (
        "".join(c.choices[0].delta.content or "" for c in content) == "Hello from the mock provider"
    )
    assert finish.choices[0].finish_reason == "length"
    assert usage.choices == []
    assert usage.usage is not None
    assert usage.usage.prompt_tokens == OPENAI_PROMPT_TOKENS
    assert usage.usage.completion_tokens == 5
    assert usage.usage.total_tokens == OPENAI_PROMPT_TOKENS + 5

    # On the wire every chunk spells out "usage": null, as the real API does.
    body = _openai_stream_body(stream_options={"include_usage": True})
    with raw.stream(
        "POST", "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {KEY}"}
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    events = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    assert all("usage" in event for event in events)
    assert [event["usage"] is None for event in events] == [True] * 10 + [False]


def test_it_lists_models(oai: openai.OpenAI, mock: MockServer) -> None:
    models = oai.models.list()

    assert [model.id for model in models] == ["mock-model"]
    assert mock.calls() == 0


def test_it_rejects_openai_calls_without_a_key(
    oai: openai.OpenAI, mock: MockServer, raw: httpx.Client
) -> None:
    response = raw.post("/v1/chat/completions", json={"model": "m", "messages": []})

    assert response.status_code == 401
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "invalid_api_key"
    assert error["param"] is None

    with pytest.raises(openai.AuthenticationError):
        oai.chat.completions.create(
            model="gpt-mock",
            messages=OPENAI_MESSAGES,
            extra_headers={"Authorization": openai.omit},
        )
    assert mock.calls() == 2


def test_it_rejects_malformed_openai_bodies(oai: openai.OpenAI, raw: httpx.Client) -> None:
    auth = {"authorization": f"Bearer {KEY}"}
    missing = raw.post("/v1/chat/completions", json={"model": "m"}, headers=auth)
    garbage = raw.post("/v1/chat/completions", content=b"{not json", headers=auth)

    assert missing.status_code == 400
    assert missing.json()["error"]["param"] == "messages"
    assert garbage.status_code == 400
    assert garbage.json()["error"]["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError):
        oai.chat.completions.create(model="gpt-mock", messages=OPENAI_MESSAGES, max_tokens=0)


def test_it_raises_rate_limit_errors_from_a_configured_429(
    oai: openai.OpenAI, mock: MockServer
) -> None:
    fault = {"type": "status", "status": 429, "headers": {"retry-after": "2"}}
    mock.configure(faults=[{"match": {}, "times": None, "action": fault}])

    with pytest.raises(openai.RateLimitError) as caught:
        oai.chat.completions.create(model="gpt-mock", messages=OPENAI_MESSAGES)

    assert caught.value.response.headers["retry-after"] == "2"
    assert caught.value.code == "rate_limit_exceeded"
    (record,) = mock.requests()
    assert record["status"] == 429
    assert record["fault"] == "status"
    assert record["usage"] is None


def test_it_spends_a_fault_after_its_times(mock: MockServer) -> None:
    fault = {"type": "status", "status": 429, "headers": {"retry-after": "0"}}
    mock.configure(faults=[{"times": 1, "action": fault}])
    client = openai.OpenAI(base_url=mock.openai_base_url, api_key=KEY, max_retries=2)

    completion = client.chat.completions.create(model="gpt-mock", messages=OPENAI_MESSAGES)

    assert completion.choices[0].message.content == FULL_TEXT
    assert [record["status"] for record in mock.requests()] == [429, 200]
    assert mock.configure()["faults"][0]["times"] == 0


def test_it_applies_faults_only_to_matching_calls(
    oai: openai.OpenAI, claude: anthropic.Anthropic, mock: MockServer
) -> None:
    unavailable = {"type": "status", "status": 503}
    mock.configure(
        faults=[
            {"match": {"api_key": "sk-other"}, "action": unavailable},
            {"match": {"model": "gpt-down"}, "action": unavailable},
            {"match": {"api": "anthropic"}, "action": {"type": "status", "status": 529}},
        ]
    )

    assert oai.chat.completions.create(model="gpt-mock", messages=OPENAI_MESSAGES).choices
    with pytest.raises(openai.InternalServerError):
        oai.chat.completions.create(model="gpt-down", messages=OPENAI_MESSAGES)
    with pytest.raises(anthropic.APIStatusError) as caught:
        claude.messages.create(model="claude-mock", max_tokens=10, messages=ANTHROPIC_MESSAGES)
    assert caught.value.status_code == 529
    assert caught.value.body == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Mock overloaded_error."},
    }


def test_it_echoes_the_api_key_in_an_error(oai: openai.OpenAI, mock: MockServer) -> None:
    mock.configure(faults=[{"action": {"type": "echo_key"}}])

    with pytest.raises(openai.BadRequestError) as caught:
        oai.chat.completions.create(model="gpt-mock", messages=OPENAI_MESSAGES)

    assert KEY in caught.value.message
    assert mock.requests()[0]["fault"] == "echo_key"


def test_it_sends_a_configured_body_with_a_status_fault(
    oai: openai.OpenAI, mock: MockServer
) -> None:
    body = {"error": {"message": "quota gone", "type": "insufficient_quota", "code": None}}
    mock.configure(faults=[{"action": {"type": "status", "status": 429, "body": body}}])

    with pytest.raises(openai.RateLimitError) as caught:
        oai.chat.completions.create(model="gpt-mock", messages=OPENAI_MESSAGES)

    assert caught.value.type == "insufficient_quota"
    assert caught.value.body == body["error"]


# --- Anthropic ------------------------------------------------------------------------------


def test_it_answers_anthropic_messages(claude: anthropic.Anthropic, mock: MockServer) -> None:
    raw = claude.messages.with_raw_response.create(
        model="claude-mock", max_tokens=100, system=ANTHROPIC_SYSTEM, messages=ANTHROPIC_MESSAGES
    )
    message = raw.parse()

    assert raw.headers["request-id"].startswith("req_")
    assert message.id.startswith("msg_")
    assert message.type == "message"
    assert message.role == "assistant"
    assert message.model == "claude-mock"
    assert [block.type for block in message.content] == ["text"]
    assert _text(message.content) == FULL_TEXT
    assert message.stop_reason == "end_turn"
    assert message.stop_sequence is None
    assert message.usage.input_tokens == ANTHROPIC_PROMPT_TOKENS
    assert message.usage.output_tokens == 8
    assert message.usage.cache_creation_input_tokens == 0
    assert message.usage.cache_read_input_tokens == 0

    (record,) = mock.requests()
    assert record["api"] == "anthropic"
    assert record["id"] == message.id
    assert record["api_key"] == KEY
    assert record["usage"] == {"input_tokens": ANTHROPIC_PROMPT_TOKENS, "output_tokens": 8}


def test_it_truncates_anthropic_replies_at_max_tokens(claude: anthropic.Anthropic) -> None:
    message = claude.messages.create(model="claude-mock", max_tokens=2, messages=ANTHROPIC_MESSAGES)

    assert _text(message.content) == "Hello from"
    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens == 2


def test_it_streams_anthropic_messages_to_the_sdk_helper(claude: anthropic.Anthropic) -> None:
    with claude.messages.stream(
        model="claude-mock", max_tokens=100, system=ANTHROPIC_SYSTEM, messages=ANTHROPIC_MESSAGES
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()

    assert text == FULL_TEXT
    assert _text(final.content) == FULL_TEXT
    assert final.stop_reason == "end_turn"
    assert final.usage.input_tokens == ANTHROPIC_PROMPT_TOKENS
    assert final.usage.output_tokens == 8


def test_it_streams_anthropic_events_in_order(claude: anthropic.Anthropic) -> None:
    events = list(
        claude.messages.create(
            model="claude-mock", max_tokens=3, messages=ANTHROPIC_MESSAGES, stream=True
        )
    )

    assert [event.type for event in events] == [
        "message_start",
        "content_block_start",
        *["content_block_delta"] * 3,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start, block, *deltas, _block_stop, delta, _message_stop = events
    assert isinstance(start, RawMessageStartEvent)
    assert isinstance(block, RawContentBlockStartEvent)
    assert isinstance(delta, RawMessageDeltaEvent)
    assert start.message.usage.input_tokens == 3 + 4  # no system prompt here
    assert start.message.usage.output_tokens == 1
    assert start.message.stop_reason is None
    assert block.content_block.type == "text"
    assert "".join(_delta_text(d) for d in deltas) == "Hello from the"
    assert delta.delta.stop_reason == "max_tokens"
    assert delta.usage.output_tokens == 3


def test_it_sends_anthropic_ping_and_event_names_on_the_wire(raw: httpx.Client) -> None:
    headers = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
    body = {"model": "claude-mock", "max_tokens": 1, "messages": ANTHROPIC_MESSAGES, "stream": True}
    with raw.stream("POST", "/v1/messages", json=body, headers=headers) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = list(response.iter_lines())

    names = [line.removeprefix("event: ") for line in lines if line.startswith("event: ")]
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert all(
        json.loads(event)["type"] == name
        for name, event in zip(names, _data_lines(lines), strict=True)
    )


def _data_lines(lines: list[str]) -> list[str]:
    return [line.removeprefix("data: ") for line in lines if line.startswith("data: ")]


def test_it_rejects_anthropic_calls_without_a_key(
    claude: anthropic.Anthropic, raw: httpx.Client
) -> None:
    body = {"model": "claude-mock", "max_tokens": 5, "messages": ANTHROPIC_MESSAGES}
    response = raw.post("/v1/messages", json=body, headers={"anthropic-version": "2023-06-01"})

    assert response.status_code == 401
    assert response.json() == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "x-api-key header is required"},
    }
    assert response.headers["request-id"].startswith("req_")

    # This SDK sends its api_key as a Bearer token, which the mock accepts like x-api-key.
    with pytest.raises(anthropic.AuthenticationError):
        claude.messages.create(
            model="claude-mock",
            max_tokens=5,
            messages=ANTHROPIC_MESSAGES,
            extra_headers={"Authorization": anthropic.omit},
        )


def test_it_requires_anthropic_version_and_max_tokens(
    claude: anthropic.Anthropic, raw: httpx.Client
) -> None:
    body = {"model": "claude-mock", "max_tokens": 5, "messages": ANTHROPIC_MESSAGES}
    no_version = raw.post("/v1/messages", json=body, headers={"x-api-key": KEY})
    headers = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
    no_limit = raw.post("/v1/messages", json={**body, "max_tokens": None}, headers=headers)

    for response in (no_version, no_limit):
        assert response.status_code == 400
        assert response.json()["type"] == "error"
        assert response.json()["error"]["type"] == "invalid_request_error"
    assert "anthropic-version" in no_version.json()["error"]["message"]
    assert "max_tokens" in no_limit.json()["error"]["message"]
    with pytest.raises(anthropic.BadRequestError):
        claude.messages.create(model="claude-mock", max_tokens=0, messages=ANTHROPIC_MESSAGES)


def test_it_takes_the_anthropic_key_from_x_api_key(mock: MockServer, raw: httpx.Client) -> None:
    headers = {"x-api-key": "sk-ant-raw", "anthropic-version": "2023-06-01"}
    body = {"model": "claude-mock", "max_tokens": 5, "messages": ANTHROPIC_MESSAGES}

    assert raw.post("/v1/messages", json=body, headers=headers).status_code == 200
    assert mock.requests()[0]["api_key"] == "sk-ant-raw"


# --- timing, disconnects, faults that shape the stream ----------------------------------------


def test_it_counts_prompt_tokens_deterministically(
    oai: openai.OpenAI, claude: anthropic.Anthropic, mock: MockServer
) -> None:
    parts: Any = [
        {"type": "text", "text": "two words"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        {"type": "text", "text": "and three more"},
    ]
    oai.chat.completions.create(model="gpt-mock", messages=[{"role": "user", "content": parts}])
    claude.messages.create(
        model="claude-mock",
        max_tokens=5,
        system=[{"type": "text", "text": "one"}],
        messages=[{"role": "user", "content": "a b"}, {"role": "assistant", "content": "c"}],
    )

    openai_call, anthropic_call = mock.requests()
    assert openai_call["usage"]["input_tokens"] == 3 + 5
    assert anthropic_call["usage"]["input_tokens"] == (3 + 1) + (3 + 2) + (3 + 1)


def test_it_uses_configured_text_and_chunk_count(oai: openai.OpenAI, mock: MockServer) -> None:
    mock.configure(text=["a", "b", "c"], chunks=5)

    completion = oai.chat.completions.create(model="gpt-mock", messages=OPENAI_MESSAGES)

    assert completion.choices[0].message.content == "abcab"
    assert completion.usage is not None and completion.usage.completion_tokens == 5


def test_it_spaces_pieces_by_ttft_and_chunk_delay(raw: httpx.Client, mock: MockServer) -> None:
    mock.configure(chunks=4, ttft=0.3, chunk_delay=0.15)
    started = time.monotonic()
    arrivals = []
    with raw.stream(
        "POST",
        "/v1/chat/completions",
        json=_openai_stream_body(),
        headers={"authorization": f"Bearer {KEY}"},
    ) as response:
        headers_after = time.monotonic() - started
        for event in _data_events(response.iter_lines()):
            if event["choices"] and event["choices"][0]["delta"].get("content"):
                arrivals.append(time.monotonic() - started)

    assert headers_after < 0.2
    assert len(arrivals) == 4
    assert arrivals[0] >= 0.28
    gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
    assert all(0.12 <= gap < 0.4 for gap in gaps), gaps
    record = _wait_finished(mock)
    assert record["first_chunk_at"] - record["started_at"] >= 0.28
    sent = record["chunk_times"]
    assert all(later - earlier >= 0.14 for earlier, later in itertools.pairwise(sent))


def test_it_delays_non_streamed_replies_by_the_generation_time(
    oai: openai.OpenAI, mock: MockServer
) -> None:
    mock.configure(chunks=3, ttft=0.2, chunk_delay=0.1)
    started = time.monotonic()

    oai.chat.completions.create(model="gpt-mock", messages=OPENAI_MESSAGES)

    assert time.monotonic() - started >= 0.2 + 2 * 0.1 - 0.02


def test_it_records_a_client_disconnect(raw: httpx.Client, mock: MockServer) -> None:
    mock.configure(chunk_delay=0.3)
    received = []
    with raw.stream(
        "POST",
        "/v1/chat/completions",
        json=_openai_stream_body(),
        headers={"authorization": f"Bearer {KEY}"},
    ) as response:
        for event in _data_events(response.iter_lines()):
            if event["choices"][0]["delta"].get("content"):
                received.append(event["choices"][0]["delta"]["content"])
            if len(received) == 2:
                break

    record = _wait_finished(mock)
    assert record["disconnected"] is True
    assert record["disconnected_at"] >= record["chunk_times"][-1]
    assert record["chunks_sent"] == 2
    assert record["text_sent"] == "".join(received) == "Hello from"
    assert record["usage"]["output_tokens"] == 2


def test_it_breaks_the_connection_after_k_pieces(
    oai: openai.OpenAI, raw: httpx.Client, mock: MockServer
) -> None:
    mock.configure(faults=[{"action": {"type": "break_after", "chunks": 3}}])
    pieces = []

    with pytest.raises(openai.APIConnectionError):
        for chunk in oai.chat.completions.create(**_openai_stream_body()):
            pieces.append(chunk.choices[0].delta.content or "")
    assert "".join(pieces) == "Hello from the"

    headers = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
    body = {"model": "claude-mock", "max_tokens": 9, "messages": ANTHROPIC_MESSAGES, "stream": True}
    lines: list[str] = []
    with pytest.raises(httpx.RemoteProtocolError):
        with raw.stream("POST", "/v1/messages", json=body, headers=headers) as response:
            lines.extend(response.iter_lines())
    assert not any("message_stop" in line for line in lines)

    records = mock.requests()
    assert [record["chunks_sent"] for record in records] == [3, 3]
    assert [record["fault"] for record in records] == ["break_after"] * 2
    assert [record["disconnected"] for record in records] == [False, False]


def test_it_breaks_non_streamed_replies_mid_body(oai: openai.OpenAI, mock: MockServer) -> None:
    mock.configure(faults=[{"action": {"type": "break_after", "chunks": 0}}])

    with pytest.raises(openai.APIConnectionError):
        oai.chat.completions.create(model="gpt-mock", messages=OPENAI_MESSAGES)


def test_it_drips_comments_without_content(raw: httpx.Client, mock: MockServer) -> None:
    mock.configure(faults=[{"action": {"type": "drip", "interval": 0.1, "max_seconds": 0.35}}])
    started = time.monotonic()

    with raw.stream(
        "POST",
        "/v1/chat/completions",
        json=_openai_stream_body(),
        headers={"authorization": f"Bearer {KEY}"},
    ) as response:
        assert response.status_code == 200
        lines = [line for line in response.iter_lines() if line]

    assert lines == [": drip"] * 3
    assert time.monotonic() - started >= 0.33
    assert _wait_finished(mock)["chunks_sent"] == 0


def test_it_delays_headers(oai: openai.OpenAI, mock: MockServer) -> None:
    mock.configure(faults=[{"action": {"type": "delay_headers", "seconds": 0.3}}])
    started = time.monotonic()

    completion = oai.chat.completions.create(model="gpt-mock", messages=OPENAI_MESSAGES)

    assert time.monotonic() - started >= 0.28
    assert completion.choices[0].message.content == FULL_TEXT


# --- control API and the command ------------------------------------------------------------


def test_it_resets_records_and_configuration(oai: openai.OpenAI, mock: MockServer) -> None:
    mock.configure(
        chunks=2,
        faults=[{"action": {"type": "echo_key"}}],
        tool_calls=[{"name": "t", "arguments": {}}],
        tool_text="Let me see.",
        arguments_chunk=3,
        thinking="Hmm.",
        cache={"read": 1, "write": 2},
    )
    with pytest.raises(openai.BadRequestError):
        oai.chat.completions.create(model="gpt-mock", messages=OPENAI_MESSAGES)

    config = mock.reset()

    assert config == DEFAULT_CONFIG
    assert mock.stats() == {"calls": 0, "requests": []}


def test_it_rejects_invalid_configuration(raw: httpx.Client, mock: MockServer) -> None:
    for change in (
        {"chunk_delay": -1},
        {"nonsense": 1},
        {"faults": [{"action": {"type": "explode"}}]},
        {"faults": [{"match": {"tenant": "x"}, "action": {"type": "echo_key"}}]},
        {"tool_calls": {"name": "t"}},
        {"tool_calls": [{"name": "t", "arguments": "{}"}]},
        {"tool_calls": [{"name": "", "arguments": {}}]},
        {"tool_text": ""},
        {"arguments_chunk": 0},
        {"thinking": 3},
        {"cache": {"read": 1}},
        {"cache": {"read": -1, "write": 0}},
    ):
        response = raw.post("/_mock/config", json=change)
        assert response.status_code == 400, change
    assert mock.configure()["chunk_delay"] == 0.0


def test_it_refuses_a_negative_delay_at_start() -> None:
    with pytest.raises(RuntimeError, match="chunk_delay must be a non-negative"):
        MockServer.start(chunk_delay=-0.5)


# --- agents: tools, tool results, thinking, cache, stops, images, count_tokens ---------------

WEATHER = {"city": "Paris", "unit": "celsius"}
CLOCK = {"zone": "Europe/Paris"}
TOOL_CALLS = [
    {"name": "get_weather", "arguments": WEATHER},
    {"name": "not_offered", "arguments": {"x": 1}},
    {"name": "get_time", "arguments": CLOCK},
]
# Compact JSON of WEATHER (33 characters) and CLOCK (23), in pieces of 8 characters.
ARGUMENT_PIECES = 5 + 3


def _schema(*names: str) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {name: {"type": "string"} for name in names},
        "required": list(names),
        "additionalProperties": False,
    }


OPENAI_TOOLS: Any = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather now",  # 3 + 2 prompt tokens
            "parameters": _schema("city", "unit"),
            "strict": True,
        },
    },
    {
        "type": "function",
        "function": {"name": "get_time", "parameters": _schema("zone"), "strict": True},
    },
]
ANTHROPIC_TOOLS: Any = [
    {"name": "get_weather", "description": "Weather now", "input_schema": _schema("city", "unit")},
    {"name": "get_time", "input_schema": _schema("zone")},
]
THOUGHT = "The user wants a greeting, so I will say hello."  # 10 words: 5 pieces
THINKING: Any = {"type": "enabled", "budget_tokens": 1024}
PNG = "iVBORw0KGgo="


def _raw_events(raw: httpx.Client, path: str, body: dict[str, Any]) -> list[Any]:
    """The data payloads of a stream, read off the wire."""
    headers = {"authorization": f"Bearer {KEY}", "anthropic-version": "2023-06-01"}
    with raw.stream("POST", path, json={**body, "stream": True}, headers=headers) as response:
        assert response.status_code == 200, response.read()
        lines = _data_lines(list(response.iter_lines()))
    events = [json.loads(line) for line in lines if line != "[DONE]"]
    return [event for event in events if event.get("type") != "ping"]


def test_it_calls_two_openai_tools_in_one_turn(
    oai: openai.OpenAI, mock: MockServer, raw: httpx.Client
) -> None:
    mock.configure(tool_calls=TOOL_CALLS)
    messages: Any = [{"role": "user", "content": "Weather and time in Paris?"}]

    completion = oai.chat.completions.create(
        model="gpt-mock", messages=messages, tools=OPENAI_TOOLS
    )
    with oai.chat.completions.stream(
        model="gpt-mock",
        messages=messages,
        tools=OPENAI_TOOLS,
        stream_options={"include_usage": True},
    ) as stream:
        streamed = stream.get_final_completion()
    events = _raw_events(
        raw, "/v1/chat/completions", {"model": "m", "messages": messages, "tools": OPENAI_TOOLS}
    )

    for answer in (completion, streamed):
        choice = answer.choices[0]
        assert choice.finish_reason == "tool_calls"
        assert not choice.message.content
        calls = choice.message.tool_calls or []
        assert [c.function.name for c in calls] == ["get_weather", "get_time"]  # type: ignore[union-attr]
        assert [json.loads(c.function.arguments) for c in calls] == [WEATHER, CLOCK]  # type: ignore[union-attr]
        assert all(re.fullmatch(r"call_[0-9a-f]{24}", c.id) for c in calls)
        assert answer.usage is not None
        assert answer.usage.prompt_tokens == (3 + 5) + (3 + 2) + 3
        assert answer.usage.completion_tokens == ARGUMENT_PIECES
    assert completion.choices[0].message.content is None
    parsed = streamed.choices[0].message.tool_calls or []
    assert [c.function.parsed_arguments for c in parsed] == [WEATHER, CLOCK]

    chunks = [ChatCompletionChunk.model_validate(event) for event in events]
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    pieces = [(d.tool_calls[0].index, d.tool_calls[0]) for d in deltas if d.tool_calls]
    assert [index for index, _ in pieces] == [0] * (1 + 5) + [1] * (1 + 3)
    openers = [call for _, call in pieces if call.id is not None]
    assert [(c.type, c.function and c.function.arguments) for c in openers] == [
        ("function", ""),
        ("function", ""),
    ]
    arguments = [c.function.arguments or "" for _, c in pieces if c.id is None and c.function]
    assert len(arguments) == ARGUMENT_PIECES and "".join(arguments) == json.dumps(
        WEATHER, separators=(",", ":")
    ) + (json.dumps(CLOCK, separators=(",", ":")))
    record = mock.requests()[-1]
    assert [c["name"] for c in record["tool_calls"]] == ["get_weather", "get_time"]
    assert record["usage"]["output_tokens"] == ARGUMENT_PIECES


def test_it_answers_openai_tool_results(oai: openai.OpenAI, mock: MockServer) -> None:
    mock.configure(tool_calls=TOOL_CALLS)
    messages: list[Any] = [{"role": "user", "content": "Weather and time in Paris?"}]
    first = oai.chat.completions.create(model="gpt-mock", messages=messages, tools=OPENAI_TOOLS)
    calls = first.choices[0].message.tool_calls or []
    messages.append(first.choices[0].message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": calls[0].id, "content": "sunny, 21 C"})
    messages.append(
        {
            "role": "tool",
            "tool_call_id": calls[1].id,
            "content": [{"type": "text", "text": "10:"}, {"type": "text", "text": "42"}],
        }
    )

    answer = oai.chat.completions.create(model="gpt-mock", messages=messages, tools=OPENAI_TOOLS)
    chunks = list(
        oai.chat.completions.create(
            model="gpt-mock", messages=messages, tools=OPENAI_TOOLS, stream=True
        )
    )

    assert answer.choices[0].message.content == "Tool results: sunny, 21 C | 10:42"
    assert answer.choices[0].finish_reason == "stop"
    assert not answer.choices[0].message.tool_calls
    streamed = [c.choices[0].delta.content for c in chunks if c.choices[0].delta.content]
    assert len(streamed) > 2 and "".join(streamed) == answer.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == "stop"
    record = mock.requests()[1]
    assert record["tool_results"] == [
        {"tool_use_id": calls[0].id, "text": "sunny, 21 C", "is_error": False, "images": 0},
        {"tool_use_id": calls[1].id, "text": "10:42", "is_error": False, "images": 0},
    ]
    assert record["usage"]["output_tokens"] == len(streamed)


def test_it_rejects_openai_tool_results_that_answer_no_call(
    oai: openai.OpenAI, mock: MockServer
) -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    asked: list[Any] = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
    ]
    wrong = [*asked, {"role": "tool", "tool_call_id": "call_2", "content": "x"}]
    orphan = [asked[0], {"role": "tool", "tool_call_id": "call_1", "content": "x"}]
    unanswered = [*asked, {"role": "user", "content": "well?"}]

    errors = []
    for messages in (wrong, orphan, unanswered):
        with pytest.raises(openai.BadRequestError) as caught:
            oai.chat.completions.create(model="gpt-mock", messages=messages)
        errors.append(caught.value)

    assert errors[0].message.endswith(
        "Invalid parameter: 'tool_call_id' of 'call_2' not found in 'tool_calls' of previous"
        " message."
    )
    assert errors[0].param == "messages.[2].tool_call_id"
    assert "must be a response to a preceeding message with 'tool_calls'" in errors[1].message
    assert "did not have response messages: call_1" in errors[2].message


def test_it_calls_two_anthropic_tools_in_one_turn(
    claude: anthropic.Anthropic, mock: MockServer, raw: httpx.Client
) -> None:
    mock.configure(tool_calls=TOOL_CALLS, tool_text="Let me look that up.", arguments_chunk=12)
    messages: Any = [{"role": "user", "content": "Weather and time in Paris?"}]
    body: Any = {"model": "claude-mock", "max_tokens": 100, "messages": messages}

    message = claude.messages.create(**body, tools=ANTHROPIC_TOOLS)
    with claude.messages.stream(**body, tools=ANTHROPIC_TOOLS) as stream:
        streamed = stream.get_final_message()
    events = _raw_events(raw, "/v1/messages", {**body, "tools": ANTHROPIC_TOOLS})

    for answer in (message, streamed):
        assert [block.type for block in answer.content] == ["text", "tool_use", "tool_use"]
        text, weather, clock = answer.content
        assert isinstance(text, TextBlock) and text.text == "Let me look that up."
        assert isinstance(weather, ToolUseBlock) and isinstance(clock, ToolUseBlock)
        assert (weather.name, weather.input, clock.name, clock.input) == (
            "get_weather",
            WEATHER,
            "get_time",
            CLOCK,
        )
        assert re.fullmatch(r"toolu_[0-9a-f]{24}", weather.id)
        assert answer.stop_reason == "tool_use"
        assert answer.usage.input_tokens == (3 + 5) + (3 + 2) + 3
        # The text in pieces of two words; the arguments (33 and 23 characters) in twelves.
        assert answer.usage.output_tokens == 3 + 3 + 2
    parsed = [EVENTS.validate_python(event) for event in events]
    starts = [e for e in parsed if isinstance(e, RawContentBlockStartEvent)]
    assert [(e.index, e.content_block.type) for e in starts] == [
        (0, "text"),
        (1, "tool_use"),
        (2, "tool_use"),
    ]
    assert all(getattr(e.content_block, "input", {}) == {} for e in starts)
    json_deltas = [
        (e.index, e.delta.partial_json)
        for e in parsed
        if isinstance(e, RawContentBlockDeltaEvent) and isinstance(e.delta, InputJSONDelta)
    ]
    assert [index for index, _ in json_deltas] == [1, 1, 1, 2, 2]
    stops = [e.index for e in parsed if e.type == "content_block_stop"]
    assert stops == [0, 1, 2]


def test_it_answers_anthropic_tool_results(claude: anthropic.Anthropic, mock: MockServer) -> None:
    mock.configure(tool_calls=TOOL_CALLS)
    messages: list[Any] = [{"role": "user", "content": "Weather and time in Paris?"}]
    first = claude.messages.create(
        model="claude-mock", max_tokens=100, messages=messages, tools=ANTHROPIC_TOOLS
    )
    ids = [block.id for block in first.content if isinstance(block, ToolUseBlock)]
    messages.append({"role": "assistant", "content": first.content})
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}
    messages.append(
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": ids[0], "content": "sunny"},
                {
                    "type": "tool_result",
                    "tool_use_id": ids[1],
                    "is_error": True,
                    "content": [{"type": "text", "text": "no clock"}, image],
                },
            ],
        }
    )

    with claude.messages.stream(
        model="claude-mock", max_tokens=100, messages=messages, tools=ANTHROPIC_TOOLS
    ) as stream:
        deltas = list(stream.text_stream)
        answer = stream.get_final_message()

    assert _text(answer.content) == "I see 1 image(s). Tool results: sunny | no clock"
    assert len(deltas) > 2
    assert answer.stop_reason == "end_turn"
    # (3 + 5) + 3 + (3 + 1 + 2) + two tool definitions (3 + 2) + 3
    assert answer.usage.input_tokens == 25
    record = mock.requests()[1]
    assert record["images"] == 1
    assert record["tool_results"] == [
        {"tool_use_id": ids[0], "text": "sunny", "is_error": False, "images": 0},
        {"tool_use_id": ids[1], "text": "no clock", "is_error": True, "images": 1},
    ]


def test_it_rejects_anthropic_tool_results_that_answer_no_call(
    claude: anthropic.Anthropic,
) -> None:
    use = {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}
    asked: list[Any] = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": [use]},
    ]
    result = {"type": "tool_result", "tool_use_id": "toolu_2", "content": "x"}
    wrong = [*asked, {"role": "user", "content": [result]}]
    unanswered = [*asked, {"role": "user", "content": "well?"}]

    messages = []
    for conversation in (wrong, unanswered):
        with pytest.raises(anthropic.BadRequestError) as caught:
            claude.messages.create(model="claude-mock", max_tokens=10, messages=conversation)
        assert isinstance(caught.value.body, dict)
        assert caught.value.body["error"]["type"] == "invalid_request_error"
        messages.append(caught.value.body["error"]["message"])

    assert messages[0] == (
        "messages.2.content.0: unexpected `tool_use_id` found in `tool_result` blocks: toolu_2."
        " Each `tool_result` block must have a corresponding `tool_use` block in the previous"
        " message."
    )
    assert "`tool_use` ids were found without `tool_result` blocks" in messages[1]


def test_it_calls_no_tool_the_request_does_not_offer(oai: openai.OpenAI, mock: MockServer) -> None:
    mock.configure(tool_calls=TOOL_CALLS)
    other: Any = [{"type": "function", "function": {"name": "other"}}]

    plain = oai.chat.completions.create(model="gpt-mock", messages=OPENAI_MESSAGES, tools=other)
    refused = oai.chat.completions.create(
        model="gpt-mock", messages=OPENAI_MESSAGES, tools=OPENAI_TOOLS, tool_choice="none"
    )

    for completion in (plain, refused):
        assert completion.choices[0].message.content == FULL_TEXT
        assert completion.choices[0].message.tool_calls is None
        assert completion.choices[0].finish_reason == "stop"


def test_it_signs_anthropic_thinking_and_checks_it_coming_back(
    claude: anthropic.Anthropic, mock: MockServer, raw: httpx.Client
) -> None:
    mock.configure(thinking=THOUGHT, chunks=2)
    body: Any = {"model": "claude-mock", "max_tokens": 2000, "messages": ANTHROPIC_MESSAGES}

    plain = claude.messages.create(**body)
    message = claude.messages.create(**body, thinking=THINKING)
    with claude.messages.stream(**body, thinking={"type": "adaptive"}) as stream:
        streamed = stream.get_final_message()
    events = [
        EVENTS.validate_python(e)
        for e in _raw_events(raw, "/v1/messages", {**body, "thinking": THINKING})
    ]

    assert [block.type for block in plain.content] == ["text"]
    for answer in (message, streamed):
        thinking, text = answer.content
        assert isinstance(thinking, ThinkingBlock) and isinstance(text, TextBlock)
        assert thinking.thinking == THOUGHT and thinking.signature
        assert text.text == "Hello from"
        assert answer.usage.output_tokens == 5 + 2
    assert streamed.content[0] == message.content[0]  # the signature depends on the text only
    deltas = [e.delta for e in events if isinstance(e, RawContentBlockDeltaEvent) and e.index == 0]
    assert [d.type for d in deltas] == ["thinking_delta"] * 5 + ["signature_delta"]
    assert mock.requests()[1]["usage"]["reasoning_tokens"] == 5

    signed = message.content[0].model_dump()

    def later_turn(block: dict[str, Any]) -> Any:
        turn: Any = [
            *ANTHROPIC_MESSAGES,
            {"role": "assistant", "content": [block, {"type": "text", "text": "Hello from"}]},
            {"role": "user", "content": "Again"},
        ]
        return claude.messages.create(**{**body, "messages": turn}, thinking=THINKING)

    assert later_turn(signed).stop_reason == "end_turn"
    forged = {**signed, "signature": base64.b64encode(b"x" * 32).decode()}
    altered = {**signed, "thinking": THOUGHT + " Or not."}
    for block in (forged, altered):
        with pytest.raises(anthropic.BadRequestError) as caught:
            later_turn(block)
        assert caught.value.body == {
            "type": "error",
            "error": {
                "type": "invalid_request_error",
                "message": "messages.1.content.0: Invalid `signature` in `thinking` block",
            },
        }


def test_it_sends_openai_reasoning_content(oai: openai.OpenAI, mock: MockServer) -> None:
    mock.configure(thinking=THOUGHT, chunks=3)

    completion = oai.chat.completions.create(model="gpt-mock", messages=OPENAI_MESSAGES)
    chunks = list(
        oai.chat.completions.create(
            model="gpt-mock",
            messages=OPENAI_MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
    )

    message = completion.choices[0].message
    assert message.content == "Hello from the"
    assert (message.model_extra or {})["reasoning_content"] == THOUGHT
    assert completion.usage is not None and completion.usage.completion_tokens == 5 + 3
    details = completion.usage.completion_tokens_details
    assert details is not None and details.reasoning_tokens == 5
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    reasoning = [(d.model_extra or {}).get("reasoning_content") for d in deltas]
    assert "".join(r for r in reasoning if r) == THOUGHT
    first_content = next(i for i, d in enumerate(deltas) if d.content)
    assert all(r is None for r in reasoning[first_content:])
    assert chunks[-1].usage == completion.usage


def test_it_reports_cache_counts(
    oai: openai.OpenAI, claude: anthropic.Anthropic, raw: httpx.Client
) -> None:
    body: Any = {
        "model": "m",
        "max_tokens": 100,
        "messages": ANTHROPIC_MESSAGES,
        "system": "Be brief.",
    }
    raw.post("/_mock/config", json={"cache": {"read": 5, "write": 4}})

    message = claude.messages.create(**body)
    events = [EVENTS.validate_python(e) for e in _raw_events(raw, "/v1/messages", body)]
    completion = oai.chat.completions.create(model="gpt-mock", messages=OPENAI_MESSAGES)

    assert message.usage.input_tokens == ANTHROPIC_PROMPT_TOKENS - 5 - 4
    assert message.usage.cache_read_input_tokens == 5
    assert message.usage.cache_creation_input_tokens == 4
    start, delta = events[0], events[-2]
    assert isinstance(start, RawMessageStartEvent) and isinstance(delta, RawMessageDeltaEvent)
    for usage in (start.message.usage, delta.usage):
        assert (usage.input_tokens, usage.cache_read_input_tokens) == (3, 5)
        assert usage.cache_creation_input_tokens == 4
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == OPENAI_PROMPT_TOKENS
    assert completion.usage.prompt_tokens_details is not None
    assert completion.usage.prompt_tokens_details.cached_tokens == 5


def test_it_stops_at_stop_sequences(
    oai: openai.OpenAI, claude: anthropic.Anthropic, mock: MockServer
) -> None:
    completion = oai.chat.completions.create(
        model="gpt-mock", messages=OPENAI_MESSAGES, stop=["xyz", "ovider"]
    )
    single = oai.chat.completions.create(model="gpt-mock", messages=OPENAI_MESSAGES, stop=" mock")
    message = claude.messages.create(
        model="claude-mock", max_tokens=100, messages=ANTHROPIC_MESSAGES, stop_sequences=[" the"]
    )
    with claude.messages.stream(
        model="claude-mock", max_tokens=100, messages=ANTHROPIC_MESSAGES, stop_sequences=["ovider"]
    ) as stream:
        streamed = stream.get_final_message()
    limited = claude.messages.create(
        model="claude-mock", max_tokens=2, messages=ANTHROPIC_MESSAGES, stop_sequences=["piece"]
    )

    assert completion.choices[0].message.content == "Hello from the mock pr"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.completion_tokens == 5
    assert single.choices[0].message.content == "Hello from the"
    assert _text(message.content) == "Hello from"
    assert (message.stop_reason, message.stop_sequence) == ("stop_sequence", " the")
    assert message.usage.output_tokens == 2
    assert _text(streamed.content) == "Hello from the mock pr"
    assert (streamed.stop_reason, streamed.stop_sequence) == ("stop_sequence", "ovider")
    assert (limited.stop_reason, limited.stop_sequence) == ("max_tokens", None)
    assert mock.requests()[3]["chunks_sent"] == 5
    with pytest.raises(anthropic.BadRequestError):
        claude.messages.create(
            model="claude-mock", max_tokens=9, messages=ANTHROPIC_MESSAGES, stop_sequences=[" "]
        )


def test_it_sees_and_checks_images(
    oai: openai.OpenAI, claude: anthropic.Anthropic, mock: MockServer
) -> None:
    parts: Any = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
    ]
    completion = oai.chat.completions.create(
        model="gpt-mock", messages=[{"role": "user", "content": parts}], max_tokens=3
    )
    blocks: Any = [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}},
        {"type": "text", "text": "What is this?"},
    ]
    message = claude.messages.create(
        model="claude-mock", max_tokens=100, messages=[{"role": "user", "content": blocks}]
    )

    assert completion.choices[0].message.content == "I see 2 image(s). Hello from"
    assert _text(message.content) == "I see 2 image(s). " + FULL_TEXT
    assert message.usage.output_tokens == 1 + 8
    assert [record["images"] for record in mock.requests()] == [2, 2]

    bad_openai: Any = [{"type": "image_url", "image_url": {"url": "cat.png"}}]
    with pytest.raises(openai.BadRequestError) as oai_error:
        oai.chat.completions.create(
            model="gpt-mock", messages=[{"role": "user", "content": bad_openai}]
        )
    assert oai_error.value.param == "messages.[0].content.[0].image_url.url"
    bad_media: Any = {"type": "base64", "media_type": "image/bmp", "data": PNG}
    bad_data: Any = {"type": "base64", "media_type": "image/png", "data": "not base64!"}
    bad_kind: Any = {"type": "nonsense"}
    for source in (bad_media, bad_data, bad_kind):
        image: Any = {"type": "image", "source": source}
        with pytest.raises(anthropic.BadRequestError) as caught:
            claude.messages.create(
                model="claude-mock",
                max_tokens=10,
                messages=[{"role": "user", "content": [image]}],
            )
        assert "messages.0.content.0.image.source" in caught.value.message


def test_it_counts_anthropic_tokens(
    claude: anthropic.Anthropic, mock: MockServer, raw: httpx.Client
) -> None:
    counted = claude.messages.count_tokens(
        model="claude-mock",
        system=ANTHROPIC_SYSTEM,
        messages=ANTHROPIC_MESSAGES,
        tools=ANTHROPIC_TOOLS,
    )
    message = claude.messages.create(
        model="claude-mock",
        max_tokens=5,
        system=ANTHROPIC_SYSTEM,
        messages=ANTHROPIC_MESSAGES,
        tools=ANTHROPIC_TOOLS,
    )
    body = {"model": "claude-mock", "messages": ANTHROPIC_MESSAGES}
    no_version = raw.post("/v1/messages/count_tokens", json=body, headers={"x-api-key": KEY})

    assert counted.input_tokens == ANTHROPIC_PROMPT_TOKENS + (3 + 2) + 3
    assert counted.input_tokens == message.usage.input_tokens
    assert no_version.status_code == 400
    record = mock.requests()[0]
    assert (record["api"], record["path"], record["status"]) == (
        "anthropic",
        "/v1/messages/count_tokens",
        200,
    )
    assert record["usage"] == {"input_tokens": counted.input_tokens, "output_tokens": 0}


def test_it_keeps_beta_requests_and_unknown_fields(
    claude: anthropic.Anthropic, mock: MockServer, raw: httpx.Client
) -> None:
    message = claude.beta.messages.create(
        model="claude-mock",
        max_tokens=5,
        messages=[{"role": "user", "content": "Say hello to me"}],
        betas=["interleaved-thinking-2025-05-14"],
    )
    unknown: Any = {
        "model": "claude-mock",
        "max_tokens": 5,
        "messages": [{"role": "user", "content": [{"type": "hologram", "x": 1}]}],
        "brand_new_option": {"on": True},
    }
    headers = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
    response = raw.post("/v1/messages?beta=true", json=unknown, headers=headers)

    assert message.stop_reason == "max_tokens"
    assert response.status_code == 200
    sdk_call, raw_call = mock.requests()
    assert (sdk_call["query"], raw_call["query"]) == ("", "beta=true")
    assert sdk_call["headers"]["anthropic-beta"] == "interleaved-thinking-2025-05-14"
    assert raw_call["body"] == unknown
    assert Message.model_validate(response.json()).content


def test_it_keeps_every_new_reply_valid_for_the_sdk_types(
    mock: MockServer, raw: httpx.Client
) -> None:
    mock.configure(
        tool_calls=TOOL_CALLS, tool_text="Looking.", thinking=THOUGHT, cache={"read": 1, "write": 1}
    )
    openai_body: Any = {"model": "m", "messages": OPENAI_MESSAGES, "tools": OPENAI_TOOLS}
    anthropic_body: Any = {
        "model": "m",
        "max_tokens": 2000,
        "messages": ANTHROPIC_MESSAGES,
        "tools": ANTHROPIC_TOOLS,
        "thinking": THINKING,
    }
    headers = {"authorization": f"Bearer {KEY}", "anthropic-version": "2023-06-01"}

    completion = raw.post("/v1/chat/completions", json=openai_body, headers=headers).json()
    message = raw.post("/v1/messages", json=anthropic_body, headers=headers).json()
    chunks = _raw_events(raw, "/v1/chat/completions", openai_body)
    events = _raw_events(raw, "/v1/messages", anthropic_body)

    assert ChatCompletion.model_validate(completion).choices[0].finish_reason == "tool_calls"
    assert [c["type"] for c in Message.model_validate(message).model_dump()["content"]] == [
        "thinking",
        "text",
        "tool_use",
        "tool_use",
    ]
    assert all(ChatCompletionChunk.model_validate(chunk) for chunk in chunks)
    assert all(EVENTS.validate_python(event) for event in events)
    assert [e["index"] for e in events if e["type"] == "content_block_start"] == [0, 1, 2, 3]


# --- OpenAI Responses -----------------------------------------------------------------------

RESPONSES_TOOLS: Any = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "Weather now",  # 3 + 2 prompt tokens
        "parameters": _schema("city", "unit"),
        "strict": True,
    },
    {"type": "function", "name": "get_time", "parameters": _schema("zone"), "strict": True},
]
APPLY_PATCH: Any = {"type": "custom", "name": "apply_patch", "description": "Edit files"}
PATCH = "*** Begin Patch\n*** End Patch\n"  # 30 characters: 4 pieces of 8
RESPONSE_EVENTS: TypeAdapter[ResponseStreamEvent] = TypeAdapter(ResponseStreamEvent)
# (3 + 4 words) + (3 + 2 words): the input and the instructions
RESPONSES_PROMPT_TOKENS = 12


def _responses_events(raw: httpx.Client, body: dict[str, Any]) -> list[dict[str, Any]]:
    """A Responses stream's events off the wire, each checked: `event:` names its type."""
    headers = {"authorization": f"Bearer {KEY}"}
    with raw.stream("POST", "/v1/responses", json={**body, "stream": True}, headers=headers) as r:
        assert r.status_code == 200, r.read()
        lines = [line for line in r.iter_lines() if line]
    events = []
    for name, data in zip(lines[::2], lines[1::2], strict=True):
        event = json.loads(data.removeprefix("data: "))
        assert name == f"event: {event['type']}"
        events.append(event)
    return events


def test_it_answers_openai_responses(oai: openai.OpenAI, mock: MockServer) -> None:
    response = oai.responses.create(
        model="gpt-mock", input="Say hello to me", instructions="Be brief."
    )

    assert response.id.startswith("resp_")
    assert (response.object, response.status, response.model) == (
        "response",
        "completed",
        "gpt-mock",
    )
    assert response.output_text == FULL_TEXT
    (message,) = response.output
    assert message.type == "message" and message.status == "completed"
    assert response.usage is not None
    assert response.usage.input_tokens == RESPONSES_PROMPT_TOKENS
    assert response.usage.output_tokens == 8
    assert response.usage.total_tokens == RESPONSES_PROMPT_TOKENS + 8
    assert response.usage.input_tokens_details.cached_tokens == 0
    assert response.usage.output_tokens_details.reasoning_tokens == 0
    assert response.instructions == "Be brief."
    Response.model_validate(response.model_dump())
    record = mock.requests()[-1]
    assert (record["api"], record["path"], record["model"]) == (
        "responses",
        "/v1/responses",
        "gpt-mock",
    )
    assert record["usage"] == {"input_tokens": RESPONSES_PROMPT_TOKENS, "output_tokens": 8}
    assert record["text_sent"] == FULL_TEXT


def test_it_streams_openai_responses_events_in_order(oai: openai.OpenAI, raw: httpx.Client) -> None:
    with oai.responses.stream(model="gpt-mock", input="Say hello to me") as stream:
        seen = list(stream)
        final = stream.get_final_response()
    events = _responses_events(raw, {"model": "gpt-mock", "input": "Say hello to me"})

    types = [event["type"] for event in events]
    assert types == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * 8,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [event["sequence_number"] for event in events] == list(range(len(events)))
    assert all(RESPONSE_EVENTS.validate_python(event) for event in events)
    item_id = events[2]["item"]["id"]
    assert all(e["item_id"] == item_id for e in events[3:-2] if "item_id" in e)
    assert all(e["output_index"] == 0 for e in events[2:-1])
    completed = events[-1]["response"]
    assert completed["usage"]["output_tokens"] == 8 and completed["output"][0]["id"] == item_id
    # The SDK's accumulator agrees with response.completed.
    assert final.output_text == FULL_TEXT
    assert [e.type for e in seen][-1] == "response.completed"
    done = seen[-1]
    assert done.type == "response.completed"
    assert [item.model_dump() for item in final.output] == [
        item.model_dump() for item in done.response.output
    ]
    assert final.usage is not None and final.usage.output_tokens == 8


def test_it_calls_two_functions_in_one_response_then_reads_their_outputs(
    oai: openai.OpenAI, mock: MockServer, raw: httpx.Client
) -> None:
    mock.configure(tool_calls=TOOL_CALLS)
    question: Any = [{"role": "user", "content": "Weather and time in Paris?"}]

    response = oai.responses.create(model="gpt-mock", input=question, tools=RESPONSES_TOOLS)
    with oai.responses.stream(model="gpt-mock", input=question, tools=RESPONSES_TOOLS) as stream:
        streamed = stream.get_final_response()
    events = _responses_events(raw, {"model": "m", "input": question, "tools": RESPONSES_TOOLS})

    for answer in (response, streamed):
        calls = [item for item in answer.output if item.type == "function_call"]
        assert [c.name for c in calls] == ["get_weather", "get_time"]
        assert [json.loads(c.arguments) for c in calls] == [WEATHER, CLOCK]
        assert all(re.fullmatch(r"call_[0-9a-f]{24}", c.call_id) for c in calls)
        assert answer.usage is not None
        assert answer.usage.input_tokens == (3 + 5) + (3 + 2) + 3
        assert answer.usage.output_tokens == ARGUMENT_PIECES
    deltas = [e for e in events if e["type"] == "response.function_call_arguments.delta"]
    assert [e["output_index"] for e in deltas] == [0] * 5 + [1] * 3
    dones = [e for e in events if e["type"] == "response.function_call_arguments.done"]
    assert [(e["name"], json.loads(e["arguments"])) for e in dones] == [
        ("get_weather", WEATHER),
        ("get_time", CLOCK),
    ]

    calls = [item for item in response.output if item.type == "function_call"]
    follow_up: Any = [
        *question,
        *[call.model_dump(exclude_none=True) for call in calls],
        {"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny, 21 C"},
        {
            "type": "function_call_output",
            "call_id": calls[1].call_id,
            "output": [{"type": "input_text", "text": "10:"}, {"type": "input_text", "text": "42"}],
        },
    ]
    answer = oai.responses.create(model="gpt-mock", input=follow_up, tools=RESPONSES_TOOLS)

    assert answer.output_text == "Tool results: sunny, 21 C | 10:42"
    assert not [item for item in answer.output if item.type == "function_call"]
    record = mock.requests()[-1]
    assert record["tool_results"] == [
        {"tool_use_id": calls[0].call_id, "text": "sunny, 21 C", "is_error": False, "images": 0},
        {"tool_use_id": calls[1].call_id, "text": "10:42", "is_error": False, "images": 0},
    ]


def test_it_rejects_responses_tool_outputs_that_answer_no_call(oai: openai.OpenAI) -> None:
    call: Any = {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": "{}"}
    output: Any = {"type": "function_call_output", "call_id": "call_2", "output": "x"}
    unanswered: Any = [{"role": "user", "content": "hi"}, call]

    with pytest.raises(openai.BadRequestError) as wrong:
        oai.responses.create(model="gpt-mock", input=[call, output])
    with pytest.raises(openai.BadRequestError) as missing:
        oai.responses.create(model="gpt-mock", input=unanswered)

    assert wrong.value.message.endswith(
        "No tool call found for function call output with call_id call_2."
    )
    assert wrong.value.param == "input"
    assert missing.value.message.endswith("No tool output found for function call call_1.")


def test_it_calls_a_custom_tool_with_its_input(
    oai: openai.OpenAI, mock: MockServer, raw: httpx.Client
) -> None:
    mock.configure(tool_calls=[{"name": "apply_patch", "arguments": {"input": PATCH}}])
    body: Any = {"model": "gpt-mock", "input": "Fix it", "tools": [APPLY_PATCH]}

    response = oai.responses.create(**body)
    events = _responses_events(raw, body)

    (call,) = response.output
    assert call.type == "custom_tool_call"
    assert (call.name, call.input) == ("apply_patch", PATCH)
    deltas = [e["delta"] for e in events if e["type"] == "response.custom_tool_call_input.delta"]
    assert len(deltas) == 4 and "".join(deltas) == PATCH
    (done,) = [e for e in events if e["type"] == "response.custom_tool_call_input.done"]
    assert done["input"] == PATCH
    assert response.usage is not None and response.usage.output_tokens == 4

    answer = oai.responses.create(
        model="gpt-mock",
        input=[
            {"role": "user", "content": "Fix it"},
            call.model_dump(exclude_none=True),
            {"type": "custom_tool_call_output", "call_id": call.call_id, "output": "Done!"},
        ],
        tools=[APPLY_PATCH],
    )
    assert answer.output_text == "Tool results: Done!"


def test_it_sends_a_custom_tools_arguments_as_json_without_an_input(
    oai: openai.OpenAI, mock: MockServer
) -> None:
    mock.configure(tool_calls=[{"name": "apply_patch", "arguments": WEATHER}])

    response = oai.responses.create(model="gpt-mock", input="Fix it", tools=[APPLY_PATCH])

    (call,) = response.output
    assert call.type == "custom_tool_call"
    assert call.input == json.dumps(WEATHER, separators=(",", ":"))


def test_it_sends_reasoning_and_checks_it_coming_back(oai: openai.OpenAI, mock: MockServer) -> None:
    mock.configure(thinking=THOUGHT)
    include: Any = ["reasoning.encrypted_content"]

    response = oai.responses.create(model="gpt-mock", input="Say hello", include=include)
    with oai.responses.stream(model="gpt-mock", input="Say hello", include=include) as stream:
        streamed = stream.get_final_response()

    for answer in (response, streamed):
        reasoning, message = answer.output
        assert reasoning.type == "reasoning" and message.type == "message"
        assert [part.text for part in reasoning.summary] == [THOUGHT]
        assert reasoning.encrypted_content
        assert answer.usage is not None
        assert answer.usage.output_tokens_details.reasoning_tokens == 5
        assert answer.usage.output_tokens == 5 + 8
    assert mock.requests()[0]["usage"]["reasoning_tokens"] == 5
    reasoning = response.output[0]
    assert reasoning.type == "reasoning" and reasoning.encrypted_content
    item = reasoning.model_dump(exclude_none=True)
    turn: Any = [{"role": "user", "content": "Say hello"}, item]

    again = oai.responses.create(
        model="gpt-mock", input=[*turn, {"role": "user", "content": "Again"}]
    )
    altered: Any = {**item, "encrypted_content": reasoning.encrypted_content[:-6] + "AAAAAA"}
    with pytest.raises(openai.BadRequestError) as forged:
        oai.responses.create(model="gpt-mock", input=[turn[0], altered])
    without: Any = {key: value for key, value in item.items() if key != "encrypted_content"}
    with pytest.raises(openai.BadRequestError) as stored:
        oai.responses.create(model="gpt-mock", input=[turn[0], without])

    assert again.status == "completed"
    assert forged.value.code == "invalid_encrypted_content"
    assert "could not be verified" in forged.value.message
    assert "Items are not persisted when `store` is set to false" in stored.value.message
    plain = oai.responses.create(model="gpt-mock", input="Say hello")
    assert plain.output[0].type == "reasoning" and plain.output[0].encrypted_content is None


def test_it_reports_responses_cache_counts(oai: openai.OpenAI, mock: MockServer) -> None:
    mock.configure(cache={"read": 7, "write": 2})

    response = oai.responses.create(model="gpt-mock", input="Say hello to me")

    assert response.usage is not None
    assert response.usage.input_tokens == 7  # the total, cached tokens included
    assert response.usage.input_tokens_details.cached_tokens == 7
    assert mock.requests()[0]["usage"]["cache_read_tokens"] == 7


def test_it_sees_responses_images_and_checks_them(oai: openai.OpenAI, mock: MockServer) -> None:
    image: Any = {
        "type": "input_image",
        "image_url": f"data:image/png;base64,{PNG}",
        "detail": "auto",
    }
    content: Any = [{"type": "input_text", "text": "What is this?"}, image, image]

    response = oai.responses.create(model="gpt-mock", input=[{"role": "user", "content": content}])
    bad: Any = [{"role": "user", "content": [{**image, "image_url": "file.png"}]}]
    with pytest.raises(openai.BadRequestError) as refused:
        oai.responses.create(model="gpt-mock", input=bad)

    assert response.output_text.startswith("I see 2 image(s). Hello")
    assert response.usage is not None and response.usage.input_tokens == 3 + 3
    assert mock.requests()[0]["images"] == 2
    assert refused.value.param == "input[0].content[0].image_url"


def test_it_cuts_responses_at_max_output_tokens(oai: openai.OpenAI, raw: httpx.Client) -> None:
    response = oai.responses.create(model="gpt-mock", input="Say hello", max_output_tokens=3)
    events = _responses_events(raw, {"model": "m", "input": "Hi", "max_output_tokens": 3})

    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.output_text == "Hello from the"
    assert response.output[0].type == "message" and response.output[0].status == "incomplete"
    assert response.usage is not None and response.usage.output_tokens == 3
    assert events[-1]["type"] == "response.incomplete"
    assert events[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    assert [e["type"] for e in events].count("response.output_text.delta") == 3


def test_it_refuses_previous_response_ids_and_bad_input(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as previous:
        oai.responses.create(model="gpt-mock", input="Hi", previous_response_id="resp_123")
    with pytest.raises(openai.BadRequestError) as missing:
        oai.responses.create(model="gpt-mock")
    with pytest.raises(openai.BadRequestError) as wrong:
        oai.responses.create(model="gpt-mock", input={"text": "hi"})  # type: ignore[call-overload]

    assert previous.value.code == "previous_response_not_found"
    assert previous.value.message.endswith("Previous response with id 'resp_123' not found.")
    assert (missing.value.param, missing.value.code) == ("input", "missing_required_parameter")
    assert (wrong.value.param, wrong.value.code) == ("input", "invalid_type")


def test_it_applies_faults_to_responses_calls(
    oai: openai.OpenAI, mock: MockServer, raw: httpx.Client
) -> None:
    mock.configure(
        faults=[
            {"match": {"api": "responses"}, "times": 1,
             "action": {"type": "status", "status": 429}},
            {"match": {"api": "responses"}, "times": 1,
             "action": {"type": "stream_error", "chunks": 2}},
            {"match": {"api": "responses"}, "times": 1,
             "action": {"type": "stream_error", "chunks": 2, "event": "response.failed"}},
            {"match": {"api": "responses"}, "times": 1,
             "action": {"type": "usage", "usage": {"input_tokens": 1}}},
            {"match": {"api": "openai"}, "action": {"type": "status", "status": 500}},
        ]
    )  # fmt: skip

    with pytest.raises(openai.RateLimitError):
        oai.responses.create(model="gpt-mock", input="Hi")
    with pytest.raises(openai.APIError) as failed:
        with oai.responses.stream(model="gpt-mock", input="Hi") as stream:
            list(stream)
    events = _responses_events(raw, {"model": "m", "input": "Hi"})
    overridden = oai.responses.create(model="gpt-mock", input="Hi")

    assert f"Rate limit reached for key {KEY}" in failed.value.message
    assert [e["type"] for e in events][-3:] == [
        "response.output_text.delta",
        "response.output_text.delta",
        "response.failed",
    ]
    assert events[-1]["response"]["status"] == "failed"
    assert events[-1]["response"]["error"]["code"] == "rate_limit_exceeded"
    assert overridden.usage is not None and overridden.usage.input_tokens == 1
    assert [r["fault"] for r in mock.requests()] == [
        "status",
        "stream_error",
        "stream_error",
        "usage",
    ]


def test_it_refuses_an_unknown_api_in_a_fault_match(mock: MockServer, raw: httpx.Client) -> None:
    bad = {"faults": [{"match": {"api": "gemini"}, "action": {"type": "status", "status": 500}}]}
    worse = {"faults": [{"action": {"type": "stream_error", "chunks": 1, "event": "boom"}}]}

    assert raw.post("/_mock/config", json=bad).status_code == 400
    assert raw.post("/_mock/config", json=worse).status_code == 400
