"""The OpenAI chat-completions codecs of a translation, both sides, on bytes.

``ChatClient`` (routing/codecs/chat_client.py) turns an OpenAI client's request into the
internal model and the internal answer and stream back into OpenAI's; ``ChatProvider``
(routing/codecs/chat_provider.py) turns the internal call into an OpenAI-compatible
provider's request and decodes its answer and stream. No server and no database: recorded
provider shapes (tests/fixtures/wire/openai/, see its README) and hand-built internal
values, with the output checked against the ``openai`` SDK's own types and its stream
accumulator as well as by value.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionMessage,
    ChatCompletionMessageFunctionToolCall,
)

from core.errors import ProxyError
from routing.codecs import chat_client
from routing.codecs.base import Usage
from routing.codecs.chat_client import CHAT_CLIENT, DROPPED_HINTS
from routing.codecs.chat_provider import CHAT_PROVIDER
from routing.codecs.model import (
    Answer,
    BlockDelta,
    BlockStart,
    BlockStop,
    End,
    Event,
    Finish,
    Image,
    InternalCall,
    Message,
    Reasoning,
    RedactedThinking,
    ResponseFormat,
    Sampling,
    Start,
    Text,
    Thinking,
    Tool,
    ToolChoice,
    ToolResult,
    ToolUse,
)
from routing.codecs.openai_chat import KNOWN_FIELDS, ChatRequest
from routing.context import Route
from routing.sse import SSEEvent, SSEParser
from tests.support.routes import make_route
from usage.limits import tokens_in

pytestmark = pytest.mark.core

WIRE = Path(__file__).parent / "fixtures" / "wire"
OPENAI_WIRE = WIRE / "openai"
PNG = (  # a 1x1 PNG
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)
WEATHER_ARGS = '{"city": "Paris", "unit": "celsius"}'
TIME_ARGS = '{"timezone": "Europe/Paris"}'


@pytest.fixture(scope="module")
def moonshot_route() -> Route:
    return make_route(
        "openai", base_url="https://api.moonshot.ai/v1", upstream_model="kimi-k2-thinking"
    )


def chat(**body: Any) -> ChatRequest:
    """A chat request as the parser makes it (built directly: the parser's own checks are
    not what these tests are about, and unknown fields must reach the decoder)."""
    body.setdefault("model", "auto")
    body.setdefault("messages", [{"role": "user", "content": "Hi"}])
    limits = [body.get(name) for name in ("max_completion_tokens", "max_tokens")]
    options = body.get("stream_options")
    return ChatRequest(
        body=body,
        model=body["model"],
        stream=body.get("stream", False),
        include_usage=bool(isinstance(options, dict) and options.get("include_usage") is True),
        max_tokens=min((limit for limit in limits if limit is not None), default=None),
        messages=body["messages"],
        completions=body.get("n") or 1,
    )


def refusal(body: ChatRequest) -> ProxyError:
    with pytest.raises(ProxyError) as caught:
        CHAT_CLIENT.decode(body)
    assert caught.value.status == 400
    return caught.value


def events_of(raw: bytes) -> list[SSEEvent]:
    return SSEParser().feed(raw)


def chunks_of(raw: bytes) -> list[dict[str, Any]]:
    """The JSON chunks of an SSE body, checking each is ``data: <compact JSON>``."""
    out = []
    for event in events_of(raw):
        assert event.raw.startswith(b"data: ") and event.raw.endswith(b"\n\n")
        if event.data != "[DONE]":
            assert event.data is not None
            out.append(json.loads(event.data))
    return out


def accumulate(raw: bytes) -> ChatCompletion:
    """What the openai SDK's stream helper makes of the chunks."""
    state: ChatCompletionStreamState[None] = ChatCompletionStreamState()
    for chunk in chunks_of(raw):
        state.handle_chunk(ChatCompletionChunk.model_validate(chunk))
    return state.get_final_completion()


def tool_calls_of(message: ChatCompletionMessage) -> list[tuple[str, str, str]]:
    calls = message.tool_calls or []
    assert all(isinstance(c, ChatCompletionMessageFunctionToolCall) for c in calls)
    return [
        (c.id, c.function.name, c.function.arguments)
        for c in calls
        if isinstance(c, ChatCompletionMessageFunctionToolCall)
    ]


def call(**fields: Any) -> InternalCall:
    fields.setdefault("model", "auto")
    fields.setdefault("stream", False)
    fields.setdefault("messages", [Message("user", [Text("Hi")])])
    return InternalCall(**fields)


# --- the fixtures --------------------------------------------------------------------------


def test_it_has_fixtures_the_openai_sdk_accepts() -> None:
    for name in ("chat_completion_tools.json", "moonshot_thinking_completion.json"):
        ChatCompletion.model_validate_json((OPENAI_WIRE / name).read_bytes())
    for name in ("chat_stream_two_tools.sse", "moonshot_thinking_stream.sse"):
        raw = (OPENAI_WIRE / name).read_bytes()
        assert raw.endswith(b"data: [DONE]\n\n") and b"\r" not in raw
        for chunk in chunks_of(raw):
            ChatCompletionChunk.model_validate(chunk)


# --- ChatClient.decode ---------------------------------------------------------------------


def test_it_gathers_system_and_developer_messages_from_anywhere_in_order() -> None:
    decoded = CHAT_CLIENT.decode(
        chat(
            messages=[
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi"},
                {"role": "developer", "content": [{"type": "text", "text": "Use French."}]},
                {"role": "assistant", "content": "Bonjour"},
                {"role": "system", "content": ""},
                {"role": "user", "content": "Again"},
            ]
        )
    )
    assert [t.text for t in decoded.system] == ["Be brief.", "Use French."]
    assert [(m.role, m.parts) for m in decoded.messages] == [
        ("user", [Text("Hi")]),
        ("assistant", [Text("Bonjour")]),
        ("user", [Text("Again")]),
    ]


def test_it_decodes_user_text_and_images_inline_and_by_url() -> None:
    content = [
        {"type": "text", "text": "Compare", "cache_control": {"type": "ephemeral"}},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg", "detail": "low"}},
    ]
    decoded = CHAT_CLIENT.decode(chat(messages=[{"role": "user", "content": content}]))
    assert decoded.messages == [
        Message(
            "user",
            [
                Text("Compare", cache_control={"type": "ephemeral"}),
                Image(media_type="image/png", data=PNG),
                Image(url="https://example.com/a.jpg", detail="low"),
            ],
        )
    ]


