"""The codecs, unit by unit, on provider answers recorded in their wire format.

No server and no database: each codec is handed a parsed request and the bytes a provider
sends (tests/fixtures/wire/, see its README for where each shape comes from), and what it
gives back is checked against the official SDKs' types as well as by value.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from anthropic.types import ErrorResponse, Message, RawMessageStreamEvent
from django.conf import settings
from django.test import override_settings
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from pydantic import TypeAdapter

from core.errors import ProxyError
from routing.codecs.base import StreamTranslator, Usage, error_message_of, upstream_error
from routing.codecs.openai_chat import ChatRequest, parse_chat_request
from routing.codecs.openai_passthrough import OpenAIPassthrough
from routing.codecs.registry import OPENAI_CHAT
from routing.codecs.translate import Translation
from routing.context import Route
from routing.sse import SSEEvent, SSEParser
from tests.support.routes import make_route

pytestmark = pytest.mark.core

WIRE = Path(__file__).parent / "fixtures" / "wire"
# An OpenAI chat client on an Anthropic route: the translation through the internal model.
TO_ANTHROPIC = OPENAI_CHAT.provider_codec(
    make_route("anthropic", base_url="https://a.test", upstream_model="m").provider
)
SSE_FIXTURES = (
    "openai_chat_stream.sse",
    "openai_chat_stream_without_usage.sse",
    "moonshot_chat_stream.sse",
    "anthropic_stream.sse",
    "anthropic_stream_overloaded.sse",
)
QUESTION = "What is the capital of France?"
ANSWER = "The capital of France is Paris \u2014 la Ville Lumi\u00e8re."
ALLOWANCE = 512  # the completion allowance the proxy reserved (max_tokens of build())


def wire(name: str) -> bytes:
    return (WIRE / name).read_bytes()


@pytest.fixture(scope="module")
def openai_route() -> Route:
    return make_route("openai", base_url="https://api.openai.com/v1", upstream_model="gpt-4o")


@pytest.fixture(scope="module")
def anthropic_route() -> Route:
    return make_route(
        "anthropic", base_url="https://api.anthropic.com", upstream_model="claude-sonnet-4-5"
    )


def chat(**fields: Any) -> ChatRequest:
    """A client's chat request: one user question unless ``fields`` say otherwise."""
    body: dict[str, Any] = {"model": "auto", "messages": [{"role": "user", "content": QUESTION}]}
    body.update(fields)
    return parse_chat_request(json.dumps(body).encode(), max_messages=100)


def refusal(raw: bytes, **options: Any) -> ProxyError:
    with pytest.raises(ProxyError) as caught:
        parse_chat_request(raw, max_messages=options.pop("max_messages", 100), **options)
    return caught.value


def events_of(*pieces: bytes) -> list[SSEEvent]:
    parser = SSEParser()
    events = [event for piece in pieces for event in parser.feed(piece)]
    assert b"".join(event.raw for event in events) == b"".join(pieces)  # nothing left over
    return events


def pieces_of(raw: bytes, size: int) -> list[bytes]:
    return [raw[i : i + size] for i in range(0, len(raw), size)]


def translate(translator: StreamTranslator, raw: bytes, *, piece: int = 64) -> bytes:
    """What the client receives: the provider's bytes cut into network-sized pieces."""
    parser = SSEParser()
    out, seen = b"", b""
    for chunk in pieces_of(raw, piece):
        for event in parser.feed(chunk):
            seen += event.raw
            out += translator.feed(event)
    assert seen == raw  # every event was complete, and fed
    return out


def public(raw: bytes) -> bytes:
    """A provider's stream as the tenant sees it: every chunk names the model it asked for."""
    return re.sub(rb'"model":"[^"]*"', b'"model":"auto"', raw)


def data_of(stream: bytes) -> list[str]:
    """The data fields of a stream the client receives (every event must carry one)."""
    datas = [event.data for event in events_of(stream)]
    assert all(data is not None for data in datas)
    return [data for data in datas if data is not None]


def chunks_of(stream: bytes) -> list[dict[str, Any]]:
    """The chat.completion.chunk objects of a translated stream, each checked by the SDK."""
    datas = data_of(stream)
    assert datas[-1] == "[DONE]"
    chunks = [json.loads(data) for data in datas[:-1]]
    for chunk in chunks:
        ChatCompletionChunk.model_validate(chunk)
    return chunks


def text_deltas(chunks: Iterable[dict[str, Any]]) -> list[str]:
    return [
        choice["delta"]["content"]
        for chunk in chunks
        for choice in chunk["choices"]
        if choice["delta"].get("content")
    ]


# --- the fixtures themselves ----------------------------------------------------------------


def test_it_has_fixtures_the_official_sdks_accept() -> None:
    ChatCompletion.model_validate_json(wire("openai_chat_completion.json"))
    for name in ("openai_chat_stream.sse", "openai_chat_stream_without_usage.sse"):
        *chunks, done = data_of(wire(name))
        assert done == "[DONE]"
        for chunk in chunks:
            ChatCompletionChunk.model_validate_json(chunk)
    *chunks, done = data_of(wire("moonshot_chat_stream.sse"))
    assert done == "[DONE]"
    for chunk in chunks:
        ChatCompletionChunk.model_validate_json(chunk)

    Message.model_validate_json(wire("anthropic_message.json"))
    stream_event: TypeAdapter[RawMessageStreamEvent] = TypeAdapter(RawMessageStreamEvent)
    for name in ("anthropic_stream.sse", "anthropic_stream_overloaded.sse"):
        for event in events_of(wire(name)):
            assert event.data is not None
            payload = json.loads(event.data)
            assert payload["type"] == event.event  # Anthropic names every event twice
            if event.event == "error":
                ErrorResponse.model_validate(payload)
            elif event.event != "ping":
                stream_event.validate_python(payload)


