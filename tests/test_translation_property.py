"""Translation keeps meaning: generated calls, answers and streams, through both directions.

Requests: an OpenAI chat request goes OpenAI -> internal (CHAT_CLIENT) -> Anthropic
(MESSAGES_PROVIDER) -> the Anthropic body, parsed as a client's (parse_messages_request) ->
internal (MESSAGES_CLIENT) -> OpenAI (CHAT_PROVIDER), and the request that comes out means
what the one that went in meant: the same system text, the same turns in order with the same
texts, images, tool calls (id, name, parsed arguments) and tool results (by id), the same
tools, tool choice, sampling, stop sequences, limit and user.

Answers and streams: an internal answer -> Anthropic's message JSON (MESSAGES_CLIENT) ->
internal (MESSAGES_PROVIDER) -> OpenAI's chat.completion (CHAT_CLIENT), and a stream of
internal events the same way through the encoders and decoders, keep text, tool calls, the
stop reason and usage; each intermediate is also read by the official SDK's own types (and,
for streams, the SDK's own accumulators).

What is representation only is normalised (`meaning`): a string content is its one text
part, consecutive messages of one role are one turn, `tool` messages are tool results in the
user's turn (Anthropic has nowhere else for them), an absent tool_choice with tools is
"auto" and parallel_tool_calls true is the default. What is not generated, because it is a
documented loss or a refusal rather than a translation (README, translation table): image
`detail` (no Anthropic equivalent, dropped towards Anthropic), temperature above 1 (clamped:
Anthropic's range is 0..1), top_p of 1 (dropped: it samples from everything), temperature
with top_p (a 400: Claude refuses the pair), whitespace-only stop sequences (a 400), and
texts with no visible character (Anthropic refuses empty text blocks).
"""

from __future__ import annotations

import base64
import itertools
import json
import string
from typing import Any

import pytest
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import Message, RawMessageStreamEvent
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from pydantic import TypeAdapter

from routing.codecs.anthropic_messages import MessagesRequest, parse_messages_request
from routing.codecs.base import Usage, dumps
from routing.codecs.chat_client import CHAT_CLIENT
from routing.codecs.chat_provider import CHAT_PROVIDER
from routing.codecs.messages_client import MESSAGES_CLIENT
from routing.codecs.messages_provider import MESSAGES_PROVIDER
from routing.codecs.model import (
    Answer,
    AnswerPart,
    BlockDelta,
    BlockStart,
    BlockStop,
    End,
    Event,
    Finish,
    InternalCall,
    Start,
    StopReason,
    Text,
    Thinking,
    ToolUse,
)
from routing.codecs.openai_chat import ChatRequest, parse_chat_request
from routing.sse import SSEEvent, SSEParser
from tests.support.routes import make_route

pytestmark = pytest.mark.core

PROPERTY = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ALLOWANCE = 4096  # what the reservation holds when the client set no limit
MAX_MESSAGES = 1000
ANTHROPIC_HEADERS = {"anthropic-version": "2023-06-01"}


ANTHROPIC_ROUTE = make_route(
    "anthropic", base_url="https://anthropic.invalid", upstream_model="claude-sonnet-4-5-20250929"
)
OPENAI_ROUTE = make_route("openai", base_url="https://openai.invalid", upstream_model="kimi-k2")

# --- generating OpenAI chat requests ------------------------------------------------------

