"""The Anthropic Messages codecs: parsing, the client side and the provider side.

No server and no database: requests and provider answers as bytes (tests/fixtures/wire/
anthropic/, see its README), internal values built by hand, and what comes out checked by
the official `anthropic` SDK (its types, and its own stream accumulator) as well as by value.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import Message as SDKMessage
from anthropic.types import RawMessageStreamEvent
from django.conf import settings
from pydantic import TypeAdapter

from core.errors import ProxyError
from routing.codecs.anthropic_messages import (
    MessagesRequest,
    parse_count_tokens_request,
    parse_messages_request,
)
from routing.codecs.base import Call, Usage
from routing.codecs.messages_client import MESSAGES_CLIENT, RAW_ARGUMENTS_KEY
from routing.codecs.messages_provider import MESSAGES_PROVIDER
from routing.codecs.model import (
    Answer,
    BlockDelta,
    BlockStart,
    BlockStop,
    ClientSide,
    End,
    Event,
    Finish,
    Image,
    InternalCall,
    Message,
    ProviderSide,
    Reasoning,
    RedactedThinking,
    ResponseFormat,
    Sampling,
    Start,
    StreamDecoder,
    StreamEncoder,
    Text,
    Thinking,
    Tool,
    ToolChoice,
    ToolResult,
    ToolUse,
)
from routing.context import Route
from routing.sse import SSEParser
from tests.support.routes import make_route

pytestmark = pytest.mark.core

WIRE = Path(__file__).parent / "fixtures" / "wire" / "anthropic"
STREAM_EVENT: TypeAdapter[RawMessageStreamEvent] = TypeAdapter(RawMessageStreamEvent)


def wire(name: str) -> bytes:
    return (WIRE / name).read_bytes()


@pytest.fixture(scope="module")
def route() -> Route:
    return make_route(
        "anthropic", base_url="https://api.anthropic.com", upstream_model="claude-sonnet-4-5"
    )


def body(**fields: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": "Hello"}],
    }
    out.update(fields)
    return out


def parse(fields: dict[str, Any], *, headers: dict[str, str] | None = None) -> MessagesRequest:
    return parse_messages_request(
        json.dumps(fields).encode(), headers=headers or {}, max_messages=10
    )


def refused(fields: dict[str, Any]) -> ProxyError:
    with pytest.raises(ProxyError) as caught:
        parse(fields)
    assert caught.value.status == 400
    assert caught.value.code == "invalid_request"
    return caught.value


def decode(**fields: Any) -> InternalCall:
    return MESSAGES_CLIENT.decode(parse(body(**fields)))


def decode_refusal(**fields: Any) -> ProxyError:
    with pytest.raises(ProxyError) as caught:
        decode(**fields)
    assert caught.value.status == 400
    return caught.value


def sse_events(raw: bytes) -> list[tuple[str | None, dict[str, Any]]]:
    parser = SSEParser()
    events = parser.feed(raw)
    assert b"".join(event.raw for event in events) == raw  # nothing left over
    out = []
    for event in events:
        assert event.data is not None
        out.append((event.event, json.loads(event.data)))
    return out


def test_it_implements_both_halves_of_a_translation(route: Route) -> None:
    # mypy checks the protocols; the run checks the objects are what the registry expects.
    client: ClientSide = MESSAGES_CLIENT
    provider: ProviderSide = MESSAGES_PROVIDER
    encoder: StreamEncoder = client.encoder(call=parse(body()), model="m")
    decoder: StreamDecoder = provider.decoder(call=call_of())
    assert (decoder.content_deltas, decoder.complete, decoder.usage) == (0, False, Usage())
    assert encoder.feed(Start("x")).startswith(b"event: message_start\n")


# --- parsing ----------------------------------------------------------------------------


def test_it_parses_a_request_as_claude_code_sends_it() -> None:
    recorded = json.loads(wire("claude_code_request.json"))
    call = parse_messages_request(
        json.dumps(recorded["body"]).encode(), headers=recorded["headers"], max_messages=100
    )
    checked: Call = call  # the journey's protocol
    assert (checked.model, checked.stream, checked.max_tokens, checked.completions) == (
        "claude-sonnet-4-6",
        True,
        32000,
        1,
    )
    assert call.betas == (
        "claude-code-20250219",
        "interleaved-thinking-2025-05-14",
        "context-management-2025-06-27",
        "prompt-caching-scope-2026-01-05",
        "effort-2025-11-24",
    )
    assert call.version == "2023-06-01"
    assert call.body == recorded["body"]


def test_it_reads_the_headers_whatever_their_case() -> None:
    call = parse(body(), headers={"Anthropic-Beta": " a-1 , ,b-2", "ANTHROPIC-VERSION": "v"})
    assert (call.betas, call.version) == (("a-1", "b-2"), "v")
    assert parse(body()).betas == ()
    assert parse(body()).version is None


def test_it_keeps_unknown_fields_and_block_types() -> None:
    sent = body(
        brand_new_field={"x": 1},
        messages=[{"role": "user", "content": [{"type": "hologram", "data": "..."}]}],
    )
    call = parse(sent)
    assert call.body == sent
    assert call.messages[0]["content"][0]["type"] == "hologram"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"model": None}, "model: Field required"),
        ({"model": " "}, "model: Input should be a non-empty string"),
        ({"max_tokens": None}, "max_tokens: Field required"),
        ({"max_tokens": "1"}, "max_tokens: Input should be a valid integer"),
        ({"max_tokens": True}, "max_tokens: Input should be a valid integer"),
        ({"max_tokens": 0}, "max_tokens: Input should be greater than or equal to 1"),
        ({"max_tokens": 10**8}, "max_tokens: Input should be less than or equal to 10000000"),
        ({"messages": None}, "messages: Field required"),
        ({"messages": {"role": "user"}}, "messages: Input should be a valid list"),
        ({"messages": []}, "messages: List should have at least 1 item after validation, not 0"),
        (
            {"messages": [{"role": "user", "content": "x"}] * 11},
            "messages: List should have at most 10 items after validation, not 11",
        ),
        ({"messages": ["hi"]}, "messages.0: Input should be a valid dictionary"),
        (
            {"messages": [{"role": "system", "content": "x"}]},
            "messages.0.role: Input should be 'user' or 'assistant'",
        ),
        ({"messages": [{"role": "user"}]}, "messages.0.content: Field required"),
        (
            {"messages": [{"role": "user", "content": 3}]},
            "messages.0.content: Input should be a valid string or a list of content blocks",
        ),
        (
            {"messages": [{"role": "user", "content": ["x"]}]},
            "messages.0.content.0: Input should be a valid dictionary",
        ),
        (
            {"messages": [{"role": "user", "content": [{"text": "x"}]}]},
            "messages.0.content.0.type: Field required",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": 1}]}]},
            "messages.0.content.0.type: Input should be a valid string",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "text"}]}]},
            "messages.0.content.0.text: Input should be a valid string",
        ),
        ({"stream": "yes"}, "stream: Input should be a valid boolean"),
        ({"system": 1}, "system: Input should be a valid string or a list of text blocks"),
        ({"system": [{"type": "image"}]}, "system.0.type: Input should be 'text'"),
        ({"system": [{"type": "text"}]}, "system.0.text: Input should be a valid string"),
        ({"temperature": 1.5}, "temperature: Input should be less than or equal to 1"),
        ({"temperature": -1}, "temperature: Input should be greater than or equal to 0"),
        ({"temperature": "hot"}, "temperature: Input should be a valid number"),
        ({"top_p": 2}, "top_p: Input should be less than or equal to 1"),
        ({"top_k": 1.5}, "top_k: Input should be a valid integer"),
        ({"top_k": -1}, "top_k: Input should be greater than or equal to 0"),
        ({"stop_sequences": "END"}, "stop_sequences: Input should be a valid list"),
        ({"stop_sequences": [1]}, "stop_sequences.0: Input should be a valid string"),
        ({"tools": {}}, "tools: Input should be a valid list"),
        ({"tools": ["Bash"]}, "tools.0: Input should be a valid dictionary"),
        ({"tool_choice": "auto"}, "tool_choice: Input should be a valid dictionary"),
        ({"metadata": "u"}, "metadata: Input should be a valid dictionary"),
        ({"thinking": True}, "thinking: Input should be a valid dictionary"),
    ],
)
def test_it_refuses_what_anthropic_refuses_in_its_words(
    fields: dict[str, Any], message: str
) -> None:
    sent = body(**fields)
    for name, value in fields.items():
        if value is None:
            del sent[name]
    error = refused(sent)
    assert error.message == message
    assert error.param == message.split(":")[0]


def test_it_refuses_a_body_that_is_not_json() -> None:
    with pytest.raises(ProxyError) as caught:
        parse_messages_request(b"{", headers={}, max_messages=10)
    assert caught.value.status == 400


def test_it_parses_a_count_tokens_request_without_max_tokens() -> None:
    sent = {"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "Hi"}]}
    call = parse_count_tokens_request(
        json.dumps(sent).encode(), headers={"anthropic-beta": "token-counting-2024-11-01"}
    )
    assert (call.max_tokens, call.stream, call.betas) == (
        None,
        False,
        ("token-counting-2024-11-01",),
    )
    with pytest.raises(ProxyError) as caught:
        parse_count_tokens_request(b'{"model": "m", "messages": []}', headers={})
    assert caught.value.message.startswith("messages: List should have at least 1 item")


# --- the client side: decode ---------------------------------------------------------------


def test_it_decodes_a_claude_code_turn() -> None:
    recorded = json.loads(wire("claude_code_request.json"))
    call = MESSAGES_CLIENT.decode(
        parse_messages_request(
            json.dumps(recorded["body"]).encode(), headers=recorded["headers"], max_messages=100
        )
    )
    ephemeral = {"type": "ephemeral"}
    assert [(t.text[:20], t.cache_control) for t in call.system] == [
        ("x-anthropic-billing-", None),
        ("You are a Claude age", ephemeral),
        ("\nYou are an interact", ephemeral),
    ]
    assert [m.role for m in call.messages] == ["user", "assistant", "user"]
    thinking, tool_use = call.messages[1].parts
    assert thinking == Thinking(
        "I should run the command with Bash.",
        recorded["body"]["messages"][1]["content"][0]["signature"],
    )
    assert tool_use == ToolUse(
        "toolu_01",
        "Bash",
        '{"command":"echo $((6*7))-$(printf proxy)","description":"compute"}',
    )
    assert call.messages[2].parts == [
        ToolResult("toolu_01", [Text("42-proxy")], is_error=False, cache_control=ephemeral)
    ]
    assert [tool.name for tool in call.tools] == ["Bash", "Read"]
    assert call.tools[0].parameters == recorded["body"]["tools"][0]["input_schema"]
    assert call.user == recorded["body"]["metadata"]["user_id"]
    assert call.reasoning == Reasoning(effort="high", budget_tokens=None, enabled=True)
    assert (call.max_tokens, call.stream, call.model) == (32000, True, "claude-sonnet-4-6")


def test_it_decodes_every_content_block() -> None:
    call = decode(
        system="Be brief.",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Look", "cache_control": {"type": "ephemeral"}},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"},
                    },
                    {"type": "image", "source": {"type": "url", "url": "https://x/cat.jpg"}},
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "redacted_thinking", "data": "EmwKAhgB"},
                    {"type": "tool_use", "id": "t1", "name": "f", "input": {"a": "é", "b": [1]}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "t1",
                        "is_error": True,
                        "content": [
                            {"type": "text", "text": "failed"},
                            {
                                "type": "image",
                                "source": {
                                    "type": "base64",
                                    "media_type": "image/gif",
                                    "data": "R0",
                                },
                            },
                        ],
                    },
                    {"type": "tool_result", "tool_use_id": "t2"},
                ],
            },
        ],
    )
    assert call.system == [Text("Be brief.")]
    assert call.messages == [
        Message(
            "user",
            [
                Text("Look", cache_control={"type": "ephemeral"}),
                Image(media_type="image/png", data="iVBO"),
                Image(url="https://x/cat.jpg"),
            ],
        ),
        Message(
            "assistant", [RedactedThinking("EmwKAhgB"), ToolUse("t1", "f", '{"a":"é","b":[1]}')]
        ),
        Message(
            "user",
            [
                ToolResult(
                    "t1", [Text("failed"), Image(media_type="image/gif", data="R0")], is_error=True
                ),
                ToolResult("t2", []),
            ],
        ),
    ]


@pytest.mark.parametrize(
    ("block", "param"),
    [
        ({"type": "document", "source": {}}, "messages[0].content[1]"),
        ({"type": "search_result", "source": "s", "title": "t"}, "messages[0].content[1]"),
        ({"type": "container_upload", "file_id": "f"}, "messages[0].content[1]"),
        ({"type": "image", "source": {"type": "file", "file_id": "f"}}, "messages[0].content[1]"),
        (
            {"type": "tool_result", "tool_use_id": "t", "content": [{"type": "document"}]},
            "messages[0].content[1].content[0]",
        ),
    ],
)
def test_it_refuses_blocks_an_openai_provider_cannot_take(
    block: dict[str, Any], param: str
) -> None:
    content = [{"type": "text", "text": "Read this"}, block]
    error = decode_refusal(messages=[{"role": "user", "content": content}])
    assert (error.code, error.param) == ("unsupported_for_provider", param)
    assert param in error.message
    kind = block["source"]["type"] if block["type"] == "image" else block["type"]
    if block["type"] == "tool_result":
        kind = "document"
    assert f"`{kind}`" in error.message


def test_it_refuses_tool_blocks_in_the_wrong_role() -> None:
    tool_use = {"type": "tool_use", "id": "t", "name": "f", "input": {}}
    error = decode_refusal(messages=[{"role": "user", "content": [tool_use]}])
    assert error.param == "messages[0].content[0]"
    result = {"type": "tool_result", "tool_use_id": "t"}
    error = decode_refusal(messages=[{"role": "assistant", "content": [result]}])
    assert error.param == "messages[0].content[0]"


def test_it_decodes_tools_and_tool_choice() -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    call = decode(
        tools=[
            {"name": "a", "input_schema": schema, "cache_control": {"type": "ephemeral"}},
            {
                "type": "custom",
                "name": "b",
                "description": "B",
                "input_schema": schema,
                "strict": True,
            },
        ],
        tool_choice={"type": "any", "disable_parallel_tool_use": True},
    )
    assert call.tools == [
        Tool("a", None, schema, cache_control={"type": "ephemeral"}),
        Tool("b", "B", schema, strict=True),
    ]
    assert (call.tool_choice, call.parallel_tool_calls) == (ToolChoice("required"), False)
    for sent, expected in [
        ({"type": "auto"}, ToolChoice("auto")),
        ({"type": "none"}, ToolChoice("none")),
        ({"type": "tool", "name": "b"}, ToolChoice("tool", "b")),
    ]:
        call = decode(tools=[{"name": "b", "input_schema": schema}], tool_choice=sent)
        assert (call.tool_choice, call.parallel_tool_calls) == (expected, None)
    assert decode(tools=[]).tools == []
    assert decode_refusal(tool_choice={"type": "tool"}).param == "tool_choice"
    assert decode_refusal(tool_choice={"type": "maybe"}).param == "tool_choice"


@pytest.mark.parametrize(
    "tool",
    [
        {"type": "web_search_20250305", "name": "web_search", "max_uses": 5},
        {"type": "bash_20250124", "name": "bash"},
        {"type": "text_editor_20250728", "name": "str_replace_based_edit_tool"},
        {"type": "code_execution_20250825", "name": "code_execution"},
        {"type": "computer_20250124", "name": "computer", "display_width_px": 1024},
    ],
)
def test_it_refuses_anthropic_server_tools_by_name(tool: dict[str, Any]) -> None:
    schema = {"type": "object"}
    error = decode_refusal(tools=[{"name": "mine", "input_schema": schema}, tool])
    assert (error.code, error.param) == ("unsupported_for_provider", "tools[1]")
    assert tool["type"] in error.message


def test_it_refuses_tools_it_cannot_carry() -> None:
    assert decode_refusal(tools=[{"name": "x"}]).param == "tools[0]"
    deferred = {"name": "x", "input_schema": {"type": "object"}, "defer_loading": True}
    assert decode_refusal(tools=[deferred]).param == "tools[0]"
    odd = {"name": "x", "input_schema": {"type": "object"}, "brand_new": 1}
    assert decode_refusal(tools=[odd]).param == "tools[0].brand_new"


def test_it_decodes_sampling_limits_and_the_user() -> None:
    call = decode(
        temperature=0.3,
        top_p=0.9,
        top_k=40,
        stop_sequences=["END", "\n\nHuman:"],
        metadata={"user_id": "u-1"},
        max_tokens=77,
    )
    assert call.sampling == Sampling(
        temperature=0.3, top_p=0.9, top_k=40, stop=["END", "\n\nHuman:"]
    )
    assert (call.user, call.max_tokens, call.stream) == ("u-1", 77, False)
    assert decode().sampling == Sampling()


@pytest.mark.parametrize(
    ("thinking", "effort", "expected"),
    [
        ({"type": "enabled", "budget_tokens": 2048}, None, Reasoning(budget_tokens=2048)),
        ({"type": "adaptive", "display": "omitted"}, None, Reasoning()),
        ({"type": "disabled"}, None, Reasoning(enabled=False)),
        (None, "medium", Reasoning(effort="medium")),
        (None, "max", Reasoning(effort="high")),
        ({"type": "adaptive"}, "low", Reasoning(effort="low")),
    ],
)
def test_it_decodes_thinking_and_effort(
    thinking: dict[str, Any] | None, effort: str | None, expected: Reasoning
) -> None:
    fields: dict[str, Any] = {}
    if thinking is not None:
        fields["thinking"] = thinking
    if effort is not None:
        fields["output_config"] = {"effort": effort}
    assert decode(**fields).reasoning == expected


def test_it_refuses_thinking_it_cannot_read() -> None:
    assert decode_refusal(thinking={"type": "enabled", "budget_tokens": 10}).param == "thinking"
    assert decode_refusal(thinking={"type": "sometimes"}).param == "thinking"
    assert decode_refusal(output_config={"effort": "extreme"}).param == "output_config.effort"


def test_it_decodes_a_json_schema_output_format() -> None:
    schema = {"type": "object", "properties": {"title": {"type": "string"}}, "required": ["title"]}
    expected = ResponseFormat(kind="json_schema", schema=schema, strict=True)
    fmt = {"type": "json_schema", "schema": schema}
    assert decode(output_config={"format": fmt}).response_format == expected
    assert decode(output_format=fmt).response_format == expected  # the beta's spelling
    assert decode_refusal(output_config={"format": {"type": "xml"}}).param == "output_config.format"
    error = decode_refusal(output_config={"task_budget": 1})
    assert (error.code, error.param) == ("unsupported_for_provider", "output_config.task_budget")


def test_it_drops_only_the_documented_hints() -> None:
    call = decode(
        context_management={"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        cache_control={"type": "ephemeral"},
        service_tier="auto",
        speed="fast",
        diagnostics={"cache": True},
    )
    assert call == decode()
    for name, value in [
        ("container", "cntr_1"),
        ("mcp_servers", [{"type": "url", "url": "https://mcp", "name": "m"}]),
        ("inference_geo", "us"),
        ("brand_new_field", 1),
    ]:
        error = decode_refusal(**{name: value})
        assert (error.code, error.param) == ("unsupported_for_provider", name)
        assert f"`{name}`" in error.message


# --- the client side: answers ----------------------------------------------------------------


def answer(**fields: Any) -> Answer:
    values: dict[str, Any] = {
        "id": "chatcmpl-abc",
        "parts": [Text("Hello")],
        "stop_reason": "end_turn",
        "usage": Usage(input_tokens=1000, output_tokens=50, cache_read_tokens=600, reported=True),
    }
    values.update(fields)
    return Answer(**values)


def encoded(ans: Answer) -> dict[str, Any]:
    raw = MESSAGES_CLIENT.encode_answer(ans, call=parse(body()), model="claude-public")
    SDKMessage.model_validate_json(raw)
    result: dict[str, Any] = json.loads(raw)
    return result


def test_it_encodes_an_answer_as_an_anthropic_message() -> None:
    out = encoded(
        answer(
            parts=[
                Thinking("hmm", "sig"),
                Thinking("unsigned"),
                RedactedThinking("xyz"),
                Text("Calling."),
                ToolUse("call_1", "get_weather", '{"city": "Paris"}'),
                ToolUse("call_2", "now", ""),
            ],
            stop_reason="tool_use",
            usage=Usage(
                input_tokens=1000,
                output_tokens=50,
                cache_read_tokens=600,
                cache_write_tokens=100,
                reported=True,
            ),
        )
    )
    assert out == {
        "model": "claude-public",
        "id": "msg_chatcmpl-abc",
        "type": "message",
        "role": "assistant",
        "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "sig"},
            {"type": "thinking", "thinking": "unsigned", "signature": ""},
            {"type": "redacted_thinking", "data": "xyz"},
            {"type": "text", "text": "Calling."},
            {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "call_2", "name": "now", "input": {}},
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 300,
            "cache_creation_input_tokens": 100,
            "cache_read_input_tokens": 600,
            "output_tokens": 50,
        },
    }


def test_it_keeps_an_id_that_is_already_anthropic_s() -> None:
    assert encoded(answer(id="msg_01X"))["id"] == "msg_01X"


def test_it_never_reports_negative_input_tokens() -> None:
    usage = Usage(input_tokens=10, output_tokens=1, cache_read_tokens=50)
    assert encoded(answer(usage=usage))["usage"]["input_tokens"] == 0


def test_it_encodes_a_stop_sequence() -> None:
    out = encoded(answer(stop_reason="stop_sequence", stop_sequence="END"))
    assert (out["stop_reason"], out["stop_sequence"]) == ("stop_sequence", "END")


@pytest.mark.parametrize("arguments", ['{"city": "Par', "[1, 2]", '"text"', "null"])
def test_it_keeps_broken_tool_arguments_visible_rather_than_empty(arguments: str) -> None:
    out = encoded(answer(parts=[ToolUse("c", "f", arguments)], stop_reason="tool_use"))
    assert out["content"][0]["input"] == {RAW_ARGUMENTS_KEY: arguments}


def test_it_reports_reasoning_tokens_as_thinking_tokens() -> None:
    usage = Usage(input_tokens=10, output_tokens=50, reasoning_tokens=32, reported=True)
    out = encoded(answer(usage=usage))
    assert out["usage"]["output_tokens_details"] == {"thinking_tokens": 32}
    message = SDKMessage.model_validate(out)
    assert message.usage.output_tokens_details is not None
    assert message.usage.output_tokens_details.thinking_tokens == 32
    assert "output_tokens_details" not in encoded(answer())["usage"]  # none: as Anthropic


# --- the client side: streams --------------------------------------------------------------


def encode_stream(events: list[Event], *, model: str = "claude-public") -> bytes:
    encoder = MESSAGES_CLIENT.encoder(call=parse(body(stream=True)), model=model)
    return b"".join(encoder.feed(event) for event in events)


def accumulate(raw: bytes) -> SDKMessage:
    """The final Message as the anthropic SDK's own stream accumulator builds it."""
    snapshot = None
    json_bufs: dict[int, bytes] = {}
    for name, payload in sse_events(raw):
        assert payload["type"] == name  # Anthropic names every event twice
        if name == "ping":
            continue
        event = STREAM_EVENT.validate_python(payload)
        snapshot = accumulate_event(event=event, current_snapshot=snapshot, json_bufs=json_bufs)
    assert snapshot is not None
    return SDKMessage.model_validate(snapshot.model_dump())


