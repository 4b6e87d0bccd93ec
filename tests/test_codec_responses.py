"""The OpenAI Responses client side of a translation, on bytes.

``parse_responses_request`` (routing/codecs/responses_request.py) checks a `POST /v1/responses`
body; ``ResponsesClient`` (routing/codecs/responses_client.py) turns it into the internal model
and the internal answer and stream back into a ``response`` object and Responses events. No
server and no database: recorded shapes (tests/fixtures/wire/responses/, see its README, and
Codex's recorded requests in tests/fixtures/wire/) and hand-built internal values, the output
checked against the ``openai`` SDK's types and its own stream accumulator, and through the real
translations towards OpenAI-compatible and Anthropic providers.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from openai import omit
from openai.lib.streaming.responses._responses import ResponseStreamState
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from core.errors import ProxyError
from routing.codecs.base import Usage, dumps
from routing.codecs.chat_provider import CHAT_PROVIDER
from routing.codecs.messages_provider import MESSAGES_PROVIDER
from routing.codecs.model import (
    CUSTOM_INPUT,
    Answer,
    BlockDelta,
    BlockStart,
    BlockStop,
    End,
    Event,
    Finish,
    Image,
    Message,
    Reasoning,
    RedactedThinking,
    ResponseFormat,
    Start,
    Text,
    Thinking,
    ToolChoice,
    ToolResult,
    ToolUse,
)
from routing.codecs.responses_client import (
    DROPPED_HINTS,
    REDACTED_PREFIX,
    RESPONSES_CLIENT,
    SIGNATURE_PREFIX,
    ResponsesEncoder,
)
from routing.codecs.responses_request import ResponsesRequest, parse_responses_request
from routing.codecs.translate import Translation
from routing.sse import SSEParser
from tests.support.routes import make_route

pytestmark = pytest.mark.core

WIRE = Path(__file__).parent / "fixtures" / "wire"
RESPONSES_WIRE = WIRE / "responses"
PNG = (  # a 1x1 PNG
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)
EVENTS: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    "strict": True,
}
PATCH = {
    "type": "custom",
    "name": "apply_patch",
    "description": "Edit files",
    "format": {"type": "grammar", "syntax": "lark", "definition": 'start: "*** Begin Patch"'},
}


def parse(body: dict[str, Any], *, max_messages: int = 100) -> ResponsesRequest:
    return parse_responses_request(dumps(body), headers={}, max_messages=max_messages)


def request(**body: Any) -> ResponsesRequest:
    return parse({"model": "gpt-5", "input": "Hi", **body})


def sse(raw: bytes) -> list[tuple[str | None, dict[str, Any]]]:
    events = SSEParser().feed(raw)
    assert b"".join(event.raw for event in events) == raw  # nothing left over
    out = []
    for event in events:
        assert event.data is not None
        out.append((event.event, json.loads(event.data)))
    return out


def accumulate(
    raw: bytes, *, tools: list[dict[str, Any]] | None = None
) -> ResponseStreamState[Any]:
    """Every event validated as the SDK's own type and fed to its accumulator, which raises
    on anything out of order (a delta before its item, an item never finished...)."""
    state: ResponseStreamState[Any] = ResponseStreamState(input_tools=tools or [], text_format=omit)  # type: ignore[arg-type]
    for number, (name, data) in enumerate(sse(raw)):
        assert name == data["type"]
        assert data["sequence_number"] == number
        state.handle_event(EVENTS.validate_python(data))
    return state


def snapshot(state: ResponseStreamState[Any]) -> Any:
    return state._ResponseStreamState__current_snapshot  # type: ignore[attr-defined]


def encode(events: list[Event], call: ResponsesRequest | None = None) -> bytes:
    encoder = RESPONSES_CLIENT.encoder(call=call or request(stream=True), model="auto")
    return b"".join(encoder.feed(event) for event in events)


def error_of(call: Any) -> ProxyError:
    with pytest.raises(ProxyError) as caught:
        call()
    assert caught.value.status == 400
    return caught.value


# --- the fixtures ------------------------------------------------------------------------


def test_it_has_fixtures_the_openai_sdk_accepts() -> None:
    state = accumulate((RESPONSES_WIRE / "stream_reasoning_text_two_tools.sse").read_bytes())
    final = state._completed_response
    assert final is not None and [item.type for item in final.output] == [
        "reasoning",
        "message",
        "function_call",
        "function_call",
    ]
    Response.model_validate_json((RESPONSES_WIRE / "response_two_tools.json").read_bytes())


# --- parsing -------------------------------------------------------------------------------


def test_it_parses_what_the_proxy_relies_on() -> None:
    call = request(stream=True, max_output_tokens=500, include=["reasoning.encrypted_content"])
    assert (call.model, call.stream, call.max_tokens, call.completions) == ("gpt-5", True, 500, 1)
    assert call.input == "Hi" and call.include == ("reasoning.encrypted_content",)
    assert request(novel_field={"x": 1}).body["novel_field"] == {"x": 1}  # kept for natives


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        ({"input": "Hi"}, "missing_required_parameter", "model"),
        ({"model": 5, "input": "Hi"}, "invalid_type", "model"),
        ({"model": " ", "input": "Hi"}, "empty_string", "model"),
        ({"model": "m"}, "missing_required_parameter", "input"),
        ({"model": "m", "input": {"role": "user"}}, "invalid_type", "input"),
        ({"model": "m", "input": ["hi"]}, "invalid_type", "input[0]"),
        ({"model": "m", "input": [{}, {}, {}]}, "array_above_max_length", "input"),
        ({"model": "m", "input": "x", "stream": "yes"}, "invalid_type", "stream"),
        (
            {"model": "m", "input": "x", "max_output_tokens": 0},
            "integer_below_min_value",
            "max_output_tokens",
        ),
        (
            {"model": "m", "input": "x", "max_output_tokens": 1.5},
            "invalid_type",
            "max_output_tokens",
        ),
        ({"model": "m", "input": "x", "temperature": 3}, "decimal_above_max_value", "temperature"),
        ({"model": "m", "input": "x", "top_p": -1}, "decimal_below_min_value", "top_p"),
        ({"model": "m", "input": "x", "tools": {}}, "invalid_type", "tools"),
        (
            {"model": "m", "input": "x", "parallel_tool_calls": 1},
            "invalid_type",
            "parallel_tool_calls",
        ),
        ({"model": "m", "input": "x", "include": [1]}, "invalid_type", "include[0]"),
        ({"model": "m", "input": "x", "service_tier": "priority"}, "invalid_value", "service_tier"),
        ({"model": "m", "input": "x", "background": True}, "unsupported_parameter", "background"),
        (
            {"model": "m", "input": "x", "conversation": "conv_1"},
            "conversation_not_found",
            "conversation",
        ),
    ],
)
def test_it_refuses_bad_requests_in_openais_words(
    body: dict[str, Any], code: str, param: str
) -> None:
    error = error_of(lambda: parse(body, max_messages=2))
    assert (error.code, error.param) == (code, param)


def test_it_says_the_proxy_stores_no_previous_response() -> None:
    error = error_of(lambda: request(previous_response_id="resp_123"))
    assert error.code == "previous_response_not_found"
    assert "Previous response with id 'resp_123' not found" in error.message
    assert "does not store" in error.message
    assert request(previous_response_id=None).body["previous_response_id"] is None


def test_it_refuses_a_body_that_is_no_json_object() -> None:
    with pytest.raises(ProxyError) as caught:
        parse_responses_request(b"[1]", headers={}, max_messages=5)
    assert caught.value.status == 400


# --- decoding ------------------------------------------------------------------------------


def test_it_decodes_instructions_and_a_string_input() -> None:
    internal = RESPONSES_CLIENT.decode(request(instructions="Be brief."))
    assert internal.system == [Text("Be brief.")]
    assert internal.messages == [Message("user", [Text("Hi")])]
    assert internal.include_usage is True


def test_it_decodes_messages_gathering_system_and_developer_ones_in_order() -> None:
    call = request(
        instructions="First.",
        input=[
            {"role": "developer", "content": "Second."},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "a"}]},
            {"role": "system", "content": [{"type": "input_text", "text": "Third."}]},
            {"role": "user", "content": "b"},
            {
                "type": "message",
                "id": "msg_1",
                "status": "completed",
                "role": "assistant",
                "phase": "final_answer",
                "content": [
                    {"type": "output_text", "text": "c", "annotations": [], "logprobs": []},
                    {"type": "refusal", "refusal": "no"},
                ],
            },
        ],
    )
    internal = RESPONSES_CLIENT.decode(call)
    assert internal.system == [Text("First."), Text("Second."), Text("Third.")]
    assert internal.messages == [
        Message("user", [Text("a"), Text("b")]),  # merged: Anthropic alternates roles
        Message("assistant", [Text("c"), Text("no")]),
    ]


def test_it_decodes_images_inline_and_by_url_and_refuses_file_ids() -> None:
    content = [
        {"type": "input_image", "image_url": f"data:image/png;base64,{PNG}", "detail": "low"},
        {"type": "input_image", "image_url": "https://example.com/a.png", "detail": "auto"},
    ]
    internal = RESPONSES_CLIENT.decode(request(input=[{"role": "user", "content": content}]))
    assert internal.messages[0].parts == [
        Image(media_type="image/png", data=PNG, detail="low"),
        Image(url="https://example.com/a.png", detail="auto"),
    ]
    file_image = [
        {
            "role": "user",
            "content": [{"type": "input_image", "file_id": "file_1", "detail": "auto"}],
        }
    ]
    error = error_of(lambda: RESPONSES_CLIENT.decode(request(input=file_image)))
    assert (error.code, error.param) == ("unsupported_for_provider", "input[0].content[0].file_id")
    bad = [
        {
            "role": "user",
            "content": [{"type": "input_image", "image_url": "ftp://x", "detail": "auto"}],
        }
    ]
    assert error_of(lambda: RESPONSES_CLIENT.decode(request(input=bad))).code == "invalid_request"


def test_it_decodes_a_tool_round_trip_matched_by_call_id() -> None:
    call = request(
        input=[
            {"role": "user", "content": "Weather and a patch?"},
            {
                "type": "reasoning",
                "id": "rs_1",
                "summary": [
                    {"type": "summary_text", "text": "one"},
                    {"type": "summary_text", "text": "two"},
                ],
                "encrypted_content": SIGNATURE_PREFIX + "sig-abc",
            },
            {
                "type": "function_call",
                "id": "fc_1",
                "call_id": "call_1",
                "name": "get_weather",
                "arguments": '{"city":"Paris"}',
            },
            {
                "type": "custom_tool_call",
                "call_id": "call_2",
                "name": "apply_patch",
                "input": "*** Begin Patch",
            },
            {"type": "function_call_output", "call_id": "call_1", "output": "20C"},
            {
                "type": "custom_tool_call_output",
                "call_id": "call_2",
                "output": [
                    {"type": "input_text", "text": "done"},
                    {
                        "type": "input_image",
                        "image_url": f"data:image/png;base64,{PNG}",
                        "detail": "auto",
                    },
                ],
            },
            {"role": "user", "content": "Thanks"},
        ],
        tools=[WEATHER, PATCH],
    )
    internal = RESPONSES_CLIENT.decode(call)
    assert internal.messages == [
        Message("user", [Text("Weather and a patch?")]),
        Message(
            "assistant",
            [
                Thinking("one\n\ntwo", "sig-abc"),
                ToolUse("call_1", "get_weather", '{"city":"Paris"}'),
                ToolUse("call_2", "apply_patch", json.dumps({CUSTOM_INPUT: "*** Begin Patch"})),
            ],
        ),
        Message(
            "user",
            [
                ToolResult("call_1", [Text("20C")]),
                ToolResult(
                    "call_2", [Text("done"), Image(media_type="image/png", data=PNG, detail="auto")]
                ),
                Text("Thanks"),
            ],
        ),
    ]


def test_it_decodes_redacted_and_raw_reasoning_and_skips_empty_items() -> None:
    call = request(
        input=[
            {"role": "user", "content": "x"},
            {"type": "reasoning", "summary": [], "encrypted_content": REDACTED_PREFIX + "opaque"},
            {
                "type": "reasoning",
                "summary": [],
                "content": [{"type": "reasoning_text", "text": "raw"}],
            },
            {"type": "reasoning", "summary": []},
            {"role": "assistant", "content": "y"},
        ]
    )
    assert RESPONSES_CLIENT.decode(call).messages[1] == Message(
        "assistant", [RedactedThinking("opaque"), Thinking("raw"), Text("y")]
    )


def test_it_refuses_a_result_for_no_call() -> None:
    call = request(input=[{"type": "function_call_output", "call_id": "call_9", "output": "x"}])
    error = error_of(lambda: RESPONSES_CLIENT.decode(call))
    assert error.param == "input[0].call_id" and "call_9" in error.message


@pytest.mark.parametrize(
    "item",
    [
        {"type": "item_reference", "id": "msg_1"},
        {"type": "web_search_call", "id": "ws_1", "status": "completed"},
        {"type": "file_search_call", "id": "fs_1", "queries": [], "status": "completed"},
        {
            "type": "computer_call",
            "id": "cu_1",
            "call_id": "c",
            "action": {},
            "status": "completed",
        },
        {
            "type": "local_shell_call",
            "id": "ls_1",
            "call_id": "c",
            "action": {},
            "status": "completed",
        },
        {"type": "mcp_call", "id": "mcp_1", "name": "x", "arguments": "{}", "server_label": "s"},
    ],
)
def test_it_refuses_items_it_cannot_translate_naming_them(item: dict[str, Any]) -> None:
    call = request(input=[{"role": "user", "content": "x"}, item])
    error = error_of(lambda: RESPONSES_CLIENT.decode(call))
    assert (error.code, error.param) == ("unsupported_for_provider", "input[1]")


def test_it_decodes_function_and_custom_tools_and_drops_hosted_search() -> None:
    internal = RESPONSES_CLIENT.decode(
        request(
            tools=[WEATHER, PATCH, {"type": "web_search"}],
            tool_choice={"type": "custom", "name": "apply_patch"},
        )
    )
    weather, patch = internal.tools
    assert (weather.name, weather.parameters, weather.strict, weather.kind) == (
        "get_weather",
        WEATHER["parameters"],
        True,
        "function",
    )
    assert (patch.kind, patch.format, patch.description) == (
        "custom",
        PATCH["format"],
        "Edit files",
    )
    assert patch.parameters["required"] == [CUSTOM_INPUT]
    assert "*** Begin Patch" in patch.parameters["properties"][CUSTOM_INPUT]["description"]
    assert internal.tool_choice == ToolChoice("tool", "apply_patch")
    assert "tools[web_search]" in DROPPED_HINTS


@pytest.mark.parametrize(
    ("tool", "param"),
    [
        ({"type": "file_search", "vector_store_ids": ["vs_1"]}, "tools[0]"),
        ({"type": "code_interpreter", "container": {"type": "auto"}}, "tools[0]"),
        ({"type": "image_generation"}, "tools[0]"),
        ({"type": "mcp", "server_label": "x"}, "tools[0]"),
        ({"type": "computer_use_preview"}, "tools[0]"),
        ({"type": "local_shell"}, "tools[0]"),
        ({"type": "shell"}, "tools[0]"),
        ({"type": "apply_patch"}, "tools[0]"),
        ({"type": "namespace", "name": "n", "tools": [{"type": "mcp"}]}, "tools[0].tools[0]"),
        ({**WEATHER, "defer_loading": True}, "tools[0].defer_loading"),
    ],
)
def test_it_refuses_tools_it_cannot_translate(tool: dict[str, Any], param: str) -> None:
    error = error_of(lambda: RESPONSES_CLIENT.decode(request(tools=[tool])))
    assert (error.code, error.param) == ("unsupported_for_provider", param)


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", ToolChoice("auto")),
        ("none", ToolChoice("none")),
        ("required", ToolChoice("required")),
        ({"type": "function", "name": "get_weather"}, ToolChoice("tool", "get_weather")),
    ],
)
def test_it_decodes_tool_choice(choice: Any, expected: ToolChoice) -> None:
    assert (
        RESPONSES_CLIENT.decode(request(tools=[WEATHER], tool_choice=choice)).tool_choice
        == expected
    )


def test_it_refuses_allowed_tools_and_hosted_tool_choices() -> None:
    allowed = {
        "type": "allowed_tools",
        "mode": "auto",
        "tools": [{"type": "function", "name": "x"}],
    }
    for choice in (allowed, {"type": "web_search_preview"}):
        error = error_of(lambda choice=choice: RESPONSES_CLIENT.decode(request(tool_choice=choice)))
        assert (error.code, error.param) == ("unsupported_for_provider", "tool_choice")


def test_it_decodes_sampling_limits_format_reasoning_and_user() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    internal = RESPONSES_CLIENT.decode(
        request(
            temperature=0.3,
            top_p=0.9,
            max_output_tokens=300,
            parallel_tool_calls=False,
            text={
                "format": {
                    "type": "json_schema",
                    "name": "out",
                    "schema": schema,
                    "strict": True,
                    "description": "d",
                },
                "verbosity": "low",
            },
            reasoning={"effort": "high", "summary": "auto"},
            safety_identifier="user-7",
            user="old-user",
            stream=True,
        )
    )
    assert (internal.sampling.temperature, internal.sampling.top_p, internal.max_tokens) == (
        0.3,
        0.9,
        300,
    )
    assert internal.parallel_tool_calls is False and internal.stream is True
    assert internal.response_format == ResponseFormat(
        "json_schema", name="out", schema=schema, strict=True, description="d"
    )
    assert internal.reasoning == Reasoning(effort="high")
    assert internal.user == "user-7"
    assert RESPONSES_CLIENT.decode(request(reasoning={"effort": "none"})).reasoning == Reasoning(
        enabled=False
    )
    assert RESPONSES_CLIENT.decode(
        request(text={"format": {"type": "json_object"}})
    ).response_format == ResponseFormat("json_object")


def test_it_drops_only_the_documented_hints() -> None:
    hints = {
        "store": False,
        "metadata": {"a": "b"},
        "client_metadata": {"turn_id": "t"},
        "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": "k",
        "prompt_cache_retention": "24h",
        "service_tier": "auto",
        "stream_options": {"include_obfuscation": False},
        "truncation": "auto",
        "background": False,
    }
    for name in hints:
        assert name in DROPPED_HINTS
    internal = RESPONSES_CLIENT.decode(request(**hints))
    assert internal == RESPONSES_CLIENT.decode(request())


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("prompt", {"id": "pmpt_1"}),
        ("top_logprobs", 3),
        ("max_tool_calls", 2),
        ("include", ["message.output_text.logprobs"]),
        ("reasoning", {"effort": "low", "mode": "pro"}),
        ("text", {"format": {"type": "text"}, "novel": 1}),
        ("brand_new_field", 1),
    ],
)
def test_it_refuses_what_it_cannot_translate_naming_the_field(field: str, value: Any) -> None:
    error = error_of(lambda: RESPONSES_CLIENT.decode(request(**{field: value})))
    assert error.code == "unsupported_for_provider"
    assert error.param is not None and error.param.startswith(field.split(".")[0])


@pytest.mark.parametrize("name", ["codex_request.json", "codex_tool_output_request.json"])
def test_it_decodes_codexs_recorded_requests_whole(name: str) -> None:
    recorded = json.loads((WIRE / name).read_bytes())
    call = parse_responses_request(
        dumps(recorded["body"]), headers=recorded["headers"], max_messages=1000
    )
    internal = RESPONSES_CLIENT.decode(call)
    names = [tool.name for tool in internal.tools]
    assert "exec_command" in names and "apply_patch" in names
    assert next(tool for tool in internal.tools if tool.name == "apply_patch").kind == "custom"
    assert internal.system and internal.messages[0].role == "user"
    assert internal.reasoning == Reasoning(effort="medium")


def test_it_decodes_a_codex_turn_with_custom_tool_calls_reasoning_and_an_image() -> None:
    body = json.loads((RESPONSES_WIRE / "codex_turn_request.json").read_bytes())
    internal = RESPONSES_CLIENT.decode(parse(body))
    assert [m.role for m in internal.messages] == ["user", "assistant"] * 3 + ["user"]
    thinking, patch = internal.messages[1].parts[:2]
    # Its encrypted_content is OpenAI's own (gAAAA...), which Anthropic could not check: the
    # summary is kept, as thinking without a signature.
    assert isinstance(thinking, Thinking) and thinking.text and thinking.signature is None
    assert isinstance(patch, ToolUse) and json.loads(patch.arguments)[CUSTOM_INPUT].startswith(
        "*** Begin"
    )
    assert isinstance(internal.messages[-1].parts[-1], Image)
    assert internal.parallel_tool_calls is False


# --- encoding an answer ----------------------------------------------------------------


def answer(*parts: Any, stop_reason: Any = "tool_use", usage: Usage | None = None) -> Answer:
    return Answer(
        id="msg_abc",
        parts=list(parts),
        stop_reason=stop_reason,
        usage=usage
        or Usage(
            input_tokens=1200,
            output_tokens=90,
            cache_read_tokens=1000,
            cache_write_tokens=100,
            reasoning_tokens=40,
            reported=True,
        ),
    )


def test_it_encodes_an_answer_as_a_response_object() -> None:
    call = request(
        tools=[WEATHER, PATCH], instructions="Be brief.", metadata={"k": "v"}, temperature=0.5
    )
    raw = RESPONSES_CLIENT.encode_answer(
        answer(
            Thinking("Let me think.", "sig-1"),
            Text("Checking."),
            ToolUse("toolu_1", "get_weather", '{"city":"Paris"}'),
            ToolUse("toolu_2", "apply_patch", json.dumps({CUSTOM_INPUT: "*** Begin Patch\n"})),
        ),
        call=call,
        model="auto",
    )
    response = Response.model_validate_json(raw)
    assert response.id.startswith("resp_") and response.object == "response"
    assert (response.status, response.model, response.error) == ("completed", "auto", None)
    assert (response.instructions, response.metadata, response.temperature) == (
        "Be brief.",
        {"k": "v"},
        0.5,
    )
    reasoning, message, function, custom = response.output
    assert reasoning.type == "reasoning" and reasoning.id.startswith("rs_")
    assert [s.text for s in reasoning.summary] == ["Let me think."]
    assert (
        reasoning.encrypted_content == SIGNATURE_PREFIX + "sig-1"
    )  # asked for or not: see the module docstring
    assert message.type == "message" and message.id.startswith("msg_")
    assert [c.text for c in message.content if c.type == "output_text"] == ["Checking."]
    assert response.output_text == "Checking."
    assert (
        function.type == "function_call"
        and function.id is not None
        and function.id.startswith("fc_")
    )
    assert (function.call_id, function.name, function.arguments) == (
        "toolu_1",
        "get_weather",
        '{"city":"Paris"}',
    )
    assert (
        custom.type == "custom_tool_call" and custom.id is not None and custom.id.startswith("ctc_")
    )
    assert (custom.call_id, custom.name, custom.input) == (
        "toolu_2",
        "apply_patch",
        "*** Begin Patch\n",
    )
    assert response.usage is not None
    assert response.usage.input_tokens == 1200  # cached included, like chat's prompt_tokens
    assert response.usage.input_tokens_details.cached_tokens == 1000
    assert response.usage.output_tokens_details.reasoning_tokens == 40
    assert response.usage.total_tokens == 1290
    assert [tool.type for tool in response.tools] == ["function", "custom"]


def test_it_says_an_answer_cut_by_the_limit_is_incomplete() -> None:
    raw = RESPONSES_CLIENT.encode_answer(
        answer(Text("Once upon"), stop_reason="max_tokens"), call=request(), model="m"
    )
    response = Response.model_validate_json(raw)
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.output[0].type == "message" and response.output[0].status == "incomplete"


def test_it_round_trips_signatures_and_redacted_thinking_through_reasoning_items() -> None:
    raw = RESPONSES_CLIENT.encode_answer(
        answer(
            Thinking("t", "sig"), RedactedThinking("opaque"), Text("ok"), stop_reason="end_turn"
        ),
        call=request(),
        model="m",
    )
    output = json.loads(raw)["output"]
    again = RESPONSES_CLIENT.decode(request(input=[{"role": "user", "content": "q"}, *output]))
    assert again.messages[1] == Message(
        "assistant", [Thinking("t", "sig"), RedactedThinking("opaque"), Text("ok")]
    )


# --- the stream ----------------------------------------------------------------------------

TOOL_EVENTS: list[Event] = [
    Start("chatcmpl-1"),
    BlockStart(0, Thinking("")),
    BlockDelta(0, "thinking", "Think"),
    BlockDelta(0, "thinking", "ing."),
    BlockDelta(0, "signature", "sig-"),
    BlockDelta(0, "signature", "xyz"),
    BlockStop(0),
    BlockStart(1, Text("")),
    BlockDelta(1, "text", "Look"),
    BlockDelta(1, "text", "ing."),
    BlockStop(1),
    # two tool calls interleaved, as OpenAI chat streams parallel calls
    BlockStart(2, ToolUse("call_1", "get_weather", "")),
    BlockDelta(2, "arguments", '{"city":'),
    BlockStart(3, ToolUse("call_2", "apply_patch", "")),
    BlockDelta(3, "arguments", '{"input":"*** Begin'),
    BlockDelta(2, "arguments", '"Paris"}'),
    BlockDelta(3, "arguments", ' Patch"}'),
    BlockStop(2),
    BlockStop(3),
    Finish("tool_use"),
    End(
        Usage(
            input_tokens=50,
            output_tokens=20,
            cache_read_tokens=10,
            reasoning_tokens=5,
            reported=True,
        )
    ),
]


def test_it_streams_events_the_sdk_accumulates_into_the_completed_response() -> None:
    call = request(stream=True, tools=[WEATHER, PATCH])
    raw = encode(TOOL_EVENTS, call)
    state = accumulate(raw, tools=[WEATHER, PATCH])
    events = sse(raw)
    kinds = [name for name, _ in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert (
        events[0][1]["response"]["status"] == "in_progress"
        and events[0][1]["response"]["output"] == []
    )
    assert kinds[-1] == "response.completed"
    completed = events[-1][1]["response"]
    assert completed["id"] == events[0][1]["response"]["id"] == "resp_chatcmpl-1"
    assert (completed["object"], completed["model"]) == ("response", "auto")
    final = Response.model_validate(completed)
    assert [item.type for item in final.output] == [
        "reasoning",
        "message",
        "function_call",
        "custom_tool_call",
    ]
    # What the SDK built from the deltas is what response.completed says, item by item.
    built = snapshot(state).output
    assert built[1].content[0].text == final.output[1].content[0].text == "Looking."  # type: ignore[union-attr,index]
    assert built[2].arguments == final.output[2].arguments == '{"city":"Paris"}'  # type: ignore[union-attr]
    assert built[2].call_id == final.output[2].call_id == "call_1"  # type: ignore[union-attr]
    assert [item.to_dict() for item in state._completed_output.values()] == [
        item.to_dict() for item in final.output
    ]
    assert final.output[0].encrypted_content == SIGNATURE_PREFIX + "sig-xyz"  # type: ignore[union-attr]
    assert final.output[0].summary[0].text == "Thinking."  # type: ignore[union-attr]
    assert final.output[3].input == "*** Begin Patch"  # type: ignore[union-attr]
    assert final.usage is not None and final.usage.input_tokens == 50
    assert final.usage.input_tokens_details.cached_tokens == 10
    assert final.usage.output_tokens_details.reasoning_tokens == 5


def test_it_sends_each_item_added_before_its_deltas_and_never_interleaved() -> None:
    events = sse(encode(TOOL_EVENTS, request(stream=True, tools=[WEATHER, PATCH])))
    current = None
    added: list[int] = []
    for name, data in events:
        if name == "response.output_item.added":
            assert current is None  # the one before is done
            current = data["output_index"]
            added.append(current)
        elif name == "response.output_item.done":
            assert data["output_index"] == current
            current = None
        elif "output_index" in data:
            assert data["output_index"] == current
            assert data["item_id"] == events[0][1]["response"]["id"] or data["item_id"]
    assert added == [0, 1, 2, 3]
    by_type = {name: data for name, data in events}
    assert by_type["response.function_call_arguments.done"]["name"] == "get_weather"
    assert by_type["response.function_call_arguments.done"]["arguments"] == '{"city":"Paris"}'
    assert by_type["response.custom_tool_call_input.done"]["input"] == "*** Begin Patch"
    assert by_type["response.output_text.delta"]["logprobs"] == []


def test_it_streams_the_shapes_openai_streams() -> None:
    """The recorded OpenAI stream, and the same answer as internal events encoded: the same
    event types in the same order, each with the same fields (obfuscation aside)."""
    recorded = sse((RESPONSES_WIRE / "stream_reasoning_text_two_tools.sse").read_bytes())
    ours = sse(
        encode(
            [
                Start("x"),
                BlockStart(0, Thinking("")),
                BlockDelta(
                    0,
                    "thinking",
                    "**Checking Paris**\n\nThe user wants weather and time in Paris; ",
                ),
                BlockDelta(0, "thinking", "I'll call both tools."),
                BlockDelta(0, "signature", "sig"),
                BlockStop(0),
                BlockStart(1, Text("")),
                *(
                    BlockDelta(1, "text", piece)
                    for piece in ("I'll look up ", "the weather and the time ", "in Paris.")
                ),
                BlockStop(1),
                BlockStart(2, ToolUse("call_a", "get_weather", "")),
                *(
                    BlockDelta(2, "arguments", p)
                    for p in ('{"city":', '"Paris","unit":', '"celsius"}')
                ),
                BlockStop(2),
                BlockStart(3, ToolUse("call_b", "get_time", "")),
                *(BlockDelta(3, "arguments", p) for p in ('{"timezone":', '"Europe/Paris"}')),
                BlockStop(3),
                Finish("tool_use"),
                End(
                    Usage(
                        input_tokens=1289,
                        output_tokens=187,
                        cache_read_tokens=1024,
                        reasoning_tokens=128,
                        reported=True,
                    )
                ),
            ]
        )
    )
    assert [name for name, _ in ours] == [name for name, _ in recorded]

    def fields(data: dict[str, Any]) -> set[str]:
        return set(data) - {"obfuscation", "name"}  # name: ours adds it to arguments.done

    for (name, mine), (_, theirs) in zip(ours, recorded, strict=True):
        assert fields(mine) == fields(theirs), name
        if "item" in mine:
            assert set(mine["item"]) <= set(theirs["item"]) | {"encrypted_content"}, name


def test_it_ends_a_stream_cut_by_the_limit_as_incomplete() -> None:
    raw = encode(
        [
            Start("a"),
            BlockStart(0, Text("")),
            BlockDelta(0, "text", "Once"),
            BlockStop(0),
            Finish("max_tokens"),
            End(Usage(1, 1, reported=True)),
        ]
    )
    events = sse(raw)
    accumulate(raw)
    assert events[-1][0] == "response.incomplete"
    response = Response.model_validate(events[-1][1]["response"])
    assert (
        response.incomplete_details is not None
        and response.incomplete_details.reason == "max_output_tokens"
    )
    assert response.output[0].status == "incomplete"  # type: ignore[union-attr]
    done = next(data for name, data in events if name == "response.output_item.done")
    assert done["item"]["status"] == "incomplete"


def test_it_ends_a_failed_stream_with_response_failed_and_the_output_so_far() -> None:
    encoder = RESPONSES_CLIENT.encoder(call=request(stream=True), model="m")
    events_in: list[Event] = [
        Start("a"),
        BlockStart(0, Text("")),
        BlockDelta(0, "text", "Hal"),
        BlockStop(0),
        BlockStart(1, Text("")),
        BlockDelta(1, "text", "f"),
    ]
    raw = b"".join(encoder.feed(event) for event in events_in)
    raw += encoder.error_event(
        ProxyError(502, "The provider failed mid-stream.", code="upstream_error")
    )
    events = sse(raw)
    accumulate(raw)
    name, data = events[-1]
    assert name == "response.failed" and data["sequence_number"] == len(events) - 1
    response = Response.model_validate(data["response"])
    assert response.status == "failed" and response.error is not None
    assert (response.error.code, response.error.message) == (
        "server_error",
        "The provider failed mid-stream.",
    )
    assert [item.status for item in response.output] == ["completed", "incomplete"]  # type: ignore[union-attr]
    assert encoder.error_event(ProxyError(502, "again")) == b""  # one terminal event only
    assert encoder.feed(End(Usage())) == b""


def test_it_starts_a_stream_that_fails_before_anything_came() -> None:
    encoder = ResponsesEncoder(call=request(stream=True), model="m")
    raw = encoder.error_event(ProxyError(429, "slow down"))
    assert [name for name, _ in sse(raw)] == [
        "response.created",
        "response.in_progress",
        "response.failed",
    ]
    accumulate(raw)
    assert sse(raw)[-1][1]["response"]["error"]["code"] == "rate_limit_exceeded"


# --- through the real translations ---------------------------------------------------------


def test_it_relays_a_chat_providers_two_tool_stream_to_a_responses_client() -> None:
    route = make_route("openai", base_url="https://api.openai.com/v1", upstream_model="gpt-5")
    tools = [
        {
            "type": "function",
            "name": "get_weather",
            "parameters": {"type": "object"},
            "strict": None,
        },
        {"type": "function", "name": "get_time", "parameters": {"type": "object"}, "strict": None},
    ]
    call = request(stream=True, tools=tools)
    translation = Translation(RESPONSES_CLIENT, CHAT_PROVIDER)
    upstream = translation.build(route=route, call=call, max_tokens=1000)
    assert [tool["function"]["name"] for tool in upstream.payload["tools"]] == [
        "get_weather",
        "get_time",
    ]
    stream = translation.stream(route=route, call=call)
    raw = b"".join(
        stream.feed(event)
        for event in SSEParser().feed((WIRE / "openai" / "chat_stream_two_tools.sse").read_bytes())
    )
    state = accumulate(raw, tools=tools)
    final = state._completed_response
    assert final is not None and [item.type for item in final.output].count("function_call") == 2
    for item in final.output:
        if item.type == "function_call":
            json.loads(item.arguments)
            assert item.call_id.startswith("call_")
    assert final.usage is not None and final.usage.input_tokens == stream.usage.input_tokens > 0
    assert final.usage.output_tokens == stream.usage.output_tokens


def test_it_relays_an_anthropic_thinking_and_tools_stream_to_a_responses_client() -> None:
    route = make_route(
        "anthropic", base_url="https://api.anthropic.com", upstream_model="claude-sonnet-4-5"
    )
    fixture = (WIRE / "anthropic" / "stream_thinking_tools.sse").read_bytes()
    names = sorted(
        {
            json.loads(e.data or "{}").get("content_block", {}).get("name")
            for e in SSEParser().feed(fixture)
        }
        - {None}
    )
    tools = [
        {"type": "function", "name": name, "parameters": {"type": "object"}, "strict": None}
        for name in names
    ]
    call = request(stream=True, tools=tools, max_output_tokens=4000, reasoning={"effort": "medium"})
    translation = Translation(RESPONSES_CLIENT, MESSAGES_PROVIDER)
    upstream = translation.build(route=route, call=call, max_tokens=4000)
    assert upstream.payload["model"] == "claude-sonnet-4-5"
    stream = translation.stream(route=route, call=call)
    raw = b"".join(stream.feed(event) for event in SSEParser().feed(fixture))
    state = accumulate(raw, tools=tools)
    final = state._completed_response
    assert final is not None
    kinds = [item.type for item in final.output]
    assert kinds[0] == "reasoning" and "message" in kinds and kinds.count("function_call") == 2
    reasoning = final.output[0]
    assert reasoning.type == "reasoning" and reasoning.encrypted_content  # Anthropic's signature
    assert final.usage is not None
    assert final.usage.input_tokens == stream.usage.input_tokens  # cache counts included
    assert final.usage.input_tokens_details.cached_tokens == stream.usage.cache_read_tokens
    # The signed thinking goes back to Anthropic unchanged in the next turn.
    history = [{"role": "user", "content": "q"}, *[item.to_dict() for item in final.output]]
    history += [
        {"type": "function_call_output", "call_id": item.call_id, "output": "ok"}
        for item in final.output
        if item.type == "function_call"
    ]
    again = translation.build(
        route=route,
        call=request(
            input=history, tools=tools, max_output_tokens=4000, reasoning={"effort": "medium"}
        ),
        max_tokens=4000,
    )
    first = again.payload["messages"][1]["content"][0]
    assert first == {
        "type": "thinking",
        "thinking": reasoning.summary[0].text,
        "signature": reasoning.encrypted_content.removeprefix(SIGNATURE_PREFIX),
    }


# --- Codex's namespaced and additional tools ------------------------------------------------


def codex_fixture(name: str) -> ResponsesRequest:
    recorded = json.loads((WIRE / name).read_bytes())
    return parse_responses_request(
        dumps(recorded["body"]), headers=recorded["headers"], max_messages=1000
    )


ANTHROPIC_ROUTE = make_route(
    "anthropic", base_url="https://api.anthropic.com", upstream_model="claude-sonnet-4-5"
)
CHAT_ROUTE = make_route("openai", base_url="https://api.moonshot.ai/v1", upstream_model="kimi")


def provider_tool_names(call: ResponsesRequest) -> tuple[list[str], list[str]]:
    """The tool names each kind of provider gets for ``call``."""
    anthropic = Translation(RESPONSES_CLIENT, MESSAGES_PROVIDER).build(
        route=ANTHROPIC_ROUTE, call=call, max_tokens=8000
    )
    chat = Translation(RESPONSES_CLIENT, CHAT_PROVIDER).build(
        route=CHAT_ROUTE, call=call, max_tokens=8000
    )
    return (
        [tool["name"] for tool in anthropic.payload["tools"]],
        [tool["function"]["name"] for tool in chat.payload["tools"]],
    )


def test_it_flattens_a_namespace_tool_for_other_providers() -> None:
    # What Codex sends for a model outside its catalog: a `namespace` tool among the others.
    call = codex_fixture("codex_unlisted_model_request.json")
    internal = RESPONSES_CLIENT.decode(call)
    names = [tool.name for tool in internal.tools]
    assert "exec_command" in names and "multi_agent_v1__spawn_agent" in names
    assert "multi_agent_v1" not in names
    anthropic, chat = provider_tool_names(call)
    assert anthropic == chat == names
    spawn = next(tool for tool in internal.tools if tool.name == "multi_agent_v1__spawn_agent")
    assert spawn.description and spawn.parameters["type"] == "object"


def test_it_merges_additional_tools_items_into_the_tool_list() -> None:
    # What Codex sends for its default model: no `tools`, an `additional_tools` input item
    # holding namespaces (one with the custom JavaScript tool `exec`).
    call = codex_fixture("codex_code_mode_request.json")
    internal = RESPONSES_CLIENT.decode(call)
    by_name = {tool.name: tool for tool in internal.tools}
    assert by_name["functions__exec"].kind == "custom"
    assert "clock__sleep" in by_name and "collaboration__spawn_agent" in by_name
    # The item is no message: the conversation starts with the user's.
    assert internal.messages[0].role == "user" and len(internal.messages) == 1
    anthropic, chat = provider_tool_names(call)
    assert anthropic == chat == list(by_name)


def test_it_names_namespaced_tools_as_providers_accept() -> None:
    long = "n" * 40
    call = request(
        tools=[
            {"type": "function", "name": "crm__lookup", "parameters": {"type": "object"}},
            {
                "type": "namespace",
                "name": "crm",
                "description": "CRM",
                "tools": [
                    {"type": "function", "name": "lookup"},  # taken by the plain tool above
                    {"type": "function", "name": "find.user"},  # a dot: refused elsewhere
                    {"type": "function", "name": long},
                ],
            },
            {"type": "namespace", "name": long, "description": "", "tools": [WEATHER]},
        ]
    )
    names = [tool.name for tool in RESPONSES_CLIENT.decode(call).tools]
    assert len(set(names)) == len(names) == 5
    assert all(re.fullmatch(r"[a-zA-Z0-9_-]{1,64}", name) for name in names), names
    assert names[0] == "crm__lookup" and names[1] != "crm__lookup"


NAMESPACED_TOOLS = [
    PATCH,
    {
        "type": "namespace",
        "name": "crm",
        "description": "CRM tools",
        "tools": [
            {"type": "function", "name": "lookup", "parameters": {"type": "object"}},
            {"type": "custom", "name": "script"},
        ],
    },
]


def test_it_answers_calls_to_namespaced_tools_in_their_namespace() -> None:
    call = request(tools=NAMESPACED_TOOLS)
    raw = RESPONSES_CLIENT.encode_answer(
        answer(
            ToolUse("call_1", "crm__lookup", '{"id":1}'),
            ToolUse("call_2", "crm__script", json.dumps({CUSTOM_INPUT: "run()"})),
            ToolUse("call_3", "apply_patch", json.dumps({CUSTOM_INPUT: "*** Begin"})),
        ),
        call=call,
        model="m",
    )
    response = Response.model_validate_json(raw)
    lookup, script, patch = response.output
    assert lookup.type == "function_call" and (lookup.namespace, lookup.name) == ("crm", "lookup")
    assert script.type == "custom_tool_call" and (script.namespace, script.name) == (
        "crm",
        "script",
    )
    assert script.input == "run()"
    assert patch.type == "custom_tool_call" and patch.namespace is None
    # Sent back in the next turn, the calls reach the provider under the same flat names.
    history = [{"role": "user", "content": "q"}, *json.loads(raw)["output"]]
    history += [
        {"type": f"{item['type']}_output", "call_id": item["call_id"], "output": "ok"}
        for item in json.loads(raw)["output"]
    ]
    again = RESPONSES_CLIENT.decode(request(input=history, tools=NAMESPACED_TOOLS))
    assert [part.name for part in again.messages[1].parts if isinstance(part, ToolUse)] == [
        "crm__lookup",
        "crm__script",
        "apply_patch",
    ]


def test_it_streams_calls_to_namespaced_tools_in_their_namespace() -> None:
    call = request(stream=True, tools=NAMESPACED_TOOLS)
    raw = encode(
        [
            Start("a"),
            BlockStart(0, ToolUse("call_1", "crm__lookup", "")),
            BlockDelta(0, "arguments", '{"id":1}'),
            BlockStop(0),
            BlockStart(1, ToolUse("call_2", "crm__script", "")),
            BlockDelta(1, "arguments", json.dumps({CUSTOM_INPUT: "run()"})),
            BlockStop(1),
            Finish("tool_use"),
            End(Usage(reported=True)),
        ],
        call,
    )
    events = sse(raw)
    accumulate(raw)
    added = [data["item"] for name, data in events if name == "response.output_item.added"]
    assert [(item["namespace"], item["name"]) for item in added] == [
        ("crm", "lookup"),
        ("crm", "script"),
    ]
    done = next(data for name, data in events if name == "response.function_call_arguments.done")
    assert done["name"] == "lookup"
    final = Response.model_validate(events[-1][1]["response"])
    assert [(item.type, item.namespace) for item in final.output] == [  # type: ignore[union-attr]
        ("function_call", "crm"),
        ("custom_tool_call", "crm"),
    ]
    assert final.tools[1].type == "namespace"  # echoed as the client declared it


# --- reasoning items from other providers ----------------------------------------------------


def test_it_marks_anthropic_signatures_and_ignores_other_encrypted_content() -> None:
    raw = RESPONSES_CLIENT.encode_answer(
        answer(Thinking("t", "sig"), Text("ok"), stop_reason="end_turn"), call=request(), model="m"
    )
    output = json.loads(raw)["output"]
    assert output[0]["encrypted_content"] == SIGNATURE_PREFIX + "sig"
    again = RESPONSES_CLIENT.decode(request(input=[{"role": "user", "content": "q"}, *output]))
    assert again.messages[1].parts[0] == Thinking("t", "sig")
    # OpenAI's own encrypted reasoning (a turn a passthrough route answered) is no signature
    # Anthropic could check: the summary is kept, unsigned; with no summary, nothing is.
    foreign = {
        "type": "reasoning",
        "summary": [{"type": "summary_text", "text": "thought"}],
        "encrypted_content": "gAAAAABopenai-blob",
    }
    bare = {**foreign, "summary": []}
    decoded = RESPONSES_CLIENT.decode(
        request(input=[{"role": "user", "content": "q"}, foreign, bare, *output[1:]])
    )
    assert decoded.messages[1].parts == [Thinking("thought", None), Text("ok")]


# --- values of the wrong type ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"reasoning": {"effort": ["high"]}}, "reasoning.effort"),
        ({"reasoning": {"effort": 3}}, "reasoning.effort"),
        ({"tools": [{"type": ["function"], "name": "x"}]}, "tools[0].type"),
        ({"tools": [{"type": {"a": 1}, "name": "x"}]}, "tools[0].type"),
        (
            {"tools": [{"type": "namespace", "name": "n", "tools": [{"type": [], "name": "x"}]}]},
            "tools[0].tools[0].type",
        ),
        ({"input": [{"type": "additional_tools", "role": "developer"}]}, "input[0].tools"),
    ],
)
def test_it_refuses_values_of_the_wrong_type_naming_them(body: dict[str, Any], param: str) -> None:
    error = error_of(lambda: RESPONSES_CLIENT.decode(request(**body)))
    assert (error.code, error.param) == ("invalid_request", param)


def test_it_accepts_every_effort_openai_documents() -> None:
    # The SDK's ReasoningEffort, "max" included: the provider side maps or refuses it.
    for effort in ("minimal", "low", "medium", "high", "xhigh", "max"):
        decoded = RESPONSES_CLIENT.decode(request(reasoning={"effort": effort}))
        assert decoded.reasoning == Reasoning(effort=effort)


# --- a stream's end ------------------------------------------------------------------------


def test_it_adds_nothing_to_a_stream_already_ended() -> None:
    encoder = RESPONSES_CLIENT.encoder(call=request(stream=True), model="m")
    for event in (Start("a"), Finish("end_turn"), End(Usage(reported=True))):
        encoder.feed(event)
    # b"", not None: the pipeline sends nothing then (None would mean "the client codec's own
    # error event", one more terminal event after response.completed).
    assert encoder.error_event(ProxyError(502, "late")) == b""


def test_it_lists_held_items_in_a_failed_streams_output() -> None:
    encoder = RESPONSES_CLIENT.encoder(call=request(stream=True, tools=[WEATHER]), model="m")
    events_in: list[Event] = [
        Start("a"),
        BlockStart(0, ToolUse("call_1", "get_weather", "")),
        BlockDelta(0, "arguments", '{"ci'),
        # Parallel calls, held while the first streams: one finished, one cut.
        BlockStart(1, ToolUse("call_2", "get_weather", '{"city":')),
        BlockDelta(1, "arguments", '"Paris"}'),
        BlockStop(1),
        BlockStart(2, ToolUse("call_3", "get_weather", "")),
        BlockDelta(2, "arguments", '{"c'),
    ]
    raw = b"".join(encoder.feed(event) for event in events_in)
    raw += encoder.error_event(ProxyError(502, "cut", code="upstream_error"))
    accumulate(raw)
    response = Response.model_validate(sse(raw)[-1][1]["response"])
    assert [(item.call_id, item.arguments, item.status) for item in response.output] == [  # type: ignore[union-attr]
        ("call_1", '{"ci', "incomplete"),
        ("call_2", '{"city":"Paris"}', "completed"),
        ("call_3", '{"c', "incomplete"),
    ]