# Visible text: Anthropic refuses text blocks that are empty or only whitespace.
texts = st.text(min_size=1, max_size=30).filter(lambda text: text.strip() != "")
ids = st.text(string.ascii_letters + string.digits, min_size=8, max_size=16).map(
    lambda tail: f"call_{tail}"
)
tool_names = st.from_regex(r"[a-zA-Z][a-zA-Z0-9_-]{0,24}", fullmatch=True)
# The proxy refuses a "__proto__" key in any client's JSON (routing/codecs/json_input.py: a
# JavaScript server in front of a provider may merge it into a prototype), so none is
# generated: the chain re-parses the Anthropic request as a client's.
keys = st.text(max_size=10).filter(lambda key: key != "__proto__")
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**9), 10**9)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3),
    max_leaves=8,
)
arguments = st.dictionaries(keys.filter(bool), json_values, max_size=4)
media_types = st.sampled_from(["image/png", "image/jpeg", "image/gif", "image/webp"])
data_urls = st.builds(
    lambda media, data: f"data:{media};base64,{base64.b64encode(data).decode()}",
    media_types,
    st.binary(min_size=1, max_size=24),
)
https_urls = st.from_regex(r"https://img\.example\.com/[a-z0-9]{1,12}\.png", fullmatch=True)
images = st.builds(
    lambda url: {"type": "image_url", "image_url": {"url": url}}, data_urls | https_urls
)
text_parts = st.builds(lambda text: {"type": "text", "text": text}, texts)
schemas = st.builds(
    lambda props, required: {
        "type": "object",
        "properties": {name: {"type": kind} for name, kind in props.items()},
        **({"required": sorted(props)[:1]} if required and props else {}),
    },
    st.dictionaries(
        st.from_regex(r"[a-z_]{1,10}", fullmatch=True).filter(lambda key: key != "__proto__"),
        st.sampled_from(["string", "integer", "number", "boolean"]),
        max_size=3,
    ),
    st.booleans(),
)


signatures = st.binary(min_size=8, max_size=32).map(lambda raw: base64.b64encode(raw).decode())
thinking_blocks = st.builds(
    lambda text, signature: {"type": "thinking", "thinking": text, "signature": signature},
    texts,
    signatures,
) | st.builds(lambda data: {"type": "redacted_thinking", "data": data}, signatures)


def text_content(draw: st.DrawFn) -> str | list[dict[str, Any]]:
    if draw(st.booleans()):
        return draw(texts)
    return draw(st.lists(text_parts, min_size=1, max_size=3))


@st.composite
def chat_requests(draw: st.DrawFn) -> dict[str, Any]:
    tools = draw(st.lists(tool_names, max_size=3, unique=True))
    body: dict[str, Any] = {"model": "claude-sonnet-4-5", "messages": []}
    messages: list[dict[str, Any]] = body["messages"]
    for _ in range(draw(st.integers(0, 2))):
        role = draw(st.sampled_from(["system", "developer"]))
        messages.append({"role": role, "content": text_content(draw)})

    # Turns: user, then assistant answers, tool results after tool calls; the conversation
    # ends with the user's turn (a user message or tool results), as an agent's does.
    state = "start"
    used: set[str] = set()  # tool call ids are unique in a conversation
    for _ in range(draw(st.integers(1, 5))):
        if state in ("start", "assistant"):
            step = "user"
        elif state == "user":
            step = draw(st.sampled_from(["assistant", "user"]))
        else:  # after tool results: the user adds to them, or the assistant goes on
            step = draw(st.sampled_from(["assistant", "user"]))
        if step == "user":
            if draw(st.booleans()):
                content: Any = draw(texts)
            else:
                content = draw(st.lists(text_parts | images, min_size=1, max_size=3))
            messages.append({"role": "user", "content": content})
            state = "user"
            continue
        assistant: dict[str, Any] = {"role": "assistant"}
        calls: list[dict[str, Any]] = []
        if tools:
            for _ in range(draw(st.integers(0, 3))):
                call_id = draw(ids.filter(lambda i: i not in used))
                used.add(call_id)
                calls.append(
                    {
                        "id": call_id,
                        "type": "function",
                        "function": {
                            "name": draw(st.sampled_from(tools)),
                            "arguments": json.dumps(draw(arguments)),
                        },
                    }
                )
        if not calls or draw(st.booleans()):
            assistant["content"] = (
                draw(texts) if draw(st.booleans()) else draw(st.lists(text_parts, min_size=1))
            )
        elif draw(st.booleans()):
            assistant["content"] = None
        if calls:
            assistant["tool_calls"] = calls
        if draw(st.booleans()):
            # An earlier answer's thinking, passed back as LiteLLM's thinking_blocks: signed
            # thinking and redacted thinking must reach Anthropic byte for byte.
            assistant["thinking_blocks"] = draw(st.lists(thinking_blocks, min_size=1, max_size=2))
        messages.append(assistant)
        for call in calls:
            messages.append(
                {"role": "tool", "tool_call_id": call["id"], "content": text_content(draw)}
            )
        state = "tools" if calls else "assistant"
    if state == "assistant":
        messages.append({"role": "user", "content": draw(texts)})

    if tools:
        definitions = []
        for name in tools:
            function: dict[str, Any] = {"name": name, "parameters": draw(schemas)}
            if draw(st.booleans()):
                function["description"] = draw(texts)
            definitions.append({"type": "function", "function": function})
        body["tools"] = definitions
        choice = draw(st.sampled_from([None, "auto", "none", "required", "named"]))
        if choice == "named":
            name = draw(st.sampled_from(tools))
            body["tool_choice"] = {"type": "function", "function": {"name": name}}
        elif choice is not None:
            body["tool_choice"] = choice
        parallel = draw(st.sampled_from([None, True, False]))
        if parallel is not None:
            body["parallel_tool_calls"] = parallel
    sampling = draw(st.sampled_from(["none", "temperature", "top_p"]))
    if sampling == "temperature":
        body["temperature"] = draw(st.floats(0, 1))
    elif sampling == "top_p":
        body["top_p"] = draw(st.floats(0, 1, exclude_max=True))
    stop = draw(st.none() | texts | st.lists(texts, min_size=1, max_size=4, unique=True))
    if stop is not None:
        body["stop"] = stop
    limit = draw(st.sampled_from([None, "max_tokens", "max_completion_tokens"]))
    if limit is not None:
        body[limit] = draw(st.integers(1, 100_000))
    if draw(st.booleans()):
        body["user"] = draw(st.text(string.ascii_letters + string.digits + "-_", min_size=1))
    if draw(st.booleans()):
        body["stream"] = True
    return body