STREAM_USAGE = Usage(
    input_tokens=11676,
    output_tokens=187,
    cache_read_tokens=9216,
    cache_write_tokens=2048,
    reported=True,
)


def interleaved_events() -> list[Event]:
    """An OpenAI-style turn: text, then two tool calls whose argument deltas interleave."""
    return [
        Start("chatcmpl-9x", usage=Usage(input_tokens=11676, cache_read_tokens=9216)),
        BlockStart(0, Thinking("")),
        BlockDelta(0, "thinking", "Two cities."),
        BlockDelta(0, "signature", "sig-1"),
        BlockStop(0),
        BlockStart(1, Text("")),
        BlockDelta(1, "text", "Checking"),
        BlockDelta(1, "text", " both."),
        BlockStart(2, ToolUse("call_a", "get_weather", "")),
        BlockDelta(2, "arguments", '{"city":'),
        BlockStart(3, ToolUse("call_b", "get_weather", "")),
        BlockDelta(3, "arguments", '{"city":"Tōkyō"}'),
        BlockDelta(2, "arguments", '"Paris"}'),
        BlockDelta(1, "text", " Done."),
        BlockStop(3),
        BlockStop(1),
        BlockStop(2),
        Finish("tool_use"),
        End(STREAM_USAGE),
    ]