def test_it_decodes_an_assistant_turn_with_its_thinking_first() -> None:
    raw_args = '{"city":  "Paris"}'  # kept byte for byte, odd spacing included
    decoded = CHAT_CLIENT.decode(
        chat(
            messages=[
                {"role": "user", "content": "Weather?"},
                {
                    "role": "assistant",
                    "content": "Checking.",
                    "reasoning_content": "joined text, not read twice",
                    "thinking_blocks": [
                        {"type": "thinking", "thinking": "Need a tool.", "signature": "sig=="},
                        {"type": "redacted_thinking", "data": "EmwKAhgB"},
                    ],
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": raw_args},
                        }
                    ],
                    "refusal": None,
                    "annotations": [],
                },
            ]
        )
    )
    assert decoded.messages[1] == Message(
        "assistant",
        [
            Thinking("Need a tool.", "sig=="),
            RedactedThinking("EmwKAhgB"),
            Text("Checking."),
            ToolUse("call_1", "get_weather", raw_args),
        ],
    )


def test_it_reads_reasoning_content_when_no_thinking_blocks_came_with_it() -> None:
    decoded = CHAT_CLIENT.decode(
        chat(
            messages=[
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello", "reasoning_content": "Greet back."},
                {"role": "assistant", "content": None, "refusal": "I can't help with that."},
            ]
        )
    )
    # Consecutive assistant messages are one turn (Anthropic alternates roles).
    assert decoded.messages[1] == Message(
        "assistant", [Thinking("Greet back."), Text("Hello"), Text("I can't help with that.")]
    )


def test_it_merges_tool_messages_into_one_user_message_matched_by_id() -> None:
    tool_calls = [
        {"id": "call_a", "type": "function", "function": {"name": "f", "arguments": "{}"}},
        {"id": "call_b", "type": "function", "function": {"name": "g", "arguments": "{}"}},
    ]
    image = {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}
    decoded = CHAT_CLIENT.decode(
        chat(
            messages=[
                {"role": "user", "content": "Go"},
                {"role": "assistant", "content": None, "tool_calls": tool_calls},
                {"role": "tool", "tool_call_id": "call_b", "content": "B done"},
                {
                    "role": "tool",
                    "tool_call_id": "call_a",
                    "content": [{"type": "text", "text": "A shot"}, image],
                },
                {"role": "user", "content": "Now summarise"},
            ]
        )
    )
    assert len(decoded.messages) == 3
    assert decoded.messages[2] == Message(
        "user",
        [
            ToolResult("call_b", [Text("B done")]),
            ToolResult("call_a", [Text("A shot"), Image(media_type="image/png", data=PNG)]),
            Text("Now summarise"),
        ],
    )


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", ToolChoice("auto")),
        ("none", ToolChoice("none")),
        ("required", ToolChoice("required")),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            ToolChoice("tool", "get_weather"),
        ),
    ],
)
def test_it_decodes_tools_and_tool_choice(choice: Any, expected: ToolChoice) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather now",
                "parameters": schema,
                "strict": True,
            },
        },
        {"type": "function", "function": {"name": "ping"}},
    ]
    decoded = CHAT_CLIENT.decode(chat(tools=tools, tool_choice=choice, parallel_tool_calls=False))
    assert decoded.tools == [
        Tool("get_weather", "Weather now", schema, True),
        Tool("ping", None, {"type": "object", "properties": {}}),
    ]
    assert decoded.tool_choice == expected
    assert decoded.parallel_tool_calls is False


def test_it_decodes_sampling_limits_format_reasoning_user_and_streaming() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    decoded = CHAT_CLIENT.decode(
        chat(
            temperature=0.4,
            top_p=0.9,
            seed=7,
            stop="END",
            max_tokens=300,
            max_completion_tokens=200,
            response_format={
                "type": "json_schema",
                "json_schema": {
                    "name": "out",
                    "schema": schema,
                    "strict": True,
                    "description": "d",
                },
            },
            reasoning_effort="high",
            safety_identifier="user-42",
            user="ignored-when-safety-identifier-is-set",
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert decoded.sampling == Sampling(temperature=0.4, top_p=0.9, stop=["END"], seed=7)
    assert decoded.max_tokens == 200
    assert decoded.response_format == ResponseFormat("json_schema", "out", schema, True, "d")
    assert decoded.reasoning == Reasoning(effort="high")
    assert decoded.user == "user-42"
    assert decoded.stream and decoded.include_usage
    other = CHAT_CLIENT.decode(
        chat(
            stop=["a", "b"],
            response_format={"type": "json_object"},
            reasoning_effort="none",
            user="u",
        )
    )
    assert other.sampling.stop == ["a", "b"]
    assert other.response_format == ResponseFormat("json_object")
    assert other.reasoning == Reasoning(enabled=False)
    assert other.user == "u"
    assert not other.stream and not other.include_usage and other.max_tokens is None


def test_it_drops_only_the_documented_hints() -> None:
    plain = CHAT_CLIENT.decode(chat())
    hinted = CHAT_CLIENT.decode(
        chat(
            store=True,
            metadata={"run": "1"},
            service_tier="auto",
            prompt_cache_key="k",
            verbosity="low",
            stream_options={"include_obfuscation": False},
            messages=[{"role": "user", "content": "Hi", "name": "alice"}],
        )
    )
    assert hinted == plain
    top_level = {name for name in DROPPED_HINTS if "." not in name}
    assert top_level == {
        "store",
        "metadata",
        "service_tier",
        "prompt_cache_key",
        "verbosity",
        "stream_options",
    }


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("functions", [{"name": "f", "parameters": {}}]),
        ("function_call", "auto"),
        ("n", 2),
        ("logprobs", True),
        ("top_logprobs", 3),
        ("logit_bias", {"50256": -100}),
        ("audio", {"voice": "alloy", "format": "wav"}),
        ("modalities", ["text", "audio"]),
        ("prediction", {"type": "content", "content": "x"}),
        ("web_search_options", {}),
        ("presence_penalty", 0.5),
        ("frequency_penalty", -1),
        ("service_tier", "flex"),
        ("top_k", 40),
        ("brand_new_field", True),
    ],
)
def test_it_refuses_what_it_cannot_translate_naming_the_field(field: str, value: Any) -> None:
    error = refusal(chat(**{field: value}))
    assert error.code == "unsupported_for_provider"
    assert error.param == field
    assert f"`{field}`" in error.message or "modality" in error.message