# --- what a chat request means -------------------------------------------------------------


def _texts(content: Any) -> list[str]:
    if content is None:
        return []
    if isinstance(content, str):
        return [content]
    assert all(part["type"] == "text" for part in content), content
    return [part["text"] for part in content]


def _user_parts(content: Any) -> list[tuple[Any, ...]]:
    if isinstance(content, str):
        return [("text", content)]
    parts: list[tuple[Any, ...]] = []
    for part in content:
        if part["type"] == "text":
            parts.append(("text", part["text"]))
        else:
            assert part["type"] == "image_url", part
            parts.append(("image", part["image_url"]["url"]))
    return parts


def _thinking_texts(message: dict[str, Any]) -> list[str]:
    """An assistant message's thinking: its thinking_blocks (what a client passes back), or
    the reasoning_content that is all an OpenAI-compatible provider is sent. Redacted
    thinking has no text and OpenAI-compatible providers nowhere to take it: dropped there
    (README), so it counts in `thinking_sent` below, not here."""
    blocks = message.get("thinking_blocks")
    if blocks is not None:
        return [block["thinking"] for block in blocks if block["type"] == "thinking"]
    reasoning = message.get("reasoning_content")
    return [reasoning] if reasoning else []


def thinking_sent(body: dict[str, Any]) -> list[dict[str, Any]]:
    """Every thinking block of a conversation, in order: OpenAI thinking_blocks or
    Anthropic's own content blocks, which must be the same, signatures included."""
    found = []
    for message in body["messages"]:
        if message["role"] != "assistant":
            continue
        blocks = message.get("thinking_blocks") or message.get("content")
        for block in blocks if isinstance(blocks, list) else ():
            if block["type"] in ("thinking", "redacted_thinking"):
                found.append({k: v for k, v in block.items() if k != "cache_control"})
    return found