def test_it_streams_what_the_sdk_accumulates_into_the_same_message() -> None:
    raw = encode_stream(interleaved_events())
    message = accumulate(raw)
    assert message.id == "msg_chatcmpl-9x"
    assert message.model == "claude-public"
    assert [block.model_dump(exclude_none=True) for block in message.content] == [
        {"type": "thinking", "thinking": "Two cities.", "signature": "sig-1"},
        {"type": "text", "text": "Checking both. Done."},
        {"type": "tool_use", "id": "call_a", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "call_b", "name": "get_weather", "input": {"city": "Tōkyō"}},
    ]
    assert (message.stop_reason, message.stop_sequence) == ("tool_use", None)
    usage = message.usage
    assert (
        usage.input_tokens,
        usage.cache_creation_input_tokens,
        usage.cache_read_input_tokens,
        usage.output_tokens,
    ) == (412, 2048, 9216, 187)


def test_it_streams_events_in_anthropic_s_order_and_framing() -> None:
    raw = encode_stream(interleaved_events())
    assert raw.startswith(b"event: message_start\ndata: {")
    events = sse_events(raw)
    names = [name for name, _ in events]
    assert names[:2] == ["message_start", "ping"]
    assert names[-2:] == ["message_delta", "message_stop"]
    # One block at a time, indexes in order: every start is followed by its own stop
    # before the next starts.
    opened: list[int] = []
    current = None
    for name, payload in events:
        if name == "content_block_start":
            assert current is None
            current = payload["index"]
            opened.append(current)
        elif name == "content_block_delta":
            assert payload["index"] == current
        elif name == "content_block_stop":
            assert payload["index"] == current
            current = None
    assert opened == [0, 1, 2, 3]
    start = events[0][1]["message"]
    assert start["content"] == []
    assert start["usage"] == {
        "input_tokens": 2460,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 9216,
        "output_tokens": 1,
    }
    delta = events[-2][1]
    assert delta["usage"] == {
        "input_tokens": 412,
        "cache_creation_input_tokens": 2048,
        "cache_read_input_tokens": 9216,
        "output_tokens": 187,
    }