def test_it_has_an_anthropic_stream_with_every_event_type() -> None:
    assert [event.event for event in events_of(wire("anthropic_stream.sse"))] == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert [event.event for event in events_of(wire("anthropic_stream_overloaded.sse"))][-1] == (
        "error"
    )


# --- SSEParser ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SSE_FIXTURES)
def test_it_parses_a_recorded_stream_the_same_at_every_cut(name: str) -> None:
    raw = wire(name)
    whole = events_of(raw)
    assert b"".join(event.raw for event in whole) == raw
    for cut in range(1, len(raw)):
        assert events_of(raw[:cut], raw[cut:]) == whole, f"cut at byte {cut}"
    assert events_of(*pieces_of(raw, 1)) == whole


# --- OpenAI chat requests as clients send them ------------------------------------------------


def test_it_parses_a_chat_request_into_its_call() -> None:
    body: dict[str, Any] = {
        "model": "auto",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": QUESTION}]},
        ],
        "stream": True,
        "stream_options": {"include_usage": True},
        "n": 2,
        "max_completion_tokens": 256,
        "temperature": 0.2,
        "stop": ["\n\n"],
        "user": "user-42",
    }
    call = parse_chat_request(json.dumps(body).encode(), max_messages=10)
    assert call == ChatRequest(
        body=body,
        model="auto",
        stream=True,
        include_usage=True,
        max_tokens=256,
        messages=body["messages"],
        completions=2,
    )


def test_it_defaults_what_a_chat_request_leaves_out() -> None:
    call = chat()
    assert (call.stream, call.include_usage, call.max_tokens, call.completions) == (
        False,
        False,
        None,
        1,
    )
    assert chat(max_tokens=64).max_tokens == 64
    assert chat(max_tokens=64, max_completion_tokens=32).max_tokens == 32
    assert chat(stream=True, stream_options={"include_usage": False}).include_usage is False


def test_it_keeps_unknown_fields_for_a_provider_of_the_same_format(openai_route: Route) -> None:
    # A provider's extension (vLLM's top_k) or a parameter newer than the proxy goes through to
    # an OpenAI-compatible route; a translation refuses it by name (tests/test_codec_chat.py).
    raw = json.dumps({"model": "auto", "messages": [{"role": "user"}], "top_k": 5}).encode()
    call = OPENAI_CHAT.parse(raw, {})
    outgoing = OPENAI_CHAT.provider_codec(openai_route.provider).build(
        route=openai_route, call=call, max_tokens=ALLOWANCE
    )
    assert outgoing.payload["top_k"] == 5
    with pytest.raises(ProxyError) as caught:
        TO_ANTHROPIC.build(route=openai_route, call=call, max_tokens=ALLOWANCE)
    assert (caught.value.status, caught.value.param) == (400, "top_k")


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"model": ""}, "model"),
        ({"model": 7}, "model"),
        ({"messages": []}, "messages"),
        ({"messages": {"role": "user"}}, "messages"),
        ({"messages": ["hello"]}, "messages[0]"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, "messages[0]"),
        ({"messages": [{"role": "user", "content": 42}]}, "messages[0]"),
        ({"stream": "yes"}, "stream"),
        ({"stream_options": [True]}, "stream_options"),
        ({"temperature": 2.5}, "temperature"),
        ({"temperature": "hot"}, "temperature"),
        ({"top_p": 1.5}, "top_p"),
        ({"presence_penalty": -3}, "presence_penalty"),
        ({"frequency_penalty": True}, "frequency_penalty"),
        ({"n": 0}, "n"),
        ({"n": 17}, "n"),
        ({"n": True}, "n"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"stop": [1]}, "stop"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": 1.5}, "max_tokens"),
        ({"max_completion_tokens": 10_000_001}, "max_completion_tokens"),
        ({"tools": {"type": "function"}}, "tools"),
        ({"tool_choice": 1}, "tool_choice"),
        ({"response_format": "json"}, "response_format"),
        ({"user": 42}, "user"),
        ({"seed": True}, "seed"),
        ({"logprobs": "yes"}, "logprobs"),
        ({"service_tier": "flex"}, "service_tier"),
    ],
)
def test_it_refuses_a_field_of_the_wrong_type_or_range(fields: dict[str, Any], param: str) -> None:
    body: dict[str, Any] = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
    body.update(fields)
    error = refusal(json.dumps(body).encode())
    assert (error.status, error.code, error.param) == (400, "invalid_request", param)


@pytest.mark.parametrize(
    "raw", [b"", b"[]", b'"hi"', b"{", b"\xff\xfe", b'{"temperature": NaN}', b"[" * 100_000]
)
def test_it_refuses_a_body_that_is_not_a_json_object(raw: bytes) -> None:
    error = refusal(raw)
    assert (error.status, error.code) == (400, "invalid_request")