def meaning(body: dict[str, Any]) -> dict[str, Any]:
    """What a chat request asks for, without how it happens to be written."""
    system: list[str] = []
    turns: list[tuple[str, list[tuple[Any, ...]]]] = []
    for message in body["messages"]:
        role = message["role"]
        if role in ("system", "developer"):
            system.extend(_texts(message.get("content")))
            continue
        if role == "user":
            parts = _user_parts(message["content"])
        elif role == "assistant":
            parts = [("thinking", text) for text in _thinking_texts(message)]
            parts += [("text", text) for text in _texts(message.get("content")) if text]
            for call in message.get("tool_calls") or []:
                function = call["function"]
                assert call["type"] == "function"
                parts.append(
                    ("tool_use", call["id"], function["name"], json.loads(function["arguments"]))
                )
        else:
            assert role == "tool", message
            role = "user"
            # CHAT_PROVIDER sends a result's texts as one string, joined by a blank line.
            text = "\n\n".join(_texts(message["content"]))
            parts = [("tool_result", message["tool_call_id"], text)]
        if turns and turns[-1][0] == role:
            turns[-1][1].extend(parts)
        else:
            turns.append((role, parts))
    for index, (role, parts) in enumerate(turns):
        if role == "assistant":
            # So does it an assistant's texts (Moonshot and other OpenAI-compatible servers
            # take a string there), before its tool calls: representation, not meaning.
            # Thinking too: CHAT_PROVIDER sends it as reasoning_content, its texts joined.
            joined: list[tuple[Any, ...]] = []
            for kind in ("thinking", "text"):
                said = [part[1] for part in parts if part[0] == kind]
                joined += [(kind, "\n\n".join(said))] if said else []
            calls = [part for part in parts if part[0] == "tool_use"]
            turns[index] = (role, joined + calls)

    tools = [
        (
            tool["function"]["name"],
            tool["function"].get("description"),
            tool["function"].get("parameters", {"type": "object", "properties": {}}),
        )
        for tool in body.get("tools") or []
    ]
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        choice = ("tool", choice["function"]["name"])
    elif choice is None and tools:
        choice = "auto"  # OpenAI's default when tools are offered
    parallel = body.get("parallel_tool_calls")
    if parallel is None:
        parallel = True  # OpenAI's default
    if not tools or choice == "none":
        parallel = None  # no tool may be called: whether several may is moot
    stop = body.get("stop")
    limits = [body[name] for name in ("max_tokens", "max_completion_tokens") if name in body]
    return {
        # One system message, its texts joined by a blank line, is how CHAT_PROVIDER sends
        # several (some OpenAI-compatible servers take only a string there): representation.
        "system": "\n\n".join(system),
        "turns": turns,
        "tools": tools,
        "tool_choice": choice,
        "parallel_tool_calls": parallel,
        "temperature": body.get("temperature"),
        "top_p": body.get("top_p"),
        "stop": [stop] if isinstance(stop, str) else (stop or []),
        "max_tokens": min(limits, default=ALLOWANCE),
        "user": body.get("user"),
        "stream": body.get("stream", False),
    }


def chat_call(body: dict[str, Any]) -> ChatRequest:
    return parse_chat_request(dumps(body), max_messages=MAX_MESSAGES)


def messages_call(payload: dict[str, Any]) -> MessagesRequest:
    return parse_messages_request(
        dumps(payload), headers=ANTHROPIC_HEADERS, max_messages=MAX_MESSAGES
    )