def test_it_streams_a_text_answer_with_a_stop_sequence() -> None:
    raw = encode_stream(
        [
            Start("msg_1"),
            BlockStart(0, Text("")),
            BlockDelta(0, "text", "one two"),
            BlockStop(0),
            Finish("stop_sequence", "three"),
            End(Usage(input_tokens=5, output_tokens=2, reported=True)),
        ]
    )
    message = accumulate(raw)
    assert message.content[0].model_dump(exclude_none=True) == {"type": "text", "text": "one two"}
    assert (message.stop_reason, message.stop_sequence) == ("stop_sequence", "three")
    assert (message.usage.input_tokens, message.usage.output_tokens) == (5, 2)
    assert sse_events(raw)[0][1]["message"]["usage"]["input_tokens"] == 0  # not known yet


def test_it_closes_blocks_left_open_at_the_end() -> None:
    raw = encode_stream(
        [
            Start("x"),
            BlockStart(0, ToolUse("a", "f", "")),
            BlockDelta(0, "arguments", "{}"),
            BlockStart(1, ToolUse("b", "g", "")),
            BlockDelta(1, "arguments", '{"k":1}'),
            Finish("tool_use"),
            End(Usage(output_tokens=9, reported=True)),
        ]
    )
    message = accumulate(raw)
    assert [(b.model_dump()["id"], b.model_dump()["input"]) for b in message.content] == [
        ("a", {}),
        ("b", {"k": 1}),
    ]
    names = [name for name, _ in sse_events(raw)]
    assert names.count("content_block_start") == names.count("content_block_stop") == 2