def test_it_refuses_unknown_fields_as_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    assert refusal(chat(brand_new_field=1)).message.startswith("The field `brand_new_field`")
    # A parameter OpenAI documents that this translation has not learnt yet is refused too,
    # never dropped unnoticed.
    monkeypatch.setattr(chat_client, "KNOWN_FIELDS", KNOWN_FIELDS | {"new_param"})
    error = refusal(chat(new_param=1))
    assert (error.param, error.message.startswith("`new_param`")) == ("new_param", True)


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"tools": [{"type": "custom", "custom": {"name": "grammar"}}]}, "tools[0]"),
        ({"tool_choice": {"type": "allowed_tools", "allowed_tools": {}}}, "tool_choice"),
        ({"tool_choice": "sometimes"}, "tool_choice"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {}}},
            "response_format.json_schema.name",
        ),
        ({"reasoning_effort": "extreme"}, "reasoning_effort"),
    ],
)
def test_it_refuses_tools_and_formats_it_cannot_translate(
    fields: dict[str, Any], param: str
) -> None:
    assert refusal(chat(**fields)).param == param


def test_it_accepts_refused_fields_at_their_defaults() -> None:
    decoded = CHAT_CLIENT.decode(
        chat(
            n=1,
            logprobs=False,
            logit_bias={},
            presence_penalty=0,
            frequency_penalty=0.0,
            modalities=["text"],
            audio=None,
        )
    )
    assert decoded == CHAT_CLIENT.decode(chat())


_CALL = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}


@pytest.mark.parametrize(
    ("messages", "path"),
    [
        (
            [{"role": "user", "content": "x"}, {"role": "tool", "content": "r"}],
            "messages[1].tool_call_id",
        ),
        (
            [
                {"role": "assistant", "tool_calls": [_CALL]},
                {"role": "tool", "tool_call_id": "nope", "content": "r"},
            ],
            "messages[1].tool_call_id",
        ),
        (
            [
                {
                    "role": "assistant",
                    "tool_calls": [
                        {"id": "c", "type": "function", "function": {"arguments": "{}"}}
                    ],
                }
            ],
            "messages[0].tool_calls[0].function.name",
        ),
        (
            [
                {
                    "role": "assistant",
                    "tool_calls": [
                        {"id": "c", "type": "function", "function": {"name": "f", "arguments": {}}}
                    ],
                }
            ],
            "messages[0].tool_calls[0].function.arguments",
        ),
        (
            [
                {
                    "role": "assistant",
                    "tool_calls": [
                        {"type": "function", "function": {"name": "f", "arguments": "{}"}}
                    ],
                }
            ],
            "messages[0].tool_calls[0].id",
        ),
        (
            [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "a"},
                        {"type": "image_url", "image_url": {}},
                    ],
                }
            ],
            "messages[0].content[1].image_url",
        ),
        (
            [
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": "data:image/png,abc"}}],
                }
            ],
            "messages[0].content[0].image_url.url",
        ),
        (
            [
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}],
                }
            ],
            "messages[0].content[0].image_url.url",
        ),
        (
            [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "hologram"}]}],
            "messages[0].content[1]",
        ),
        ([{"role": "user", "content": [{"type": "text"}]}], "messages[0].content[0].text"),
        (
            [{"role": "assistant", "content": "a", "thinking_blocks": [{"type": "idea"}]}],
            "messages[0].thinking_blocks[0]",
        ),
        (
            [
                {
                    "role": "system",
                    "content": [{"type": "image_url", "image_url": {"url": "https://x/y"}}],
                }
            ],
            "messages[0].content[0]",
        ),
    ],
)
def test_it_refuses_invalid_shapes_naming_the_path(messages: list[Any], path: str) -> None:
    error = refusal(chat(messages=messages))
    assert error.param == path
    assert f"`{path}`" in error.message or f"`{path.rsplit('.', 1)[0]}`" in error.message