def through_anthropic(body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the Anthropic request, the OpenAI request that comes back out of it)."""
    chat = chat_call(body)
    allowance = chat.max_tokens or ALLOWANCE
    upstream = MESSAGES_PROVIDER.encode(
        CHAT_CLIENT.decode(chat), route=ANTHROPIC_ROUTE, max_tokens=allowance
    )
    anthropic_body = upstream.payload
    internal = MESSAGES_CLIENT.decode(messages_call(anthropic_body))
    back = CHAT_PROVIDER.encode(internal, route=OPENAI_ROUTE, max_tokens=allowance).payload
    return anthropic_body, back


@PROPERTY
@given(chat_requests())
def test_it_keeps_the_meaning_of_a_request_through_anthropic_and_back(
    body: dict[str, Any],
) -> None:
    anthropic_body, back = through_anthropic(body)
    assert anthropic_body["model"] == ANTHROPIC_ROUTE.upstream_model
    assert back["model"] == OPENAI_ROUTE.upstream_model
    assert thinking_sent(anthropic_body) == thinking_sent(body)
    for message in anthropic_body["messages"]:
        # Anthropic wants an answer's thinking before the rest of it.
        kinds = [block["type"] for block in message["content"] if isinstance(block, dict)]
        thoughts = [kind in ("thinking", "redacted_thinking") for kind in kinds]
        assert thoughts == sorted(thoughts, reverse=True), kinds
    want, got = meaning(body), meaning(back)
    # Part by part, so that a failure says which mapping lost what.
    for key in want:
        assert got[key] == want[key], key


def test_it_keeps_each_kind_of_part_in_one_request() -> None:
    """One request with every kind of part, so a loss shows without shrinking."""
    body = {
        "model": "m",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Use tools."}]},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Look:"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0="}},
                    {"type": "image_url", "image_url": {"url": "https://img.example.com/a.png"}},
                ],
            },
            {
                "role": "assistant",
                "content": "Checking.",
                "tool_calls": [
                    {
                        "id": "call_a1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    },
                    {
                        "id": "call_b2",
                        "type": "function",
                        "function": {"name": "get_time", "arguments": "{}"},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "call_a1", "content": "18C"},
            {
                "role": "tool",
                "tool_call_id": "call_b2",
                "content": [{"type": "text", "text": "14:05"}],
            },
            {"role": "user", "content": "Thanks, and?"},
        ],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": "Weather.",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                },
            },
            {
                "type": "function",
                "function": {"name": "get_time", "parameters": {"type": "object"}},
            },
        ],
        "tool_choice": {"type": "function", "function": {"name": "get_time"}},
        "parallel_tool_calls": False,
        "temperature": 0.5,
        "stop": ["END", "STOP"],
        "max_completion_tokens": 300,
        "user": "end-user-7",
    }
    anthropic_body, back = through_anthropic(body)
    # The Anthropic request itself, as Anthropic documents it.
    assert anthropic_body["system"] in (
        "Be brief.\n\nUse tools.",
        [{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Use tools."}],
    )
    assert anthropic_body["tool_choice"] == {
        "type": "tool",
        "name": "get_time",
        "disable_parallel_tool_use": True,
    }
    assert anthropic_body["stop_sequences"] == ["END", "STOP"]
    assert anthropic_body["max_tokens"] == 300
    assert anthropic_body["metadata"] == {"user_id": "end-user-7"}
    user, assistant, results = anthropic_body["messages"]
    assert user["content"][1] == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0="},
    }
    assert user["content"][2] == {
        "type": "image",
        "source": {"type": "url", "url": "https://img.example.com/a.png"},
    }
    assert [b["type"] for b in assistant["content"]] == ["text", "tool_use", "tool_use"]
    assert assistant["content"][1]["input"] == {"city": "Paris"}
    assert [b["type"] for b in results["content"]] == ["tool_result", "tool_result", "text"]
    assert [b.get("tool_use_id") for b in results["content"][:2]] == ["call_a1", "call_b2"]
    assert meaning(back) == meaning(body)


# --- answers -------------------------------------------------------------------------------

STOP_REASONS: dict[str, str] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
}


@st.composite
def usages(draw: st.DrawFn) -> Usage:
    read = draw(st.integers(0, 10_000))
    write = draw(st.integers(0, 10_000))
    plain = draw(st.integers(0, 100_000))
    return Usage(
        input_tokens=plain + read + write,
        output_tokens=draw(st.integers(0, 100_000)),
        cache_read_tokens=read,
        cache_write_tokens=write,
        reported=True,
    )


@st.composite
def answers(draw: st.DrawFn) -> Answer:
    parts: list[AnswerPart] = []
    if draw(st.booleans()):
        # Anthropic's thinking comes first, with the signature a later turn must send back.
        signature = base64.b64encode(draw(st.binary(min_size=8, max_size=32))).decode()
        parts.append(Thinking(draw(texts), signature))
    if draw(st.booleans()):
        parts.append(Text(draw(texts)))
    used: set[str] = set()
    for _ in range(draw(st.integers(0, 3))):
        call_id = draw(ids.filter(lambda i: i not in used))
        used.add(call_id)
        parts.append(ToolUse(call_id, draw(tool_names), json.dumps(draw(arguments))))
    if not any(isinstance(part, Text | ToolUse) for part in parts):
        parts.append(Text(draw(texts)))
    stop: StopReason
    if any(isinstance(part, ToolUse) for part in parts):
        stop = "tool_use"
    else:
        stop = draw(st.sampled_from(["end_turn", "max_tokens", "stop_sequence"]))
    return Answer(
        id=draw(st.text(string.ascii_letters + string.digits, min_size=4, max_size=12)),
        parts=parts,
        stop_reason=stop,
        usage=draw(usages()),
        stop_sequence=draw(texts) if stop == "stop_sequence" else None,
    )


def requests_for(
    answer_parts: list[AnswerPart], *, stream: bool
) -> tuple[ChatRequest, MessagesRequest, InternalCall]:
    """The client requests the answer is to (tools offered for every call it makes)."""
    names = sorted({part.name for part in answer_parts if isinstance(part, ToolUse)})
    tools = [
        {"type": "function", "function": {"name": n, "parameters": {"type": "object"}}}
        for n in names
    ]
    body: dict[str, Any] = {"model": "auto", "messages": [{"role": "user", "content": "Go."}]}
    if tools:
        body["tools"] = tools
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    chat = chat_call(body)
    internal = CHAT_CLIENT.decode(chat)
    messages = messages_call(
        MESSAGES_PROVIDER.encode(internal, route=ANTHROPIC_ROUTE, max_tokens=ALLOWANCE).payload
    )
    return chat, messages, MESSAGES_CLIENT.decode(messages)


def tool_calls_of(parts: list[AnswerPart]) -> list[tuple[str, str, Any]]:
    return [(p.id, p.name, json.loads(p.arguments)) for p in parts if isinstance(p, ToolUse)]


def text_of(parts: list[AnswerPart]) -> str:
    return "".join(p.text for p in parts if isinstance(p, Text))


def thinking_of(parts: list[AnswerPart]) -> list[tuple[str, str | None]]:
    return [(p.text, p.signature) for p in parts if isinstance(p, Thinking)]


def check_openai_thinking(message: Any, parts: list[AnswerPart]) -> None:
    """Thinking reaches an OpenAI client as ``reasoning_content``, and its signature in
    ``thinking_blocks`` (LiteLLM's field), to be sent back in the next turn."""
    extra = message.model_extra or {}
    thinking = thinking_of(parts)
    if not thinking:
        assert "reasoning_content" not in extra and "thinking_blocks" not in extra
        return
    assert extra["reasoning_content"] == "".join(text for text, _ in thinking)
    blocks = [
        (block["type"], block["thinking"], block["signature"]) for block in extra["thinking_blocks"]
    ]
    assert blocks == [("thinking", text, signature) for text, signature in thinking]


def check_openai_usage(usage: Any, want: Usage) -> None:
    assert usage is not None
    assert usage.prompt_tokens == want.input_tokens  # cached ones included
    assert usage.completion_tokens == want.output_tokens
    assert usage.total_tokens == want.input_tokens + want.output_tokens
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == want.cache_read_tokens


def check_anthropic_usage(usage: Any, want: Usage) -> None:
    # Anthropic's input_tokens leaves out the prompt tokens read from or written to the cache.
    assert (
        usage.input_tokens == want.input_tokens - want.cache_read_tokens - want.cache_write_tokens
    )
    assert usage.cache_read_input_tokens == want.cache_read_tokens
    assert usage.cache_creation_input_tokens == want.cache_write_tokens
    assert usage.output_tokens == want.output_tokens


@PROPERTY
@given(answers())
def test_it_keeps_an_answer_through_anthropic_into_openai(answer: Answer) -> None:
    chat, messages, internal = requests_for(answer.parts, stream=False)
    anthropic_json = MESSAGES_CLIENT.encode_answer(answer, call=messages, model="claude-x")
    message = Message.model_validate_json(anthropic_json)
    assert message.model == "claude-x"
    assert message.stop_reason == answer.stop_reason
    assert message.stop_sequence == answer.stop_sequence
    check_anthropic_usage(message.usage, answer.usage)

    assert [(b.thinking, b.signature) for b in message.content if b.type == "thinking"] == (
        thinking_of(answer.parts)
    )

    decoded = MESSAGES_PROVIDER.decode_answer(anthropic_json, call=internal)
    assert thinking_of(decoded.parts) == thinking_of(answer.parts)
    assert text_of(decoded.parts) == text_of(answer.parts)
    assert tool_calls_of(decoded.parts) == tool_calls_of(answer.parts)
    assert decoded.stop_reason == answer.stop_reason
    assert decoded.stop_sequence == answer.stop_sequence
    got = decoded.usage
    assert (got.input_tokens, got.output_tokens, got.cache_read_tokens, got.cache_write_tokens) == (
        answer.usage.input_tokens,
        answer.usage.output_tokens,
        answer.usage.cache_read_tokens,
        answer.usage.cache_write_tokens,
    )
    assert got.reported and not got.invalid

    completion = ChatCompletion.model_validate_json(
        CHAT_CLIENT.encode_answer(decoded, call=chat, model="auto")
    )
    assert completion.model == "auto"
    [choice] = completion.choices
    assert (choice.message.content or "") == text_of(answer.parts)
    calls = [
        (call.id, call.function.name, json.loads(call.function.arguments))
        for call in choice.message.tool_calls or []
        if call.type == "function"
    ]
    assert calls == tool_calls_of(answer.parts)
    check_openai_thinking(choice.message, answer.parts)
    assert choice.finish_reason == STOP_REASONS[answer.stop_reason]
    check_openai_usage(completion.usage, answer.usage)


# --- streams -------------------------------------------------------------------------------


def pieces(draw: st.DrawFn, text: str) -> list[str]:
    """``text`` cut at generated places (each piece non-empty)."""
    if len(text) < 2:
        return [text]
    cuts = sorted(draw(st.sets(st.integers(1, len(text) - 1), max_size=4)))
    bounds = [0, *cuts, len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds)]