# --- the provider side: requests ------------------------------------------------------------


def call_of(**fields: Any) -> InternalCall:
    values: dict[str, Any] = {
        "model": "auto",
        "stream": False,
        "messages": [Message("user", [Text("Hi")])],
    }
    values.update(fields)
    return InternalCall(**values)


def encode(route: Route, **fields: Any) -> dict[str, Any]:
    request = MESSAGES_PROVIDER.encode(call_of(**fields), route=route, max_tokens=2048)
    assert request.url == "https://api.anthropic.com/v1/messages"
    assert request.headers == {"anthropic-version": settings.PROXY_ANTHROPIC_VERSION}
    return request.payload


def encode_refusal(route: Route, **fields: Any) -> ProxyError:
    with pytest.raises(ProxyError) as caught:
        MESSAGES_PROVIDER.encode(call_of(**fields), route=route, max_tokens=2048)
    assert caught.value.status == 400
    return caught.value


def test_it_encodes_a_plain_call(route: Route) -> None:
    assert encode(route) == {
        "model": "claude-sonnet-4-5",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
        "max_tokens": 2048,
    }
    assert encode(route, stream=True, user="u-7")["stream"] is True
    assert encode(route, user="u-7")["metadata"] == {"user_id": "u-7"}


def test_it_encodes_the_system_as_a_string_or_blocks(route: Route) -> None:
    assert encode(route, system=[Text("Be brief.")])["system"] == "Be brief."
    cached = {"type": "ephemeral"}
    assert encode(route, system=[Text("A"), Text("B", cache_control=cached)])["system"] == [
        {"type": "text", "text": "A"},
        {"type": "text", "text": "B", "cache_control": cached},
    ]
    assert "system" not in encode(route, system=[Text("")])


def test_it_encodes_a_tool_round_trip(route: Route) -> None:
    payload = encode(
        route,
        messages=[
            Message("user", [Text("Weather?"), Image(url="data:image/png;base64,iVBO")]),
            Message(
                "assistant",
                [
                    Text(""),
                    Thinking("unsigned, from elsewhere"),
                    Thinking("mine", "sig"),
                    RedactedThinking("r"),
                    ToolUse("call_1", "get_weather", '{"city":"Paris"}'),
                    ToolUse("call_2", "get_weather", '{"city": "Par'),
                ],
            ),
            Message("user", [Text("and also")]),
            Message(
                "user",
                [
                    ToolResult("call_1", [Text("18C")]),
                    ToolResult(
                        "call_2",
                        [Text("no"), Image(media_type="image/jpeg", data="/9j")],
                        is_error=True,
                        cache_control={"type": "ephemeral"},
                    ),
                ],
            ),
            Message("assistant", [Text("")]),
        ],
        tools=[
            Tool(
                "get_weather",
                "Weather now",
                {"properties": {"city": {"type": "string"}}},
                strict=True,
            )
        ],
        tool_choice=ToolChoice("required"),
        parallel_tool_calls=False,
    )
    assert payload["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Weather?"},
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"},
                },
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "mine", "signature": "sig"},
                {"type": "redacted_thinking", "data": "r"},
                {
                    "type": "tool_use",
                    "id": "call_1",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                },
                {
                    "type": "tool_use",
                    "id": "call_2",
                    "name": "get_weather",
                    "input": {"_raw_arguments": '{"city": "Par'},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "18C"},
                {
                    "type": "tool_result",
                    "tool_use_id": "call_2",
                    "content": [
                        {"type": "text", "text": "no"},
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j"},
                        },
                    ],
                    "is_error": True,
                    "cache_control": {"type": "ephemeral"},
                },
                {"type": "text", "text": "and also"},
            ],
        },
    ]
    assert payload["tools"] == [
        {
            "name": "get_weather",
            "description": "Weather now",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
        }
    ]
    assert payload["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        (None, None, None),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        (ToolChoice("auto"), None, {"type": "auto"}),
        (ToolChoice("none"), False, {"type": "none"}),
        (ToolChoice("tool", "f"), None, {"type": "tool", "name": "f"}),
    ],
)
def test_it_encodes_tool_choice(
    route: Route, choice: ToolChoice | None, parallel: bool | None, expected: dict[str, Any] | None
) -> None:
    tools = [Tool("f", None, {"type": "object"})]
    payload = encode(route, tools=tools, tool_choice=choice, parallel_tool_calls=parallel)
    assert payload.get("tool_choice") == expected


def test_it_keeps_the_sampling_behaviours(route: Route) -> None:
    sampled = encode(route, sampling=Sampling(temperature=1.7, top_k=5, stop=["END"]))
    assert (sampled["temperature"], sampled["top_k"], sampled["stop_sequences"]) == (
        1.0,
        5,
        ["END"],
    )
    assert "top_p" not in encode(route, sampling=Sampling(top_p=1))
    assert encode(route, sampling=Sampling(top_p=0.5))["top_p"] == 0.5
    assert encode_refusal(route, sampling=Sampling(temperature=0.5, top_p=0.5)).param == "top_p"
    assert encode_refusal(route, sampling=Sampling(stop=["\n"])).param == "stop"
    error = encode_refusal(route, sampling=Sampling(seed=7))
    assert (error.code, error.param) == ("unsupported_for_provider", "seed")


@pytest.mark.parametrize(
    ("reasoning", "thinking"),
    [
        (Reasoning(effort="low"), {"type": "enabled", "budget_tokens": 1024}),
        (Reasoning(effort="medium"), {"type": "enabled", "budget_tokens": 2047}),
        (Reasoning(effort="high"), {"type": "enabled", "budget_tokens": 2047}),
        (Reasoning(effort="minimal"), None),
        (Reasoning(budget_tokens=1500), {"type": "enabled", "budget_tokens": 1500}),
        (Reasoning(), {"type": "adaptive"}),
        (Reasoning(enabled=False), {"type": "disabled"}),
    ],
)
def test_it_encodes_reasoning_as_a_thinking_budget_below_max_tokens(
    route: Route, reasoning: Reasoning, thinking: dict[str, Any] | None
) -> None:
    assert encode(route, reasoning=reasoning).get("thinking") == thinking


def test_it_gives_a_high_effort_its_whole_budget_when_room_allows(route: Route) -> None:
    request = MESSAGES_PROVIDER.encode(
        call_of(reasoning=Reasoning(effort="high")), route=route, max_tokens=32000
    )
    assert request.payload["thinking"] == {"type": "enabled", "budget_tokens": 16384}