@pytest.mark.parametrize(
    ("message", "path"),
    [
        ({"role": "function", "name": "f", "content": "r"}, "messages[1]"),
        ({"role": "user", "content": "x", "cache_hint": 1}, "messages[1].cache_hint"),
        (
            {"role": "assistant", "content": "x", "function_call": {"name": "f"}},
            "messages[1].function_call",
        ),
        (
            {"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]},
            "messages[1].content[0]",
        ),
    ],
)
def test_it_refuses_untranslatable_messages(message: dict[str, Any], path: str) -> None:
    error = refusal(chat(messages=[{"role": "user", "content": "Hi"}, message]))
    assert (error.code, error.param) == ("unsupported_for_provider", path)


def test_it_leaves_out_an_empty_assistant_turn() -> None:
    decoded = CHAT_CLIENT.decode(
        chat(
            messages=[
                {"role": "user", "content": "a"},
                {"role": "assistant", "content": None},
                {"role": "user", "content": "b"},
            ]
        )
    )
    assert decoded.messages == [Message("user", [Text("a"), Text("b")])]


def test_it_refuses_a_conversation_of_system_messages_only() -> None:
    error = refusal(chat(messages=[{"role": "system", "content": "Be brief."}]))
    assert error.param == "messages"


# --- ChatClient.encode_answer --------------------------------------------------------------


def answer(parts: list[Any], stop_reason: Any = "end_turn", **usage: Any) -> Answer:
    counts = {"input_tokens": 120, "output_tokens": 30, "reported": True, **usage}
    return Answer(id="msg_01XYZ", parts=parts, stop_reason=stop_reason, usage=Usage(**counts))


def completion_of(raw: bytes) -> tuple[dict[str, Any], ChatCompletion]:
    return json.loads(raw), ChatCompletion.model_validate_json(raw)


def test_it_encodes_an_answer_as_a_chat_completion() -> None:
    parts = [
        Thinking("Let me think.", "sig=="),
        Text("Calling "),
        Text("two tools."),
        ToolUse("toolu_1", "get_weather", WEATHER_ARGS),
        ToolUse("toolu_2", "get_time", TIME_ARGS),
    ]
    usage = {"cache_read_tokens": 100, "reasoning_tokens": 12}
    raw = CHAT_CLIENT.encode_answer(answer(parts, "tool_use", **usage), call=chat(), model="auto")
    obj, parsed = completion_of(raw)
    assert obj["id"] == "chatcmpl-msg_01XYZ" and obj["object"] == "chat.completion"
    assert obj["model"] == "auto" and isinstance(obj["created"], int)
    choice = parsed.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.logprobs is None
    message = obj["choices"][0]["message"]
    assert message["content"] == "Calling two tools."
    assert message["refusal"] is None and message["annotations"] == []
    assert message["reasoning_content"] == "Let me think."
    assert message["thinking_blocks"] == [
        {"type": "thinking", "thinking": "Let me think.", "signature": "sig=="}
    ]
    assert tool_calls_of(choice.message) == [
        ("toolu_1", "get_weather", WEATHER_ARGS),
        ("toolu_2", "get_time", TIME_ARGS),
    ]
    assert obj["usage"] == {
        "prompt_tokens": 120,
        "completion_tokens": 30,
        "total_tokens": 150,
        "prompt_tokens_details": {"cached_tokens": 100},
        "completion_tokens_details": {"reasoning_tokens": 12},
    }


def test_it_gives_null_content_to_a_tool_only_answer_and_empty_to_an_empty_one() -> None:
    tool_only = CHAT_CLIENT.encode_answer(
        answer([ToolUse("t", "f", "{}")], "tool_use"), call=chat(), model="auto"
    )
    empty = CHAT_CLIENT.encode_answer(answer([], "max_tokens"), call=chat(), model="auto")
    assert completion_of(tool_only)[1].choices[0].message.content is None
    obj, parsed = completion_of(empty)
    assert parsed.choices[0].message.content == "" and parsed.choices[0].finish_reason == "length"
    assert "tool_calls" not in obj["choices"][0]["message"]
    assert "reasoning_content" not in obj["choices"][0]["message"]


def test_it_sends_thinking_blocks_only_when_a_later_turn_needs_them() -> None:
    unsigned = CHAT_CLIENT.encode_answer(
        answer([Thinking("hm"), Text("ok")]), call=chat(), model="a"
    )
    redacted = CHAT_CLIENT.encode_answer(
        answer([RedactedThinking("EmwK"), Text("ok")]), call=chat(), model="a"
    )
    assert "thinking_blocks" not in json.loads(unsigned)["choices"][0]["message"]
    message = json.loads(redacted)["choices"][0]["message"]
    assert message["thinking_blocks"] == [{"type": "redacted_thinking", "data": "EmwK"}]
    assert "reasoning_content" not in message


@pytest.mark.parametrize(
    ("stop_reason", "finish_reason"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("pause_turn", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
    ],
)
def test_it_maps_stop_reasons_to_finish_reasons(stop_reason: Any, finish_reason: str) -> None:
    raw = CHAT_CLIENT.encode_answer(answer([Text("x")], stop_reason), call=chat(), model="auto")
    assert completion_of(raw)[1].choices[0].finish_reason == finish_reason


def test_it_reports_the_tokens_written_to_the_cache() -> None:
    raw = CHAT_CLIENT.encode_answer(
        answer([Text("x")], cache_read_tokens=40, cache_write_tokens=60), call=chat(), model="a"
    )
    obj, parsed = completion_of(raw)
    assert obj["usage"]["prompt_tokens_details"] == {"cached_tokens": 40, "cache_write_tokens": 60}
    assert parsed.usage is not None and parsed.usage.prompt_tokens_details is not None
    assert parsed.usage.prompt_tokens_details.cache_write_tokens == 60
    # None written: the field is left out, as OpenAI's own answers leave it.
    raw = CHAT_CLIENT.encode_answer(answer([Text("x")]), call=chat(), model="a")
    assert json.loads(raw)["usage"]["prompt_tokens_details"] == {"cached_tokens": 0}


# --- ChatClient.encoder --------------------------------------------------------------------


def encode_stream(events: list[Event], *, include_usage: bool) -> bytes:
    body = chat(stream=True, stream_options={"include_usage": include_usage})
    encoder = CHAT_CLIENT.encoder(call=body, model="auto")
    return b"".join(encoder.feed(event) for event in events)


FINAL_USAGE = Usage(
    input_tokens=500, output_tokens=40, cache_read_tokens=300, reasoning_tokens=8, reported=True
)


def test_it_streams_text_as_chunks_the_openai_sdk_accumulates() -> None:
    raw = encode_stream(
        [
            Start("msg_01ABC"),
            BlockStart(0, Text("")),
            BlockDelta(0, "text", "The capital "),
            BlockDelta(0, "text", ""),
            BlockDelta(0, "text", "is Paris."),
            BlockStop(0),
            Finish("end_turn"),
            End(FINAL_USAGE),
        ],
        include_usage=True,
    )
    assert raw.endswith(b"\n\ndata: [DONE]\n\n")
    chunks = chunks_of(raw)
    assert all(c["id"] == "chatcmpl-msg_01ABC" and c["model"] == "auto" for c in chunks)
    assert all("usage" in c for c in chunks)  # null on every chunk but the last, as OpenAI's
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert [c["choices"][0]["delta"] for c in chunks[1:3]] == [
        {"content": "The capital "},
        {"content": "is Paris."},
    ]
    assert chunks[3]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "stop",
    }
    assert chunks[4]["choices"] == [] and chunks[4]["usage"]["prompt_tokens"] == 500
    assert chunks[4]["usage"]["prompt_tokens_details"] == {"cached_tokens": 300}
    assert chunks[4]["usage"]["completion_tokens_details"] == {"reasoning_tokens": 8}
    final = accumulate(raw)
    assert final.choices[0].message.content == "The capital is Paris."
    assert final.choices[0].finish_reason == "stop"
    assert final.usage is not None and final.usage.total_tokens == 540


def test_it_streams_several_tool_calls_with_their_own_indexes() -> None:
    # Internal blocks 1 and 2 (after a text block 0), interleaved as OpenAI-compatible
    # providers may send them: the client sees tool indexes 0 and 1.
    raw = encode_stream(
        [
            Start("msg_1"),
            BlockStart(0, Text("")),
            BlockDelta(0, "text", "Checking."),
            BlockStop(0),
            BlockStart(1, ToolUse("toolu_w", "get_weather", "")),
            BlockDelta(1, "arguments", '{"city": '),
            BlockStart(2, ToolUse("toolu_t", "get_time", "")),
            BlockDelta(2, "arguments", '{"timezone": '),
            BlockDelta(1, "arguments", '"Paris", "unit": "celsius"}'),
            BlockDelta(2, "arguments", '"Europe/Paris"}'),
            BlockStop(1),
            BlockStop(2),
            Finish("tool_use"),
            End(FINAL_USAGE),
        ],
        include_usage=False,
    )
    chunks = chunks_of(raw)
    assert all("usage" not in c for c in chunks)  # the client did not ask for usage
    tool_deltas = [
        c["choices"][0]["delta"]["tool_calls"][0]
        for c in chunks
        if "tool_calls" in c["choices"][0]["delta"]
    ]
    assert tool_deltas[0] == {
        "index": 0,
        "id": "toolu_w",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    assert tool_deltas[2]["index"] == 1 and tool_deltas[2]["id"] == "toolu_t"
    assert [d["index"] for d in tool_deltas] == [0, 0, 1, 1, 0, 1]
    assert all(set(d) == {"index", "function"} for d in tool_deltas if "id" not in d)
    final = accumulate(raw)
    message = final.choices[0].message
    assert message.content == "Checking."
    assert tool_calls_of(message) == [
        ("toolu_w", "get_weather", WEATHER_ARGS),
        ("toolu_t", "get_time", TIME_ARGS),
    ]
    assert final.choices[0].finish_reason == "tool_calls"


def test_it_opens_a_tool_first_stream_with_null_content() -> None:
    raw = encode_stream(
        [
            Start("m"),
            BlockStart(0, ToolUse("toolu_1", "ping", "")),
            BlockDelta(0, "arguments", "{}"),
            BlockStop(0),
            Finish("tool_use"),
            End(FINAL_USAGE),
        ],
        include_usage=False,
    )
    first = chunks_of(raw)[0]["choices"][0]["delta"]
    assert first["role"] == "assistant" and first["content"] is None
    assert first["tool_calls"][0]["id"] == "toolu_1"
    assert accumulate(raw).choices[0].message.content is None


def test_it_gives_a_tool_call_streamed_without_arguments_an_empty_object() -> None:
    # Anthropic streams a call without input as no (or one empty) input_json_delta; "" is
    # no JSON, and the openai SDK's stream helper raises on it for strict tools.
    tools: Any = [
        {
            "type": "function",
            "function": {
                "name": "now",
                "strict": True,
                "parameters": {"type": "object", "properties": {}, "additionalProperties": False},
            },
        }
    ]
    raw = encode_stream(
        [
            Start("m"),
            BlockStart(0, ToolUse("toolu_1", "now", "")),
            BlockDelta(0, "arguments", ""),
            BlockStop(0),
            BlockStart(1, ToolUse("toolu_2", "get_time", "")),
            BlockDelta(1, "arguments", TIME_ARGS),
            BlockStop(1),
            BlockStart(2, ToolUse("toolu_3", "now", "")),  # never stopped
            Finish("tool_use"),
            End(FINAL_USAGE),
        ],
        include_usage=False,
    )
    state: ChatCompletionStreamState[None] = ChatCompletionStreamState(input_tools=tools)
    for chunk in chunks_of(raw):
        state.handle_chunk(ChatCompletionChunk.model_validate(chunk))
    assert tool_calls_of(state.get_final_completion().choices[0].message) == [
        ("toolu_1", "now", "{}"),
        ("toolu_2", "get_time", TIME_ARGS),
        ("toolu_3", "now", "{}"),
    ]


def test_it_streams_thinking_as_reasoning_content_and_signed_blocks() -> None:
    raw = encode_stream(
        [
            Start("m"),
            BlockStart(0, Thinking("")),
            BlockDelta(0, "thinking", "Think "),
            BlockDelta(0, "thinking", "hard."),
            BlockDelta(0, "signature", "EqQB"),
            BlockStop(0),
            BlockStart(1, RedactedThinking("EmwK")),
            BlockStop(1),
            BlockStart(2, Text("")),
            BlockDelta(2, "text", "Done."),
            BlockStop(2),
            Finish("end_turn"),
            End(FINAL_USAGE),
        ],
        include_usage=True,
    )
    chunks = chunks_of(raw)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": None}
    final = accumulate(raw)
    message = final.choices[0].message.model_dump()
    assert message["content"] == "Done."
    assert message["reasoning_content"] == "Think hard."
    assert message["thinking_blocks"] == [
        {"index": 0, "type": "thinking", "thinking": "Think hard.", "signature": "EqQB"},
        {"index": 1, "type": "redacted_thinking", "data": "EmwK"},
    ]
    # What the client accumulated, sent back, decodes to the same blocks.
    back = CHAT_CLIENT.decode(
        chat(messages=[{"role": "user", "content": "q"}, {"role": "assistant", **message}])
    )
    assert back.messages[1].parts == [
        Thinking("Think hard.", "EqQB"),
        RedactedThinking("EmwK"),
        Text("Done."),
    ]


def test_it_sends_the_role_at_finish_when_no_block_came() -> None:
    raw = encode_stream([Start("m"), Finish("max_tokens"), End(FINAL_USAGE)], include_usage=False)
    chunks = chunks_of(raw)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[1]["choices"][0]["finish_reason"] == "length"
    assert len(chunks) == 2 and raw.endswith(b"data: [DONE]\n\n")


# --- ChatProvider.encode -------------------------------------------------------------------


def test_it_encodes_a_call_for_an_openai_compatible_provider(moonshot_route: Route) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    internal = call(
        stream=True,
        system=[Text("Be brief.", cache_control={"type": "ephemeral"}), Text("Use French.")],
        messages=[
            Message(
                "user",
                [Text("Weather here?"), Image(media_type="image/png", data=PNG, detail="high")],
            ),
            Message(
                "assistant",
                [
                    Thinking("Need the tool.", "sig"),
                    RedactedThinking("EmwK"),
                    Text("Checking."),
                    ToolUse("toolu_1", "get_weather", '{"city":"Paris"}'),
                    ToolUse("toolu_2", "snapshot", "{}"),
                ],
            ),
            Message(
                "user",
                [
                    ToolResult("toolu_1", [Text("18C"), Text("sunny")]),
                    ToolResult(
                        "toolu_2", [Text("see image"), Image(url="https://example.com/s.png")]
                    ),
                    Text("And tomorrow?"),
                ],
            ),
        ],
        tools=[Tool("get_weather", "Weather now", schema, True, {"type": "ephemeral"})],
        tool_choice=ToolChoice("required"),
        parallel_tool_calls=False,
        sampling=Sampling(temperature=0.2, top_p=0.8, stop=["END"], seed=3),
        response_format=ResponseFormat("json_schema", "out", schema, True),
        reasoning=Reasoning(effort="low", budget_tokens=2048),
        user="user-42",
    )
    request = CHAT_PROVIDER.encode(internal, route=moonshot_route, max_tokens=512)
    assert request.url == "https://api.moonshot.ai/v1/chat/completions"
    assert request.headers == {}
    payload = request.payload
    assert payload["model"] == "kimi-k2-thinking" and payload["max_tokens"] == 512
    assert payload["messages"] == [
        {"role": "system", "content": "Be brief.\n\nUse French."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Weather here?"},
                {
                    "type": "image_url",
                    "image_url": {"url": f"data:image/png;base64,{PNG}", "detail": "high"},
                },
            ],
        },
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                },
                {
                    "id": "toolu_2",
                    "type": "function",
                    "function": {"name": "snapshot", "arguments": "{}"},
                },
            ],
            "reasoning_content": "Need the tool.",
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "18C\n\nsunny"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": "see image"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Images from the result of tool call toolu_2:"},
                {"type": "image_url", "image_url": {"url": "https://example.com/s.png"}},
                {"type": "text", "text": "And tomorrow?"},
            ],
        },
    ]
    assert payload["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather now",
                "parameters": schema,
                "strict": True,
            },
        }
    ]
    assert payload["tool_choice"] == "required" and payload["parallel_tool_calls"] is False
    assert (payload["temperature"], payload["top_p"], payload["stop"], payload["seed"]) == (
        0.2,
        0.8,
        ["END"],
        3,
    )
    assert payload["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "out", "schema": schema, "strict": True},
    }
    # How much to think is the route's model's business here (chat_provider's docstring).
    assert "reasoning_effort" not in payload and payload["user"] == "user-42"
    assert payload["stream"] is True and payload["stream_options"] == {"include_usage": True}
    assert "cache_control" not in json.dumps(payload)