@st.composite
def streams(draw: st.DrawFn) -> tuple[Answer, list[Event]]:
    """An answer and a stream of it: blocks in order, tool blocks possibly interleaved (as
    OpenAI streams parallel tool calls), usage known in part at the start."""
    answer = draw(answers())
    events: list[Event] = [
        Start(
            answer.id,
            usage=Usage(
                input_tokens=answer.usage.input_tokens,
                cache_read_tokens=answer.usage.cache_read_tokens,
                cache_write_tokens=answer.usage.cache_write_tokens,
            ),
        )
    ]
    per_block: list[list[Event]] = []
    for index, part in enumerate(answer.parts):
        if isinstance(part, Text):
            block: list[Event] = [BlockStart(index, Text(""))]
            block += [BlockDelta(index, "text", piece) for piece in pieces(draw, part.text)]
        elif isinstance(part, Thinking):
            block = [BlockStart(index, Thinking(""))]
            block += [BlockDelta(index, "thinking", piece) for piece in pieces(draw, part.text)]
            block.append(BlockDelta(index, "signature", part.signature or ""))
        else:
            assert isinstance(part, ToolUse)
            block = [BlockStart(index, ToolUse(part.id, part.name, ""))]
            block += [BlockDelta(index, "arguments", p) for p in pieces(draw, part.arguments)]
        per_block.append([*block, BlockStop(index)])
    if draw(st.booleans()):
        # Interleave: any order that keeps each block's own order and starts in index order.
        queues = [list(block) for block in per_block]
        started = 0
        while any(queues):
            ready = [i for i, q in enumerate(queues) if q and (i < started or i == started)]
            i = draw(st.sampled_from(ready))
            event = queues[i].pop(0)
            if isinstance(event, BlockStart):
                started += 1
            events.append(event)
    else:
        for block in per_block:
            events += block
    events.append(Finish(answer.stop_reason, answer.stop_sequence))
    events.append(End(answer.usage))
    return answer, events