def test_it_refuses_more_messages_than_allowed() -> None:
    messages = [{"role": "user", "content": "hi"}] * 3
    raw = json.dumps({"model": "auto", "messages": messages}).encode()
    assert refusal(raw, max_messages=2).param == "messages"
    assert len(parse_chat_request(raw, max_messages=3).messages) == 3


# --- the OpenAI chat client codec -----------------------------------------------------------


def test_it_picks_the_provider_codec_by_provider_kind() -> None:
    openai = make_route("openai", base_url="https://o.test", upstream_model="m").provider
    anthropic = make_route("anthropic", base_url="https://a.test", upstream_model="m").provider
    assert isinstance(OPENAI_CHAT.provider_codec(openai), OpenAIPassthrough)
    assert isinstance(OPENAI_CHAT.provider_codec(anthropic), Translation)


def test_it_renders_errors_as_openai_does() -> None:
    error = ProxyError(429, "Slow down.", code="rate_limit_exceeded", headers={"Retry-After": "3"})
    response = OPENAI_CHAT.error_response(error)
    assert response.status_code == 429
    assert response["Retry-After"] == "3"
    assert json.loads(response.content) == {
        "error": {
            "message": "Slow down.",
            "type": "rate_limit_exceeded",
            "param": None,
            "code": "rate_limit_exceeded",
        }
    }


def test_it_ends_a_failed_stream_with_an_openai_error_event_and_no_done() -> None:
    event = OPENAI_CHAT.stream_error(ProxyError(502, "It broke off.", code="upstream_error"))
    assert event.startswith(b"data: ")
    assert event.endswith(b"\n\n")
    assert data_of(event) == [
        '{"error":{"message":"It broke off.","type":"upstream_error","param":null,'
        '"code":"upstream_error"}}'
    ]


# --- provider errors ------------------------------------------------------------------------


def test_it_reads_the_message_of_a_provider_error_body() -> None:
    anthropic = b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'
    openai = (
        b'{"error":{"message":"Rate limit reached","type":"requests","param":null,'
        b'"code":"rate_limit_exceeded"}}'
    )
    assert error_message_of(anthropic) == "Overloaded"
    assert error_message_of(openai) == "Rate limit reached"
    assert error_message_of(b'{"error":"model not found"}') == "model not found"
    assert error_message_of(b"<html>502 Bad Gateway</html>") is None
    assert error_message_of(b'{"detail":"nope"}') is None
    assert error_message_of(b"[1, 2]") is None


@pytest.mark.parametrize(
    ("status", "retry_after", "expected"),
    [
        (400, None, (400, "upstream_invalid_request", False, None)),
        (422, None, (422, "upstream_invalid_request", False, None)),
        (401, None, (502, "upstream_auth_failed", True, None)),
        (403, None, (502, "upstream_auth_failed", True, None)),
        (404, None, (502, "upstream_not_found", False, None)),
        (429, "7", (429, "upstream_rate_limited", True, "7")),
        (429, None, (429, "upstream_rate_limited", True, "1")),
        (429, "Wed, 21 Oct 2015 07:28:00 GMT", (429, "upstream_rate_limited", True, "1")),
        (500, None, (502, "upstream_error", True, None)),
        (529, None, (502, "upstream_error", True, None)),
    ],
)
def test_it_turns_a_provider_status_into_the_clients_error(
    status: int, retry_after: str | None, expected: tuple[int, str, bool, str | None]
) -> None:
    error = upstream_error(status=status, message="Why", retry_after=retry_after)
    got = (error.status, error.code, error.transient, error.headers.get("Retry-After"))
    assert got == expected
    if status in (400, 422, 404):
        assert error.message.endswith(": Why")


# --- OpenAI chat -> OpenAI-kind providers: pass-through --------------------------------------


def test_it_forwards_the_body_as_sent_but_for_the_model(openai_route: Route) -> None:
    call = chat(temperature=0.7, user="user-42", seed=7, logit_bias={"50256": -100})
    request = OpenAIPassthrough().build(route=openai_route, call=call, max_tokens=ALLOWANCE)
    assert request.url == "https://api.openai.com/v1/chat/completions"
    assert request.headers == {}
    assert request.payload == {**call.body, "model": "gpt-4o", "max_tokens": ALLOWANCE}
    assert "stream_options" not in request.payload


@pytest.mark.parametrize(
    ("options", "sent"),
    [
        (None, {"include_usage": True}),
        ({"include_usage": False}, {"include_usage": True}),
        ({"include_usage": True}, {"include_usage": True}),
        ({"include_obfuscation": False}, {"include_obfuscation": False, "include_usage": True}),
    ],
)
def test_it_always_asks_for_usage_on_a_stream(
    openai_route: Route, options: dict[str, Any] | None, sent: dict[str, Any]
) -> None:
    call = chat(stream=True) if options is None else chat(stream=True, stream_options=options)
    before = copy.deepcopy(call.body)
    request = OpenAIPassthrough().build(route=openai_route, call=call, max_tokens=ALLOWANCE)
    assert request.payload["stream_options"] == sent
    assert request.payload["stream"] is True
    assert call.body == before  # the call itself is untouched: another route may build again