def test_it_refuses_reasoning_anthropic_would_refuse(route: Route) -> None:
    with pytest.raises(ProxyError) as caught:
        MESSAGES_PROVIDER.encode(
            call_of(reasoning=Reasoning(effort="low")), route=route, max_tokens=1024
        )
    assert (caught.value.param, "1024" in caught.value.message) == ("max_tokens", True)
    thinking = Reasoning(effort="low")
    assert encode_refusal(route, reasoning=thinking, sampling=Sampling(temperature=0.2)).param == (
        "temperature"
    )
    kept = encode(route, reasoning=thinking, sampling=Sampling(temperature=1))
    assert kept["temperature"] == 1.0  # Anthropic takes 1 with thinking
    assert encode_refusal(route, reasoning=thinking, sampling=Sampling(top_p=0.9)).param == "top_p"
    assert encode_refusal(route, reasoning=thinking, sampling=Sampling(top_k=3)).param == "top_k"
    tools = [Tool("f", None, {"type": "object"})]
    error = encode_refusal(
        route, reasoning=thinking, tools=tools, tool_choice=ToolChoice("required")
    )
    assert error.param == "tool_choice"
    assert encode_refusal(route, reasoning=Reasoning(effort="huge")).param == "reasoning_effort"


def tool_loop(*thinking: Thinking | RedactedThinking) -> list[Message]:
    """An OpenAI client's second turn of a tool loop: its first answer sent back."""
    return [
        Message("user", [Text("List the files.")]),
        Message("assistant", [*thinking, ToolUse("toolu_1", "bash", '{"cmd":"ls"}')]),
        Message("user", [ToolResult("toolu_1", [Text("a.txt")])]),
    ]


def test_it_leaves_thinking_out_of_a_tool_loop_whose_thinking_was_not_sent_back(
    route: Route,
) -> None:
    # The OpenAI Agents SDK and LangChain send no thinking_blocks back: with thinking on,
    # Anthropic refuses the call ("a final assistant message must start with a thinking
    # block"); without it, the loop goes on.
    tools = [Tool("bash", None, {"type": "object"})]
    effort = Reasoning(effort="low")
    for lost in [(), (Thinking("unsigned, so not sent"),)]:
        payload = encode(route, messages=tool_loop(*lost), tools=tools, reasoning=effort)
        assert "thinking" not in payload
        assert payload["messages"][1]["content"][0]["type"] == "tool_use"
        # Without thinking, Anthropic takes what thinking refuses.
        cool = encode(
            route,
            messages=tool_loop(*lost),
            tools=tools,
            reasoning=effort,
            sampling=Sampling(temperature=0.2),
            tool_choice=ToolChoice("required"),
        )
        assert (cool["temperature"], cool["tool_choice"]) == (0.2, {"type": "any"})
    budget = {"type": "enabled", "budget_tokens": 1024}
    signed: list[Thinking | RedactedThinking] = [Thinking("mine", "sig"), RedactedThinking("r")]
    for kept in signed:
        payload = encode(route, messages=tool_loop(kept), tools=tools, reasoning=effort)
        assert payload["thinking"] == budget
    # Only the last assistant message with a tool call matters.
    later = [
        *tool_loop(),
        Message("assistant", [Text("Done.")]),
        Message("user", [Text("Thanks")]),
    ]
    assert "thinking" not in encode(route, messages=later, tools=tools, reasoning=effort)
    again = [*tool_loop(), *tool_loop(Thinking("mine", "sig"))]
    assert encode(route, messages=again, tools=tools, reasoning=effort)["thinking"] == budget


@pytest.mark.parametrize("choice", [ToolChoice("required"), ToolChoice("tool", "f")])
def test_it_refuses_a_tool_choice_that_needs_a_tool_when_there_are_none(
    route: Route, choice: ToolChoice
) -> None:
    error = encode_refusal(route, tool_choice=choice)
    assert (error.code, error.param) == ("invalid_request", "tool_choice")
    assert "tool_choice" not in encode(route, tool_choice=ToolChoice("none"))


def test_it_names_a_jpg_image_as_anthropic_does(route: Route) -> None:
    images = [
        Image(media_type="image/jpg", data="/9j"),
        Image(url="data:image/jpg;base64,/9j"),
        Image(media_type="image/png", data="iVBO"),
    ]
    payload = encode(route, messages=[Message("user", list(images))])
    types = [block["source"]["media_type"] for block in payload["messages"][0]["content"]]
    assert types == ["image/jpeg", "image/jpeg", "image/png"]


def test_it_encodes_a_json_schema_as_a_forced_tool(route: Route) -> None:
    schema = {"type": "object", "properties": {"title": {"type": "string"}}}
    fmt = ResponseFormat("json_schema", name="page title", schema=schema, description="A title")
    payload = encode(route, response_format=fmt)
    assert payload["tools"] == [
        {"name": "page_title", "description": "A title", "input_schema": schema}
    ]
    assert payload["tool_choice"] == {"type": "tool", "name": "page_title"}
    payload = encode(route, response_format=ResponseFormat("json_object"))
    assert payload["tools"][0]["input_schema"] == {"type": "object"}
    assert payload["tool_choice"] == {"type": "tool", "name": payload["tools"][0]["name"]}
    assert "tools" not in encode(route, response_format=ResponseFormat("text"))


def test_it_refuses_a_response_format_with_tools_or_thinking(route: Route) -> None:
    fmt = ResponseFormat("json_object")
    tools = [Tool("f", None, {"type": "object"})]
    assert encode_refusal(route, response_format=fmt, tools=tools).param == "response_format"
    error = encode_refusal(route, response_format=fmt, reasoning=Reasoning(effort="low"))
    assert error.param == "response_format"
    array = ResponseFormat("json_schema", name="x", schema={"type": "array"})
    assert encode_refusal(route, response_format=array).param == "response_format"
    # Thinking explicitly off is no thinking.
    assert encode(route, response_format=fmt, reasoning=Reasoning(enabled=False))["tools"]


# --- the provider side: answers ---------------------------------------------------------------


def test_it_decodes_a_tool_use_answer() -> None:
    raw = wire("message_tool_use.json")
    SDKMessage.model_validate_json(raw)
    result = MESSAGES_PROVIDER.decode_answer(raw, call=call_of())
    assert result.id == "msg_01Kq8ZfT4nW2xV6bR9cH3sJd"
    assert result.parts == [
        Text("Let me look that up."),
        ToolUse(
            "toolu_01Nm4Rt6Yu8Io0Pa2Sd4Fg6H", "get_weather", '{"city":"Paris","unit":"celsius"}'
        ),
    ]
    assert (result.stop_reason, result.stop_sequence) == ("tool_use", None)
    usage = result.usage
    assert (usage.input_tokens, usage.cache_read_tokens, usage.cache_write_tokens) == (
        1404,
        1024,
        0,
    )
    assert (usage.output_tokens, usage.reported, usage.invalid) == (71, True, False)
    assert usage.output_estimate > 0


def message_json(**fields: Any) -> bytes:
    obj: dict[str, Any] = json.loads(wire("message_tool_use.json"))
    obj.update(fields)
    return json.dumps(obj).encode()