def test_it_encodes_the_simple_cases_simply(moonshot_route: Route) -> None:
    payload = CHAT_PROVIDER.encode(
        call(
            messages=[
                Message("user", [Text("Hi")]),
                Message("assistant", [ToolUse("t1", "f", "{}")]),
                Message("user", [ToolResult("t1", [Text("boom")], is_error=True)]),
            ],
            tool_choice=ToolChoice("auto"),
            parallel_tool_calls=True,
            response_format=ResponseFormat("json_object"),
            reasoning=Reasoning(budget_tokens=4096),
        ),
        route=moonshot_route,
        max_tokens=100,
    ).payload
    assert payload["messages"] == [
        {"role": "user", "content": "Hi"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "t1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "t1", "content": "Error: boom"},
    ]
    assert payload["response_format"] == {"type": "json_object"}
    # No tools: no tool switches (OpenAI refuses them); a budget alone sets no effort.
    for absent in (
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "reasoning_effort",
        "stream",
        "stream_options",
        "user",
        "stop",
    ):
        assert absent not in payload
    named = CHAT_PROVIDER.encode(
        call(tools=[Tool("f", None, {"type": "object"})], tool_choice=ToolChoice("tool", "f")),
        route=moonshot_route,
        max_tokens=100,
    ).payload
    assert named["tool_choice"] == {"type": "function", "function": {"name": "f"}}
    assert named["tools"] == [
        {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    ]


@pytest.mark.parametrize("choice", [ToolChoice("required"), ToolChoice("tool", "f")])
def test_it_refuses_a_tool_choice_that_needs_a_tool_when_there_are_none(
    moonshot_route: Route, choice: ToolChoice
) -> None:
    with pytest.raises(ProxyError) as caught:
        CHAT_PROVIDER.encode(call(tool_choice=choice), route=moonshot_route, max_tokens=10)
    assert (caught.value.status, caught.value.param) == (400, "tool_choice")
    # auto and none say nothing without tools: left out (OpenAI refuses them without).
    payload = CHAT_PROVIDER.encode(
        call(tool_choice=ToolChoice("none")), route=moonshot_route, max_tokens=10
    ).payload
    assert "tool_choice" not in payload


@pytest.mark.parametrize(
    ("sampling", "param"),
    [(Sampling(top_k=40), "top_k"), (Sampling(stop=["a", "b", "c", "d", "e"]), "stop_sequences")],
)
def test_it_refuses_sampling_openai_cannot_do(
    moonshot_route: Route, sampling: Sampling, param: str
) -> None:
    with pytest.raises(ProxyError) as caught:
        CHAT_PROVIDER.encode(call(sampling=sampling), route=moonshot_route, max_tokens=10)
    assert (caught.value.status, caught.value.code, caught.value.param) == (
        400,
        "unsupported_for_provider",
        param,
    )


# --- ChatProvider.decode_answer ------------------------------------------------------------


def test_it_decodes_a_tool_call_answer() -> None:
    raw = (OPENAI_WIRE / "chat_completion_tools.json").read_bytes()
    decoded = CHAT_PROVIDER.decode_answer(raw, call=call())
    assert decoded.id == "chatcmpl-D3kR2aVn6QpLs8XwTz1YbM4cKe7Hg"
    assert decoded.parts == [
        ToolUse(
            "call_Qm7TzR2pXw9KdL4sVb8NcH1e", "get_weather", '{"city":"Paris","unit":"celsius"}'
        ),
        ToolUse("call_Hy3WcN8bLq5ZtR1mKd6PsV0a", "get_time", '{"timezone":"Europe/Paris"}'),
    ]
    assert decoded.stop_reason == "tool_use"
    arguments = len('{"city":"Paris","unit":"celsius"}') + len('{"timezone":"Europe/Paris"}')
    assert decoded.usage == Usage(
        input_tokens=3190,
        output_tokens=52,
        cache_read_tokens=2048,
        reported=True,
        output_estimate=tokens_in(arguments),
    )


def test_it_decodes_a_moonshot_answer_with_its_reasoning_first() -> None:
    raw = (OPENAI_WIRE / "moonshot_thinking_completion.json").read_bytes()
    decoded = CHAT_PROVIDER.decode_answer(raw, call=call())
    assert decoded.parts == [
        Thinking("The user wants the weather in Paris. I should call get_weather with city Paris."),
        Text("Let me check the weather in Paris."),
        ToolUse("functions.get_weather:0", "get_weather", '{"city": "Paris"}'),
    ]
    assert decoded.stop_reason == "tool_use"
    usage = decoded.usage
    assert (usage.input_tokens, usage.output_tokens, usage.cache_read_tokens) == (412, 61, 256)
    assert usage.reported and not usage.invalid


def test_it_calls_tool_calls_tool_use_whatever_the_finish_reason() -> None:
    # Some compatible servers finish tool calls with "stop"; an Anthropic client runs its
    # tools only on tool_use.
    tool_call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    message = {"role": "assistant", "content": None, "tool_calls": [tool_call]}
    body = {"id": "x", "choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}
    decoded = CHAT_PROVIDER.decode_answer(json.dumps(body).encode(), call=call())
    assert decoded.stop_reason == "tool_use"
    stream = (
        b'data: {"id":"c","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"c1",'
        b'"type":"function","function":{"name":"f","arguments":"{}"}}]}}]}\n\n'
        b'data: {"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
        b"data: [DONE]\n\n"
    )
    events, _ = decode_stream(stream)
    assert Finish("tool_use") in events


def test_it_decodes_a_text_answer_and_its_usage() -> None:
    decoded = CHAT_PROVIDER.decode_answer(
        (WIRE / "openai_chat_completion.json").read_bytes(), call=call()
    )
    assert decoded.parts == [Text("The capital of France is Paris \u2014 la Ville Lumi\u00e8re.")]
    assert decoded.stop_reason == "end_turn"
    assert (decoded.usage.input_tokens, decoded.usage.output_tokens) == (24, 11)


@pytest.mark.parametrize(
    ("finish_reason", "stop_reason"),
    [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("content_filter", "refusal"),
        (None, "end_turn"),
    ],
)
def test_it_maps_finish_reasons(finish_reason: str | None, stop_reason: str) -> None:
    body = {
        "id": "x",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "a"},
                "finish_reason": finish_reason,
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1},
    }
    assert (
        CHAT_PROVIDER.decode_answer(json.dumps(body).encode(), call=call()).stop_reason
        == stop_reason
    )


@pytest.mark.parametrize(
    "usage",
    [
        None,
        {"prompt_tokens": 10.0, "completion_tokens": 5},
        {"prompt_tokens": 10},
        {"prompt_tokens": 10, "completion_tokens": -1},
        {
            "prompt_tokens": 10,
            "completion_tokens": 5,
            "prompt_tokens_details": {"cached_tokens": 11},
        },
    ],
)
def test_it_flags_usage_that_cannot_be_billed(usage: Any) -> None:
    body: dict[str, Any] = {
        "id": "x",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "abcd" * 10},
                "finish_reason": "stop",
            }
        ],
    }
    if usage is not None:
        body["usage"] = usage
    decoded = CHAT_PROVIDER.decode_answer(json.dumps(body).encode(), call=call())
    assert decoded.usage.invalid and not decoded.usage.reported
    assert decoded.usage.output_estimate == tokens_in(40)