@pytest.mark.parametrize(
    ("limit", "reserved", "sent"),
    [
        ({}, ALLOWANCE, {"max_tokens": ALLOWANCE}),
        ({"max_tokens": 50}, 50, {"max_tokens": 50}),
        ({"max_completion_tokens": 50}, 50, {"max_completion_tokens": 50}),
        # Two limits: the smaller binds, and the provider gets it in both fields, so one
        # that honours either writes no more than the reservation holds.
        (
            {"max_completion_tokens": 10, "max_tokens": 8000},
            10,
            {"max_completion_tokens": 10, "max_tokens": 10},
        ),
        (
            {"max_completion_tokens": 8000, "max_tokens": 10},
            10,
            {"max_completion_tokens": 10, "max_tokens": 10},
        ),
    ],
)
def test_it_sends_exactly_the_limit_it_reserved(
    openai_route: Route, limit: dict[str, int], reserved: int, sent: dict[str, int]
) -> None:
    call = chat(**limit)
    max_tokens = call.max_tokens or ALLOWANCE  # as the pipeline reserves it
    assert max_tokens == reserved
    request = OpenAIPassthrough().build(route=openai_route, call=call, max_tokens=max_tokens)
    got = {k: v for k, v in request.payload.items() if k in ("max_tokens", "max_completion_tokens")}
    assert got == sent


def test_it_returns_a_completion_as_sent_but_for_the_model_name(openai_route: Route) -> None:
    raw = wire("openai_chat_completion.json")
    body, usage = OpenAIPassthrough().completion(route=openai_route, call=chat(), raw=raw)
    # The tenant's name for the model, never the upstream's ("gpt-4o-2024-08-06").
    assert json.loads(body) == {**json.loads(raw), "model": "auto"}
    assert b"gpt-4o" not in body
    assert (usage.input_tokens, usage.output_tokens, usage.reported) == (24, 11, True)
    assert usage.invalid is False


def test_it_returns_a_completion_byte_for_byte_when_the_names_agree() -> None:
    route = make_route("openai", base_url="https://api.openai.com/v1", upstream_model="auto")
    raw = wire("openai_chat_completion.json").replace(b"gpt-4o-2024-08-06", b"auto")
    body, _ = OpenAIPassthrough().completion(route=route, call=chat(), raw=raw)
    assert body == raw


def test_it_reads_usage_moonshot_puts_inside_the_choice(openai_route: Route) -> None:
    answer = json.loads(wire("openai_chat_completion.json"))
    answer["choices"][0]["usage"] = answer.pop("usage")
    raw = json.dumps(answer).encode()
    _, usage = OpenAIPassthrough().completion(route=openai_route, call=chat(), raw=raw)
    assert (usage.input_tokens, usage.output_tokens, usage.reported) == (24, 11, True)