def test_it_decodes_thinking_and_every_stop_reason() -> None:
    content = [
        {"type": "thinking", "thinking": "t", "signature": "s"},
        {"type": "redacted_thinking", "data": "d"},
        {"type": "text", "text": "x"},
        {"type": "server_tool_use", "id": "s", "name": "web_search", "input": {}},
    ]
    result = MESSAGES_PROVIDER.decode_answer(message_json(content=content), call=call_of())
    assert result.parts == [Thinking("t", "s"), RedactedThinking("d"), Text("x")]
    for sent, expected in [
        ("end_turn", "end_turn"),
        ("max_tokens", "max_tokens"),
        ("stop_sequence", "stop_sequence"),
        ("refusal", "refusal"),
        ("pause_turn", "pause_turn"),
        ("model_context_window_exceeded", "max_tokens"),
    ]:
        raw = message_json(stop_reason=sent, stop_sequence="Z" if sent == "stop_sequence" else None)
        result = MESSAGES_PROVIDER.decode_answer(raw, call=call_of())
        assert result.stop_reason == expected
    assert result.stop_sequence is None
    raw = message_json(stop_reason="stop_sequence", stop_sequence="Z")
    assert MESSAGES_PROVIDER.decode_answer(raw, call=call_of()).stop_sequence == "Z"


@pytest.mark.parametrize(
    "usage",
    [
        {"input_tokens": -1, "output_tokens": 3},
        {"input_tokens": 1.0, "output_tokens": 3},
        {"output_tokens": 3},
        {"input_tokens": 1, "output_tokens": 3, "cache_read_input_tokens": "9"},
        None,
    ],
)
def test_it_flags_impossible_usage(usage: Any) -> None:
    result = MESSAGES_PROVIDER.decode_answer(message_json(usage=usage), call=call_of())
    assert (result.usage.invalid, result.usage.reported) == (True, False)
    assert result.usage.output_estimate > 0  # what is billed instead


@pytest.mark.parametrize(
    "raw", [b"<html>", b"[]", b'{"content": "x"}', b'{"content": [{"type": "text"}]}']
)
def test_it_refuses_a_malformed_answer(raw: bytes) -> None:
    with pytest.raises(ProxyError) as caught:
        MESSAGES_PROVIDER.decode_answer(raw, call=call_of())
    assert (caught.value.status, caught.value.message) == (
        502,
        "The provider sent a malformed response.",
    )


def test_it_fails_an_error_sent_with_a_200() -> None:
    raw = b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'
    with pytest.raises(ProxyError) as caught:
        MESSAGES_PROVIDER.decode_answer(raw, call=call_of())
    assert (caught.value.status, caught.value.message) == (502, "The provider failed: Overloaded")


def test_it_turns_the_forced_tool_back_into_json_text() -> None:
    fmt = ResponseFormat("json_schema", name="page title", schema={"type": "object"})
    content = [{"type": "tool_use", "id": "t", "name": "page_title", "input": {"title": "Ça"}}]
    raw = message_json(content=content, stop_reason="tool_use")
    result = MESSAGES_PROVIDER.decode_answer(raw, call=call_of(response_format=fmt))
    assert result.parts == [Text('{"title":"Ça"}')]
    assert result.stop_reason == "end_turn"
    # Without a response format, the same block is a tool call.
    result = MESSAGES_PROVIDER.decode_answer(raw, call=call_of())
    assert result.parts == [ToolUse("t", "page_title", '{"title":"Ça"}')]


# --- the provider side: streams -------------------------------------------------------------


def decode_stream(raw: bytes, call: InternalCall, *, piece: int = 37) -> tuple[list[Event], Any]:
    decoder = MESSAGES_PROVIDER.decoder(call=call)
    parser = SSEParser()
    events: list[Event] = []
    for i in range(0, len(raw), piece):
        for event in parser.feed(raw[i : i + piece]):
            events.extend(decoder.feed(event))
    return events, decoder


def test_it_has_a_stream_fixture_the_sdk_accepts() -> None:
    message = accumulate(wire("stream_thinking_tools.sse"))
    assert [block.type for block in message.content] == ["thinking", "text", "tool_use", "tool_use"]


def test_it_decodes_a_stream_with_thinking_and_two_tools() -> None:
    events, decoder = decode_stream(wire("stream_thinking_tools.sse"), call_of(stream=True))
    start = events[0]
    assert isinstance(start, Start)
    assert start.id == "msg_01Yh7VQm3cKp2TzR5wNbE8Ds"
    assert start.usage is not None
    assert (start.usage.input_tokens, start.usage.cache_read_tokens) == (11676, 9216)
    signature = json.loads(wire("stream_thinking_tools.sse").split(b"\n")[16][6:])["delta"]
    assert events[1:] == [
        BlockStart(0, Thinking("")),
        BlockDelta(0, "thinking", "The user wants the weather in Paris and Tokyo."),
        BlockDelta(0, "thinking", " I can call get_weather for both at once."),
        BlockDelta(0, "signature", signature["signature"]),
        BlockStop(0),
        BlockStart(1, Text("")),
        BlockDelta(1, "text", "I'll check"),
        BlockDelta(1, "text", " both cities for you."),
        BlockStop(1),
        BlockStart(2, ToolUse("toolu_01A9sLk2Qw7Er4Ty6Ui8Op0Z", "get_weather", "")),
        BlockDelta(2, "arguments", '{"city": "P'),
        BlockDelta(2, "arguments", 'aris", "un'),
        BlockDelta(2, "arguments", 'it": "celsius"}'),
        BlockStop(2),
        BlockStart(3, ToolUse("toolu_01B3dFg5Hj7Kl9Zx1Cv3Bn5M", "get_weather", "")),
        BlockDelta(3, "arguments", '{"city'),
        BlockDelta(3, "arguments", '": "Tōkyō"'),
        BlockDelta(3, "arguments", ', "unit": "celsius"}'),
        BlockStop(3),
        Finish("tool_use"),
        End(
            Usage(
                input_tokens=11676,
                output_tokens=187,
                cache_read_tokens=9216,
                cache_write_tokens=2048,
                reported=True,
            )
        ),
    ]
    assert decoder.complete is True
    assert decoder.content_deltas == 10
    end = events[-1]
    assert isinstance(end, End)
    assert decoder.usage == end.usage


def test_it_survives_a_round_trip_through_both_sides() -> None:
    # Anthropic's stream, decoded and encoded again for an Anthropic client, accumulates
    # into the message Anthropic's own stream does.
    raw = wire("stream_thinking_tools.sse")
    events, _ = decode_stream(raw, call_of(stream=True))
    again = accumulate(encode_stream(events, model="claude-sonnet-4-5-20250929"))
    original = accumulate(raw)
    assert again.model_dump(exclude={"id", "usage"}) == original.model_dump(exclude={"id", "usage"})
    counts = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    assert again.usage.model_dump(include={*counts, "output_tokens"}) == (
        original.usage.model_dump(include={*counts, "output_tokens"})
    )


def test_it_keeps_start_cache_counts_a_delta_leaves_out() -> None:
    raw = wire("stream_thinking_tools.sse").replace(
        b',"cache_creation_input_tokens":2048,"cache_read_input_tokens":9216,"output_tokens":187',
        b',"output_tokens":187',
    )
    _, decoder = decode_stream(raw, call_of(stream=True))
    usage = decoder.usage
    assert (usage.input_tokens, usage.cache_read_tokens, usage.cache_write_tokens) == (
        11676,
        9216,
        2048,
    )