@pytest.mark.parametrize(
    "raw",
    [b"<html>oops</html>", b"[]", b'{"id":"x","choices":[]}', b'{"choices":[{"message":"x"}]}'],
)
def test_it_refuses_a_malformed_answer(raw: bytes) -> None:
    with pytest.raises(ProxyError) as caught:
        CHAT_PROVIDER.decode_answer(raw, call=call())
    assert (caught.value.status, caught.value.message) == (
        502,
        "The provider sent a malformed response.",
    )


def test_it_turns_an_error_sent_with_a_200_into_a_failure() -> None:
    raw = b'{"error":{"message":"The engine is overloaded","type":"server_error"}}'
    with pytest.raises(ProxyError) as caught:
        CHAT_PROVIDER.decode_answer(raw, call=call())
    assert caught.value.status == 502 and caught.value.code == "upstream_error"
    assert caught.value.message == "The provider failed: The engine is overloaded"


# --- ChatProvider.decoder ------------------------------------------------------------------


def decode_stream(raw: bytes) -> tuple[list[Event], Any]:
    decoder = CHAT_PROVIDER.decoder(call=call(stream=True))
    events: list[Event] = []
    for event in SSEParser().feed(raw):
        events.extend(decoder.feed(event))
    return events, decoder


def test_it_decodes_a_stream_of_two_tool_calls() -> None:
    events, decoder = decode_stream((OPENAI_WIRE / "chat_stream_two_tools.sse").read_bytes())
    assert events[0] == Start("chatcmpl-D3kQ8vRt2LmXa9YwPz4NcB7eHfJ1s")
    assert events[1] == BlockStart(0, ToolUse("call_Qm7TzR2pXw9KdL4sVb8NcH1e", "get_weather", ""))
    weather = [e for e in events if isinstance(e, BlockDelta) and e.index == 0]
    assert "".join(e.value for e in weather) == WEATHER_ARGS and len(weather) == 6
    second = events.index(BlockStart(1, ToolUse("call_Hy3WcN8bLq5ZtR1mKd6PsV0a", "get_time", "")))
    assert all(not isinstance(e, BlockDelta) or e.index == 1 for e in events[second:])
    times = [e for e in events if isinstance(e, BlockDelta) and e.index == 1]
    assert "".join(e.value for e in times) == TIME_ARGS
    assert all(e.kind == "arguments" for e in weather + times)
    expected_usage = Usage(
        input_tokens=3190,
        output_tokens=284,
        cache_read_tokens=2048,
        reasoning_tokens=192,
        reported=True,
    )
    assert events[-4:] == [BlockStop(0), BlockStop(1), Finish("tool_use"), End(expected_usage)]
    assert decoder.complete and decoder.content_deltas == 11
    assert decoder.usage == expected_usage