def test_it_flags_a_completion_that_has_no_usage(openai_route: Route) -> None:
    answer = json.loads(wire("openai_chat_completion.json"))
    del answer["usage"]
    raw = json.dumps(answer).encode()
    _, usage = OpenAIPassthrough().completion(route=openai_route, call=chat(), raw=raw)
    assert (usage.invalid, usage.reported) == (True, False)
    # Its text, estimated as prompts are: what the proxy bills instead.
    content = answer["choices"][0]["message"]["content"]
    assert usage.output_estimate == -(-len(content.encode()) // 3)


@pytest.mark.parametrize(
    "figures",
    [
        {"prompt_tokens": -1, "completion_tokens": 11},
        {"prompt_tokens": 24, "completion_tokens": 10**20},
        {"prompt_tokens": 24.0, "completion_tokens": 11},
        {"prompt_tokens": "24", "completion_tokens": 11},
        {"prompt_tokens": True, "completion_tokens": 11},
        {"prompt_tokens": 24},
        {
            "prompt_tokens": 24,
            "completion_tokens": 11,
            "prompt_tokens_details": {"cached_tokens": -3},
        },
    ],
)
def test_it_flags_impossible_usage_figures(openai_route: Route, figures: dict[str, Any]) -> None:
    answer = json.loads(wire("openai_chat_completion.json"))
    answer["usage"] = figures
    _, usage = OpenAIPassthrough().completion(
        route=openai_route, call=chat(), raw=json.dumps(answer).encode()
    )
    assert (usage.invalid, usage.reported) == (True, False)


def test_it_refuses_a_stream_event_that_is_not_json(openai_route: Route) -> None:
    translator = OpenAIPassthrough().stream(route=openai_route, call=chat(stream=True))
    with pytest.raises(ProxyError) as caught:
        translate(translator, b"data: <html>502 Bad Gateway</html>\n\n")
    assert (caught.value.status, caught.value.code) == (502, "upstream_error")


def test_it_ends_a_stream_on_the_providers_error_event(openai_route: Route) -> None:
    translator = OpenAIPassthrough().stream(route=openai_route, call=chat(stream=True))
    event = b'data: {"error": {"message": "Rate limit reached", "type": "requests"}}\n\n'
    with pytest.raises(ProxyError) as caught:
        translate(translator, event)
    assert caught.value.message == "The provider failed mid-stream: Rate limit reached"
    assert translator.complete is False


@pytest.mark.parametrize("raw", [b"", b"<html>502 Bad Gateway</html>", b'{"choices": ['])
def test_it_refuses_a_malformed_completion_with_a_502(openai_route: Route, raw: bytes) -> None:
    with pytest.raises(ProxyError) as caught:
        OpenAIPassthrough().completion(route=openai_route, call=chat(), raw=raw)
    assert (caught.value.status, caught.value.code) == (502, "upstream_error")


def test_it_strips_the_usage_it_asked_for_from_a_client_that_did_not(openai_route: Route) -> None:
    raw, expected = wire("openai_chat_stream.sse"), wire("openai_chat_stream_without_usage.sse")
    usage_chunk = events_of(raw)[-2].raw
    assert b'"choices":[]' in usage_chunk
    # What the client would have had from OpenAI without include_usage:
    assert raw.replace(usage_chunk, b"").replace(b',"usage":null', b"") == expected
    translator = OpenAIPassthrough().stream(route=openai_route, call=chat(stream=True))
    assert translate(translator, raw) == public(expected)
    assert translator.usage == Usage(input_tokens=24, output_tokens=11, reported=True)
    assert translator.content_deltas == 11
    assert translator.complete is True


def test_it_passes_the_stream_unchanged_to_a_client_that_asked_for_usage(
    openai_route: Route,
) -> None:
    call = chat(stream=True, stream_options={"include_usage": True})
    translator = OpenAIPassthrough().stream(route=openai_route, call=call)
    raw = wire("openai_chat_stream.sse")
    assert translate(translator, raw) == public(raw)
    assert translator.usage == Usage(input_tokens=24, output_tokens=11, reported=True)
    assert translator.content_deltas == 11
    assert translator.complete is True
    deltas = text_deltas(json.loads(data) for data in data_of(raw)[:-1])
    assert "".join(deltas) == ANSWER


@pytest.mark.parametrize("include_usage", [False, True])
def test_it_reads_moonshot_usage_from_the_last_choice_of_a_stream(
    openai_route: Route, include_usage: bool
) -> None:
    call = chat(stream=True, stream_options={"include_usage": include_usage})
    translator = OpenAIPassthrough().stream(route=openai_route, call=call)
    raw = wire("moonshot_chat_stream.sse")
    # Nothing to strip (Moonshot added nothing); only the model is the tenant's.
    assert translate(translator, raw, piece=5) == public(raw)
    assert translator.usage == Usage(input_tokens=21, output_tokens=6, reported=True)
    assert translator.content_deltas == 5
    assert translator.complete is True


def test_it_counts_a_stream_cut_before_done_as_incomplete(openai_route: Route) -> None:
    events = events_of(wire("openai_chat_stream.sse"))
    cut = b"".join(event.raw for event in events[:5])  # the role chunk and four words
    translator = OpenAIPassthrough().stream(route=openai_route, call=chat(stream=True))
    translate(translator, cut)
    assert translator.complete is False
    assert translator.usage == Usage()  # not reported: the proxy bills from content_deltas
    assert translator.content_deltas == 4


def sse_chunks(*chunks: dict[str, Any]) -> bytes:
    return b"".join(b"data: " + json.dumps(chunk).encode() + b"\n\n" for chunk in chunks)


def test_it_counts_reasoning_refusals_and_tool_arguments_of_a_cut_stream(
    openai_route: Route,
) -> None:
    # Cut before the usage chunk, a stream is billed from its content pieces: an answer of
    # reasoning and tool calls only must count as much as one of text.
    def delta(**fields: Any) -> dict[str, Any]:
        return {"id": "c", "choices": [{"index": 0, "delta": fields}]}

    def arguments(piece: str) -> dict[str, Any]:
        return delta(tool_calls=[{"index": 0, "function": {"arguments": piece}}])

    raw = sse_chunks(
        delta(role="assistant", content=None, reasoning_content="Let me think"),
        delta(reasoning="OpenRouter's spelling"),
        delta(refusal="I can't"),
        delta(tool_calls=[{"index": 0, "id": "call_1", "type": "function",
                           "function": {"name": "bash", "arguments": ""}}]),
        *[arguments('{"cmd": "ls"}'[i : i + 4]) for i in range(0, 13, 4)],
        delta(content=""),
        {"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
    )  # fmt: skip
    translator = OpenAIPassthrough().stream(route=openai_route, call=chat(stream=True))
    translate(translator, raw)
    assert translator.content_deltas == 3 + 4
    assert not translator.usage.reported and not translator.complete


@pytest.mark.parametrize(
    "failed",
    [
        # OpenRouter's: the error and the choice it cut short, in one chunk.
        {
            "id": "c",
            "object": "chat.completion.chunk",
            "error": {"code": "server_error", "message": "Provider disconnected"},
            "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}],
        },
        {"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "error"}]},
    ],
)
def test_it_ends_a_stream_whose_chunk_reports_an_error_beside_its_choices(
    openai_route: Route, failed: dict[str, Any]
) -> None:
    translator = OpenAIPassthrough().stream(route=openai_route, call=chat(stream=True))
    start = {"id": "c", "choices": [{"index": 0, "delta": {"content": "Partial ans"}}]}
    with pytest.raises(ProxyError) as caught:
        translate(translator, sse_chunks(start, failed) + b"data: [DONE]\n\n")
    assert (caught.value.status, caught.value.code) == (502, "upstream_error")
    assert caught.value.message.startswith("The provider failed mid-stream")
    assert translator.complete is False and translator.content_deltas == 1
    # An error field that is null is no error.
    fine = OpenAIPassthrough().stream(route=openai_route, call=chat(stream=True))
    translate(fine, sse_chunks({**start, "error": None}))
    assert fine.content_deltas == 1


def test_it_reads_the_tokens_written_to_the_cache(openai_route: Route) -> None:
    answer = json.loads(wire("openai_chat_completion.json"))
    answer["usage"]["prompt_tokens_details"] = {"cached_tokens": 10, "cache_write_tokens": 12}
    raw = json.dumps(answer).encode()
    _, usage = OpenAIPassthrough().completion(route=openai_route, call=chat(), raw=raw)
    assert (usage.input_tokens, usage.cache_read_tokens, usage.cache_write_tokens) == (24, 10, 12)
    assert usage.reported and not usage.invalid
    # More read and written than the prompt had: figures no answer can have.
    answer["usage"]["prompt_tokens_details"] = {"cached_tokens": 10, "cache_write_tokens": 15}
    raw = json.dumps(answer).encode()
    _, usage = OpenAIPassthrough().completion(route=openai_route, call=chat(), raw=raw)
    assert (usage.invalid, usage.reported) == (True, False)


def test_it_passes_keep_alive_comments_on(openai_route: Route) -> None:
    translator = OpenAIPassthrough().stream(route=openai_route, call=chat(stream=True))
    assert translate(translator, b": keep-alive\n\n") == b": keep-alive\n\n"


# --- OpenAI chat -> Anthropic Messages ------------------------------------------------------


def test_it_translates_a_chat_request_into_anthropic_messages(anthropic_route: Route) -> None:
    call = chat(
        messages=[
            {"role": "system", "content": "You are terse."},
            {"role": "developer", "content": [{"type": "text", "text": "Answer in English."}]},
            {"role": "user", "content": QUESTION},
            {"role": "assistant", "content": "Paris."},
            {
                "role": "user",
                "content": [{"type": "text", "text": "And"}, {"type": "text", "text": "Italy?"}],
            },
        ],
        temperature=1.7,
        stop="END",
        user="user-42",
        stream=True,
        stream_options={"include_usage": True},
        max_tokens=300,
    )
    with override_settings(PROXY_ANTHROPIC_VERSION="2023-06-01"):
        request = TO_ANTHROPIC.build(route=anthropic_route, call=call, max_tokens=300)
    assert request.url == "https://api.anthropic.com/v1/messages"
    assert request.headers == {"anthropic-version": "2023-06-01"}
    assert request.payload == {
        "model": "claude-sonnet-4-5",
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": QUESTION}]},
            {"role": "assistant", "content": [{"type": "text", "text": "Paris."}]},
            {
                "role": "user",
                "content": [{"type": "text", "text": "And"}, {"type": "text", "text": "Italy?"}],
            },
        ],
        "max_tokens": 300,
        # Each system or developer message stays its own block, in order.
        "system": [
            {"type": "text", "text": "You are terse."},
            {"type": "text", "text": "Answer in English."},
        ],
        "temperature": 1.0,  # OpenAI's 0..2 clamped to Anthropic's 0..1
        "stop_sequences": ["END"],
        "metadata": {"user_id": "user-42"},
        "stream": True,
    }


def test_it_sends_the_configured_anthropic_version(anthropic_route: Route) -> None:
    request = TO_ANTHROPIC.build(route=anthropic_route, call=chat(), max_tokens=ALLOWANCE)
    assert request.headers == {"anthropic-version": settings.PROXY_ANTHROPIC_VERSION}


@pytest.mark.parametrize(
    ("fields", "sent"),
    [
        ({}, {}),
        ({"temperature": 0}, {"temperature": 0.0}),
        ({"temperature": 0.3}, {"temperature": 0.3}),
        ({"temperature": 2}, {"temperature": 1.0}),
        ({"top_p": 0.9}, {"top_p": 0.9}),
        ({"stop": ["END", "STOP"]}, {"stop_sequences": ["END", "STOP"]}),
        ({"stop": []}, {}),
        ({"n": 1, "logprobs": False, "presence_penalty": 0}, {}),  # defaults: nothing to send
    ],
)
def test_it_translates_the_sampling_options_anthropic_has(
    anthropic_route: Route, fields: dict[str, Any], sent: dict[str, Any]
) -> None:
    request = TO_ANTHROPIC.build(route=anthropic_route, call=chat(**fields), max_tokens=ALLOWANCE)
    assert request.payload == {
        "model": "claude-sonnet-4-5",
        "messages": [{"role": "user", "content": [{"type": "text", "text": QUESTION}]}],
        "max_tokens": ALLOWANCE,
        **sent,
    }


def test_it_never_sends_anthropic_both_temperature_and_top_p(anthropic_route: Route) -> None:
    call = chat(temperature=0.5, top_p=0.9)
    try:
        request = TO_ANTHROPIC.build(route=anthropic_route, call=call, max_tokens=ALLOWANCE)
    except ProxyError as error:  # refusing it up front, naming the fields, would do too
        assert error.status == 400
        return
    assert not {"temperature", "top_p"} <= set(request.payload)


def test_it_never_sends_anthropic_a_whitespace_only_stop_sequence(anthropic_route: Route) -> None:
    call = chat(stop=["\n", "END"])
    try:
        request = TO_ANTHROPIC.build(route=anthropic_route, call=call, max_tokens=ALLOWANCE)
    except ProxyError as error:  # refusing it up front, naming the field, would do too
        assert error.status == 400
        return
    assert all(stop.strip() for stop in request.payload.get("stop_sequences", []))


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"functions": [{"name": "f", "parameters": {}}]}, "functions"),
        ({"function_call": "auto"}, "function_call"),
        ({"audio": {"voice": "alloy", "format": "wav"}}, "audio"),
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"seed": 7}, "seed"),  # Anthropic has no seed: refused, not silently dropped
        ({"presence_penalty": 0.5}, "presence_penalty"),
        ({"zeta": 1}, "zeta"),  # a field the proxy does not know, for a provider that cannot
    ],
)
def test_it_refuses_what_anthropic_cannot_do_naming_the_field(
    anthropic_route: Route, fields: dict[str, Any], param: str
) -> None:
    with pytest.raises(ProxyError) as caught:
        TO_ANTHROPIC.build(route=anthropic_route, call=chat(**fields), max_tokens=ALLOWANCE)
    assert (caught.value.status, caught.value.code) == (400, "unsupported_for_provider")
    assert caught.value.param == param and f"`{param}`" in caught.value.message