def test_it_flags_impossible_stream_usage() -> None:
    raw = wire("stream_thinking_tools.sse").replace(b'"output_tokens":187', b'"output_tokens":-5')
    events, decoder = decode_stream(raw, call_of(stream=True))
    assert (decoder.usage.invalid, decoder.usage.reported) == (True, False)
    end = events[-1]
    assert isinstance(end, End)
    assert end.usage.invalid


def test_it_raises_the_provider_s_error_event() -> None:
    raw = (
        wire("stream_thinking_tools.sse").split(b"event: content_block_stop")[0]
        + b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error",'
        + b'"message":"Overloaded"}}\n\n'
    )
    with pytest.raises(ProxyError) as caught:
        decode_stream(raw, call_of(stream=True))
    assert (caught.value.status, caught.value.message) == (
        502,
        "The provider failed mid-stream: Overloaded",
    )


def test_it_refuses_a_stream_event_that_is_not_json() -> None:
    decoder = MESSAGES_PROVIDER.decoder(call=call_of(stream=True))
    (event,) = SSEParser().feed(b"event: message_start\ndata: <html>\n\n")
    with pytest.raises(ProxyError) as caught:
        decoder.feed(event)
    assert caught.value.status == 502
    (ping,) = SSEParser().feed(b'event: ping\ndata: {"type": "ping"}\n\n')
    assert decoder.feed(ping) == []
    assert decoder.complete is False


def test_it_streams_the_forced_tool_as_json_text() -> None:
    fmt = ResponseFormat("json_object")
    raw = b"".join(
        b"event: " + name.encode() + b"\ndata: " + json.dumps(data).encode() + b"\n\n"
        for name, data in [
            ("message_start", {"type": "message_start", "message": {
                "id": "msg_j", "type": "message", "role": "assistant", "content": [],
                "model": "m", "stop_reason": None, "stop_sequence": None,
                "usage": {"input_tokens": 5, "output_tokens": 1}}}),
            ("content_block_start", {"type": "content_block_start", "index": 0,
                "content_block": {"type": "tool_use", "id": "t", "name": "json_object",
                                  "input": {}}}),
            ("content_block_delta", {"type": "content_block_delta", "index": 0,
                "delta": {"type": "input_json_delta", "partial_json": '{"a": '}}),
            ("content_block_delta", {"type": "content_block_delta", "index": 0,
                "delta": {"type": "input_json_delta", "partial_json": "1}"}}),
            ("content_block_stop", {"type": "content_block_stop", "index": 0}),
            ("message_delta", {"type": "message_delta", "delta": {
                "stop_reason": "tool_use", "stop_sequence": None},
                "usage": {"output_tokens": 9}}),
            ("message_stop", {"type": "message_stop"}),
        ]
    )  # fmt: skip
    events, decoder = decode_stream(raw, call_of(stream=True, response_format=fmt))
    assert events[1:] == [
        BlockStart(0, Text("")),
        BlockDelta(0, "text", '{"a": '),
        BlockDelta(0, "text", "1}"),
        BlockStop(0),
        Finish("end_turn"),
        End(Usage(input_tokens=5, output_tokens=9, reported=True)),
    ]
    assert decoder.content_deltas == 2


def anthropic_stream(*events: dict[str, Any], stop_reason: str = "tool_use") -> bytes:
    start = {
        "type": "message_start",
        "message": {
            "id": "msg_j",
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": "m",
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 5, "output_tokens": 1},
        },
    }
    finish = {
        "type": "message_delta",
        "delta": {"stop_reason": stop_reason, "stop_sequence": None},
        "usage": {"output_tokens": 9},
    }
    return b"".join(
        b"event: " + e["type"].encode() + b"\ndata: " + json.dumps(e).encode() + b"\n\n"
        for e in [start, *events, finish, {"type": "message_stop"}]
    )  # fmt: skip


def test_it_takes_a_tool_input_given_whole_at_the_block_start() -> None:
    # Anthropic starts with "input": {} and streams the JSON; a compatible server may send
    # the whole input at the start, and no deltas.
    raw = anthropic_stream(
        {"type": "content_block_start", "index": 0, "content_block": {
            "type": "tool_use", "id": "t", "name": "now", "input": {"tz": "UTC"}}},
        {"type": "content_block_stop", "index": 0},
        {"type": "content_block_start", "index": 1, "content_block": {
            "type": "tool_use", "id": "u", "name": "now", "input": {}}},
        {"type": "content_block_delta", "index": 1, "delta": {
            "type": "input_json_delta", "partial_json": '{"tz": "CET"}'}},
        {"type": "content_block_stop", "index": 1},
    )  # fmt: skip
    events, decoder = decode_stream(raw, call_of(stream=True))
    assert events[1:6] == [
        BlockStart(0, ToolUse("t", "now", '{"tz":"UTC"}')),
        BlockStop(0),
        BlockStart(1, ToolUse("u", "now", "")),
        BlockDelta(1, "arguments", '{"tz": "CET"}'),
        BlockStop(1),
    ]
    assert decoder.content_deltas == 2
    fmt = ResponseFormat("json_object")
    json_raw = raw.replace(b'"name": "now"', b'"name": "json_object"')
    events, _ = decode_stream(json_raw, call_of(stream=True, response_format=fmt))
    assert events[1] == BlockStart(0, Text('{"tz":"UTC"}'))


def test_it_streams_only_the_forced_tool_as_json_text() -> None:
    # As in a whole answer: text the model wrote around the forced tool would corrupt the
    # JSON the client parses.
    raw = anthropic_stream(
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {
            "type": "text_delta", "text": "Here is the JSON:"}},
        {"type": "content_block_stop", "index": 0},
        {"type": "content_block_start", "index": 1, "content_block": {
            "type": "tool_use", "id": "t", "name": "json_object", "input": {}}},
        {"type": "content_block_delta", "index": 1, "delta": {
            "type": "input_json_delta", "partial_json": '{"a": 1}'}},
        {"type": "content_block_stop", "index": 1},
    )  # fmt: skip
    fmt = ResponseFormat("json_object")
    events, decoder = decode_stream(raw, call_of(stream=True, response_format=fmt))
    assert events[1:-2] == [
        BlockStart(1, Text("")),
        BlockDelta(1, "text", '{"a": 1}'),
        BlockStop(1),
    ]
    assert events[-2] == Finish("end_turn")
    assert decoder.content_deltas == 2  # the dropped text was written, and is billed


def test_it_passes_a_text_answer_on_when_the_forced_tool_never_comes() -> None:
    # A provider answering in text although the JSON tool was forced: that text is the
    # answer, held only until the turn ends, never dropped (the client would get nothing).
    raw = anthropic_stream(
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {
            "type": "text_delta", "text": '{"a": 2}'}},
        {"type": "content_block_stop", "index": 0},
        stop_reason="end_turn",
    )  # fmt: skip
    fmt = ResponseFormat("json_object")
    events, _ = decode_stream(raw, call_of(stream=True, response_format=fmt))
    assert events[1:-1] == [
        BlockStart(0, Text("")),
        BlockDelta(0, "text", '{"a": 2}'),
        BlockStop(0),
        Finish("end_turn"),
    ]