def sse_events(data: bytes) -> list[SSEEvent]:
    parser = SSEParser()
    return parser.feed(data)


RAW_EVENT = TypeAdapter[RawMessageStreamEvent](RawMessageStreamEvent)


@PROPERTY
@given(streams())
def test_it_keeps_a_stream_through_anthropic_into_openai(
    stream: tuple[Answer, list[Event]],
) -> None:
    answer, events = stream
    chat, messages, internal = requests_for(answer.parts, stream=True)

    encoder = MESSAGES_CLIENT.encoder(call=messages, model="claude-x")
    anthropic_sse = b"".join(encoder.feed(event) for event in events)
    # What an Anthropic client reads of it, through the SDK's own accumulator.
    snapshot = None
    buffers: dict[int, bytes] = {}
    received = sse_events(anthropic_sse)
    for event in received:
        assert event.data is not None
        if event.event == "ping":
            continue  # Anthropic's keep-alive, which its SDK skips too
        raw = RAW_EVENT.validate_json(event.data)
        assert event.event == raw.type
        snapshot = accumulate_event(event=raw, current_snapshot=snapshot, json_bufs=buffers)
    assert snapshot is not None
    kinds = {Text: "text", Thinking: "thinking", ToolUse: "tool_use"}
    assert [b.type for b in snapshot.content] == [kinds[type(p)] for p in answer.parts]
    assert [
        (b.thinking, b.signature) for b in snapshot.content if b.type == "thinking"
    ] == thinking_of(answer.parts)
    assert "".join(b.text for b in snapshot.content if b.type == "text") == text_of(answer.parts)
    assert [
        (b.id, b.name, b.input) for b in snapshot.content if b.type == "tool_use"
    ] == tool_calls_of(answer.parts)
    assert snapshot.stop_reason == answer.stop_reason
    assert snapshot.stop_sequence == answer.stop_sequence
    check_anthropic_usage(snapshot.usage, answer.usage)

    decoder = MESSAGES_PROVIDER.decoder(call=internal)
    internal_events = [out for event in received for out in decoder.feed(event)]
    assert decoder.complete
    assert decoder.usage.input_tokens == answer.usage.input_tokens
    assert decoder.usage.output_tokens == answer.usage.output_tokens
    assert decoder.usage.cache_read_tokens == answer.usage.cache_read_tokens
    assert decoder.usage.cache_write_tokens == answer.usage.cache_write_tokens
    assert isinstance(internal_events[0], Start) and isinstance(internal_events[-1], End)

    chat_encoder = CHAT_CLIENT.encoder(call=chat, model="auto")
    openai_sse = b"".join(chat_encoder.feed(event) for event in internal_events)
    chunks = sse_events(openai_sse)
    assert chunks[-1].data == "[DONE]"
    state = ChatCompletionStreamState()
    usage_chunks = []
    for event in chunks[:-1]:
        assert event.data is not None
        chunk = ChatCompletionChunk.model_validate_json(event.data)
        assert chunk.model == "auto"
        if chunk.usage is not None:
            usage_chunks.append(chunk)
        state.handle_chunk(chunk)
    assert len(usage_chunks) == 1 and usage_chunks[0].choices == []
    # The snapshot, not get_final_completion(), which raises on finish_reason "length".
    completion = state.current_completion_snapshot
    [choice] = completion.choices
    assert (choice.message.content or "") == text_of(answer.parts)
    calls = [
        (call.id, call.function.name, json.loads(call.function.arguments))
        for call in choice.message.tool_calls or []
    ]
    assert calls == tool_calls_of(answer.parts)
    check_openai_thinking(choice.message, answer.parts)
    assert choice.finish_reason == STOP_REASONS[answer.stop_reason]
    check_openai_usage(completion.usage, answer.usage)