def test_it_refuses_a_tool_result_that_answers_no_call(anthropic_route: Route) -> None:
    call = chat(messages=[{"role": "tool", "tool_call_id": "call_1", "content": "Paris"}])
    with pytest.raises(ProxyError) as caught:
        TO_ANTHROPIC.build(route=anthropic_route, call=call, max_tokens=ALLOWANCE)
    assert caught.value.status == 400


def test_it_needs_a_user_or_assistant_message(anthropic_route: Route) -> None:
    call = chat(messages=[{"role": "system", "content": "You are terse."}])
    with pytest.raises(ProxyError) as caught:
        TO_ANTHROPIC.build(route=anthropic_route, call=call, max_tokens=ALLOWANCE)
    assert (caught.value.status, caught.value.code) == (400, "invalid_request")


def test_it_answers_an_anthropic_message_as_a_chat_completion(anthropic_route: Route) -> None:
    raw = wire("anthropic_message.json")
    body, usage = TO_ANTHROPIC.completion(route=anthropic_route, call=chat(), raw=raw)
    completion = ChatCompletion.model_validate_json(body)
    assert completion.id == "chatcmpl-msg_01HqV3xNf7Kd2WbYc9TzR8Lm"
    assert completion.object == "chat.completion"
    assert completion.model == "auto"  # the tenant's name, never the upstream's
    assert len(completion.choices) == 1
    choice = completion.choices[0]
    assert (choice.index, choice.finish_reason) == (0, "stop")
    assert (choice.message.role, choice.message.content) == ("assistant", ANSWER)
    # Every prompt token is billed, cached ones included: 21 + 188 written + 1536 read.
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == 1745
    assert completion.usage.completion_tokens == 16
    assert completion.usage.total_tokens == 1761
    assert completion.usage.prompt_tokens_details is not None
    assert completion.usage.prompt_tokens_details.cached_tokens == 1536
    assert usage == Usage(
        input_tokens=1745,
        output_tokens=16,
        cache_read_tokens=1536,
        cache_write_tokens=188,
        reported=True,
        output_estimate=-(-len(ANSWER.encode()) // 3),
    )


@pytest.mark.parametrize(
    ("stop_reason", "finish_reason"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("pause_turn", "stop"),
        ("max_tokens", "length"),
        ("model_context_window_exceeded", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        (None, "stop"),
    ],
)
def test_it_maps_stop_reasons_to_finish_reasons(
    anthropic_route: Route, stop_reason: str | None, finish_reason: str
) -> None:
    message = json.loads(wire("anthropic_message.json"))
    message["stop_reason"] = stop_reason
    raw = json.dumps(message).encode()
    body, _ = TO_ANTHROPIC.completion(route=anthropic_route, call=chat(), raw=raw)
    assert ChatCompletion.model_validate_json(body).choices[0].finish_reason == finish_reason


def test_it_flags_an_anthropic_answer_that_has_no_usage(
    anthropic_route: Route,
) -> None:
    message = json.loads(wire("anthropic_message.json"))
    del message["usage"]
    raw = json.dumps(message).encode()
    _, usage = TO_ANTHROPIC.completion(route=anthropic_route, call=chat(), raw=raw)
    assert (usage.invalid, usage.reported) == (True, False)
    assert usage.output_estimate > 0


@pytest.mark.parametrize(
    "raw", [b"", b"<html>529</html>", b"[]", b"{}", b'{"content": null}', b'{"usage": 3}']
)
def test_it_refuses_a_malformed_anthropic_answer_with_a_502(
    anthropic_route: Route, raw: bytes
) -> None:
    with pytest.raises(ProxyError) as caught:
        TO_ANTHROPIC.completion(route=anthropic_route, call=chat(), raw=raw)
    assert (caught.value.status, caught.value.code) == (502, "upstream_error")


def test_it_streams_an_anthropic_answer_as_chat_completion_chunks(
    anthropic_route: Route,
) -> None:
    translator = TO_ANTHROPIC.stream(route=anthropic_route, call=chat(stream=True))
    chunks = chunks_of(translate(translator, wire("anthropic_stream.sse")))
    assert {chunk["id"] for chunk in chunks} == {"chatcmpl-msg_01Sd8QwXe4Rt6YuJk2NbVc7P"}
    assert {chunk["model"] for chunk in chunks} == {"auto"}  # the tenant's name
    assert len({chunk["created"] for chunk in chunks}) == 1
    assert all("usage" not in chunk for chunk in chunks)  # the client did not ask for it
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert text_deltas(chunks) == [
        "The capital",
        " of France is",
        " Paris \u2014 la Ville Lumi\u00e8re.",
    ]
    assert [chunk["choices"][0]["finish_reason"] for chunk in chunks] == [None] * 4 + ["stop"]
    assert chunks[-1]["choices"][0]["delta"] == {}
    assert translator.complete is True
    assert translator.usage == Usage(
        input_tokens=1745,
        output_tokens=16,
        cache_read_tokens=1536,
        cache_write_tokens=188,
        reported=True,
    )
    assert translator.content_deltas == 3


def test_it_adds_the_usage_chunk_when_the_client_asks(anthropic_route: Route) -> None:
    call = chat(stream=True, stream_options={"include_usage": True})
    translator = TO_ANTHROPIC.stream(route=anthropic_route, call=call)
    chunks = chunks_of(translate(translator, wire("anthropic_stream.sse"), piece=3))
    *answer, usage = chunks
    assert all(chunk["usage"] is None for chunk in answer)  # as OpenAI sends them
    assert "".join(text_deltas(answer)) == ANSWER
    assert usage["choices"] == []
    assert usage["usage"] == {
        "prompt_tokens": 1745,
        "completion_tokens": 16,
        "total_tokens": 1761,
        # Anthropic's cache_creation_input_tokens, in the openai SDK's field for them.
        "prompt_tokens_details": {"cached_tokens": 1536, "cache_write_tokens": 188},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }
    assert translator.complete is True
    assert translator.usage == Usage(
        input_tokens=1745,
        output_tokens=16,
        cache_read_tokens=1536,
        cache_write_tokens=188,
        reported=True,
    )


@pytest.mark.parametrize(
    ("stop_reason", "finish_reason"),
    [("max_tokens", "length"), ("stop_sequence", "stop"), ("refusal", "content_filter")],
)
def test_it_streams_the_finish_reason_of_the_stop_reason(
    anthropic_route: Route, stop_reason: str, finish_reason: str
) -> None:
    raw = wire("anthropic_stream.sse").replace(
        b'"stop_reason":"end_turn"', b'"stop_reason":"' + stop_reason.encode() + b'"'
    )
    translator = TO_ANTHROPIC.stream(route=anthropic_route, call=chat(stream=True))
    chunks = chunks_of(translate(translator, raw))
    assert chunks[-1]["choices"][0]["finish_reason"] == finish_reason


def test_it_translates_the_same_however_the_stream_is_cut(anthropic_route: Route) -> None:
    def chunks(piece: int) -> list[dict[str, Any]]:
        translator = TO_ANTHROPIC.stream(route=anthropic_route, call=chat(stream=True))
        out = chunks_of(translate(translator, wire("anthropic_stream.sse"), piece=piece))
        return [{k: v for k, v in chunk.items() if k != "created"} for chunk in out]

    whole = chunks(1 << 20)
    for piece in (1, 2, 7, 100):
        assert chunks(piece) == whole


def test_it_ends_an_overloaded_stream_as_failed(anthropic_route: Route) -> None:
    call = chat(stream=True, stream_options={"include_usage": True})
    translator = TO_ANTHROPIC.stream(route=anthropic_route, call=call)
    out = b""
    with pytest.raises(ProxyError) as caught:
        for event in events_of(wire("anthropic_stream_overloaded.sse")):
            out += translator.feed(event)
    chunks = [json.loads(data) for data in data_of(out)]
    for chunk in chunks:
        ChatCompletionChunk.model_validate(chunk)
    assert text_deltas(chunks) == ["The capital", " of France"]
    # The pipeline ends the stream with this as its one error event (tests/test_secrets.py).
    failure = caught.value
    assert (failure.status, failure.code) == (502, "upstream_error")
    assert failure.message == "The provider failed mid-stream: Overloaded"
    assert translator.complete is False  # no message_stop: the stream broke off
    assert translator.usage.reported is False  # the proxy bills from content_deltas
    assert translator.usage.input_tokens == 1745  # message_start's count stands
    assert translator.content_deltas == 2


def test_it_sends_nothing_for_anthropic_events_openai_has_no_counterpart_for(
    anthropic_route: Route,
) -> None:
    translator = TO_ANTHROPIC.stream(route=anthropic_route, call=chat(stream=True))
    sent = {
        event.event: translator.feed(event) for event in events_of(wire("anthropic_stream.sse"))
    }
    # message_start waits for the first block (the role chunk says whether text or a tool
    # call comes), ping and a block's end have no OpenAI counterpart.
    assert sent["message_start"] == sent["ping"] == sent["content_block_stop"] == b""
    assert sent["content_block_start"].startswith(b"data: ")
    assert translator.feed(SSEEvent(b": keep-alive\n\n", None, None)) == b""