def test_it_keeps_interleaved_tool_calls_apart() -> None:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        body = {"id": "c1", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        return b"data: " + json.dumps(body).encode() + b"\n\n"

    def tool(index: int, **fields: Any) -> dict[str, Any]:
        return {"tool_calls": [{"index": index, **fields}]}

    raw = b"".join(
        [
            chunk({"role": "assistant", "content": "Both: "}),
            chunk(tool(0, id="a", type="function", function={"name": "f", "arguments": ""})),
            chunk(
                {
                    "tool_calls": [
                        {
                            "index": 1,
                            "id": "b",
                            "type": "function",
                            "function": {"name": "g", "arguments": '{"y"'},
                        },
                        {"index": 0, "function": {"arguments": '{"x"'}},
                    ]
                }
            ),
            chunk(tool(0, function={"arguments": ":1}"})),
            chunk(tool(1, function={"arguments": ":2}"})),
            chunk({}, "tool_calls"),
            b'data: {"id":"c1","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":4}}\n\n',
            b"data: [DONE]\n\n",
        ]
    )
    events, decoder = decode_stream(raw)
    assert events == [
        Start("c1"),
        BlockStart(0, Text("")),
        BlockDelta(0, "text", "Both: "),
        BlockStart(1, ToolUse("a", "f", "")),
        BlockStart(2, ToolUse("b", "g", "")),
        BlockDelta(2, "arguments", '{"y"'),
        BlockDelta(1, "arguments", '{"x"'),
        BlockDelta(1, "arguments", ":1}"),
        BlockDelta(2, "arguments", ":2}"),
        BlockStop(0),
        BlockStop(1),
        BlockStop(2),
        Finish("tool_use"),
        End(Usage(input_tokens=9, output_tokens=4, reported=True)),
    ]
    assert decoder.content_deltas == 5


def test_it_tells_tool_calls_apart_by_id_when_the_server_sends_no_index() -> None:
    # Gemini's OpenAI endpoint and some vLLM parsers leave the index out and send each call
    # whole in its own chunk (Portkey #1275: both merged into one).
    def chunk(*entries: dict[str, Any], finish: str | None = None) -> bytes:
        delta = {"tool_calls": list(entries)} if entries else {}
        body = {"id": "c", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        return b"data: " + json.dumps(body).encode() + b"\n\n"

    def entry(arguments: str, *, name: str | None = None, **fields: Any) -> dict[str, Any]:
        function = {"arguments": arguments, **({"name": name} if name else {})}
        return {**fields, "function": function}

    raw = b"".join(
        [
            chunk(entry('{"city": ', id="call_a", type="function", name="f")),
            chunk(entry('"Paris"}')),  # no id: the same call goes on
            chunk(entry('{"tz": "UTC"}', id="call_b", type="function", name="g")),
            chunk(entry("", id="call_b")),  # its own id again: still the same call
            chunk(finish="tool_calls"),
            b"data: [DONE]\n\n",
        ]
    )
    events, decoder = decode_stream(raw)
    assert events[1:6] == [
        BlockStart(0, ToolUse("call_a", "f", "")),
        BlockDelta(0, "arguments", '{"city": '),
        BlockDelta(0, "arguments", '"Paris"}'),
        BlockStart(1, ToolUse("call_b", "g", "")),
        BlockDelta(1, "arguments", '{"tz": "UTC"}'),
    ]
    assert events[6:9] == [BlockStop(0), BlockStop(1), Finish("tool_use")]
    assert decoder.content_deltas == 3


@pytest.mark.parametrize(
    "failed",
    [
        # OpenRouter's: the error and the choice it cut short, in one chunk.
        {
            "id": "c",
            "error": {"code": "server_error", "message": "Provider disconnected"},
            "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}],
        },
        {"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "error"}]},
    ],
)
def test_it_raises_on_an_error_chunk_that_carries_choices(failed: dict[str, Any]) -> None:
    decoder = CHAT_PROVIDER.decoder(call=call(stream=True))
    decoder.feed(SSEEvent(b"", None, '{"id":"c","choices":[{"index":0,"delta":{"content":"a"}}]}'))
    with pytest.raises(ProxyError) as caught:
        decoder.feed(SSEEvent(b"", None, json.dumps(failed)))
    assert (caught.value.status, caught.value.code) == (502, "upstream_error")
    assert caught.value.message.startswith("The provider failed mid-stream")
    assert not decoder.complete


def test_it_decodes_moonshot_reasoning_before_the_text() -> None:
    events, decoder = decode_stream((OPENAI_WIRE / "moonshot_thinking_stream.sse").read_bytes())
    assert events[:3] == [
        Start("chatcmpl-6952b4e8a7c1d09f3e2b5a48"),
        BlockStart(0, Thinking("")),
        BlockDelta(0, "thinking", "The user"),
    ]
    thinking = "".join(
        e.value for e in events if isinstance(e, BlockDelta) and e.kind == "thinking"
    )
    assert thinking == "The user asks for the capital of France."
    stop = events.index(BlockStop(0))
    assert events[stop + 1] == BlockStart(1, Text(""))  # thinking closed before the text
    text = "".join(e.value for e in events if isinstance(e, BlockDelta) and e.kind == "text")
    assert text == "The capital of France is Paris."
    usage = Usage(input_tokens=21, output_tokens=19, reported=True)
    assert events[-3:] == [BlockStop(1), Finish("end_turn"), End(usage)]
    assert decoder.content_deltas == 7 and decoder.complete


def test_it_decodes_the_plain_recorded_streams() -> None:
    for name, text in [
        ("openai_chat_stream.sse", "The capital of France is Paris \u2014 la Ville Lumi\u00e8re."),
        ("moonshot_chat_stream.sse", "法国的首都是巴黎。"),
    ]:
        events, decoder = decode_stream((WIRE / name).read_bytes())
        assert "".join(e.value for e in events if isinstance(e, BlockDelta)) == text
        assert isinstance(events[-1], End) and events[-1].usage.reported
        assert decoder.complete


def test_it_closes_blocks_and_finishes_when_the_provider_never_says_why() -> None:
    raw = (
        b'data: {"id":"c","choices":[{"index":0,"delta":{"content":"Hi"}}]}\n\n'
        b": keep-alive\n\n"
        b"data: [DONE]\n\n"
    )
    events, decoder = decode_stream(raw)
    assert events == [
        Start("c"),
        BlockStart(0, Text("")),
        BlockDelta(0, "text", "Hi"),
        BlockStop(0),
        Finish("end_turn"),
        End(Usage()),
    ]
    assert decoder.complete and not decoder.usage.reported


def test_it_flags_a_stream_usage_it_cannot_trust() -> None:
    raw = (
        b'data: {"id":"c","choices":[{"delta":{"content":"Hi"},"finish_reason":"stop"}]}\n\n'
        b'data: {"id":"c","choices":[],"usage":{"prompt_tokens":"9","completion_tokens":4}}\n\n'
        b"data: [DONE]\n\n"
    )
    events, decoder = decode_stream(raw)
    assert decoder.usage.invalid and not decoder.usage.reported
    assert isinstance(events[-1], End) and events[-1].usage.invalid


def test_it_raises_on_a_provider_error_mid_stream() -> None:
    decoder = CHAT_PROVIDER.decoder(call=call(stream=True))
    decoder.feed(SSEEvent(b"", None, '{"id":"c","choices":[{"index":0,"delta":{"content":"a"}}]}'))
    with pytest.raises(ProxyError) as caught:
        decoder.feed(SSEEvent(b"", None, '{"error":{"message":"Server overloaded"}}'))
    assert caught.value.status == 502
    assert caught.value.message == "The provider failed mid-stream: Server overloaded"
    assert not decoder.complete


def test_it_raises_on_a_stream_event_that_is_not_json() -> None:
    decoder = CHAT_PROVIDER.decoder(call=call(stream=True))
    assert decoder.feed(SSEEvent(b": ping\n\n", None, None)) == []
    with pytest.raises(ProxyError) as caught:
        decoder.feed(SSEEvent(b"", None, "<html>502 Bad Gateway</html>"))
    assert (caught.value.status, caught.value.message) == (
        502,
        "The provider's stream carried an event that is not JSON.",
    )


def test_it_relays_a_provider_stream_to_an_openai_client_intact() -> None:
    # Both halves together (as an OpenAI client on a route speaking OpenAI would never need,
    # but each half is used across formats): what the SDK accumulates is what was sent.
    events, _ = decode_stream((OPENAI_WIRE / "chat_stream_two_tools.sse").read_bytes())
    raw = encode_stream(events, include_usage=True)
    final = accumulate(raw)
    message = final.choices[0].message
    assert tool_calls_of(message) == [
        ("call_Qm7TzR2pXw9KdL4sVb8NcH1e", "get_weather", WEATHER_ARGS),
        ("call_Hy3WcN8bLq5ZtR1mKd6PsV0a", "get_time", TIME_ARGS),
    ]
    assert final.usage is not None and final.usage.prompt_tokens == 3190
    assert final.usage.prompt_tokens_details is not None
    assert final.usage.prompt_tokens_details.cached_tokens == 2048
