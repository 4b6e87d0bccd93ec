"""Clients speaking Anthropic Messages whose request goes to an OpenAI-compatible route.

The client half of that translation: the request into the internal model
(routing/codecs/model.py), the answer and the stream back out in Anthropic's shape.

| Anthropic request | internal model | notes |
|---|---|---|
| `system` string / text blocks | `system: [Text]` | `cache_control` kept |
| content string, `text` block | `Text` | `cache_control` kept, `citations` dropped |
| `image`, base64 / url source | `Image(media_type, data)` / `Image(url)` | `file` source: 400 |
| `tool_use` (assistant) | `ToolUse(id, name, arguments)` | `input` as compact JSON |
| `tool_result` (user) | `ToolResult(tool_use_id, content, is_error)` | text and images |
| `thinking`, `redacted_thinking` | `Thinking(text, signature)`, `RedactedThinking` | |
| `document`, `search_result`, ... | 400 naming `messages[i].content[j]` | |
| custom `tools[]` | `Tool(name, description, parameters, strict)` | `cache_control` kept |
| server tools (`web_search_*`, `bash_*`, ...) | 400 naming `tools[i]` | Anthropic runs them |
| `tool_choice` auto/any/none/tool | `ToolChoice` auto/required/none/tool | |
| `disable_parallel_tool_use` | `parallel_tool_calls=False` | |
| `temperature`, `top_p`, `top_k` | `Sampling` | |
| `stop_sequences` | `Sampling.stop` | |
| `max_tokens`, `stream` | `max_tokens`, `stream` | |
| `metadata.user_id` | `user` | |
| `thinking` enabled/adaptive/disabled | `Reasoning(budget_tokens, enabled)` | see below |
| `output_config.effort` | `Reasoning.effort` | xhigh and max -> high |
| `output_config.format` json_schema | `ResponseFormat(json_schema, strict=True)` | |
| `context_management`, `cache_control`, ... | dropped | ``DROPPED_HINTS`` says why |
| `container`, `mcp_servers`, new fields | 400 `unsupported_for_provider` | |

The provider side maps ``Reasoning`` to its own knob (``reasoning_effort``) or drops it.

Answers: a `message` object with the parts as content blocks, the stop reason and usage
split back the Anthropic way (`input_tokens` without the cache counts, which are reported
apart; reasoning tokens as `output_tokens_details.thinking_tokens`). Streams: Anthropic's
events, one block open at a time (see :class:`MessagesEncoder`).

Tool arguments that are not a JSON object (a model's broken JSON, or a list) cannot be an
Anthropic `input`. A whole answer carries them as ``{"_raw_arguments": "<the text>"}``
rather than ``{}`` (LiteLLM #25321: the call then runs with no input and nobody learns
why): the client's tool validation fails visibly and the model sees its own text in the
error. A stream passes argument pieces on as they come, exactly as Anthropic's own
fine-grained tool streaming does (which may also end in invalid JSON).
"""

from __future__ import annotations

import json
from typing import Any, NoReturn

from core.errors import ProxyError
from routing.codecs.anthropic_messages import MessagesRequest
from routing.codecs.base import Usage, dumps
from routing.codecs.model import (
    Answer,
    AnswerPart,
    BlockDelta,
    BlockStart,
    BlockStop,
    End,
    Event,
    Finish,
    Image,
    InternalCall,
    Message,
    Part,
    Reasoning,
    RedactedThinking,
    ResponseFormat,
    Sampling,
    Start,
    StopReason,
    Text,
    Thinking,
    Tool,
    ToolChoice,
    ToolResult,
    ToolUse,
)

# Anthropic-only hints an OpenAI-compatible provider has no use for: dropped, with why.
DROPPED_HINTS: dict[str, str] = {
    "cache_control": (
        "prompt-caching breakpoints (top level, and on blocks and tools): OpenAI-compatible "
        "providers cache prompt prefixes on their own; kept in the internal model, unsent"
    ),
    "context_management": (
        "server-side context editing (clearing old thinking or tool results): the provider "
        "gets the conversation as sent, which editing could only have shortened"
    ),
    "thinking": (
        "mapped to Reasoning; a provider with no thinking budget knob drops it (the answer "
        "simply has no thinking blocks)"
    ),
    "thinking.display": "whether Anthropic summarises or omits thinking text in the answer",
    "output_config.effort": "mapped to Reasoning.effort; a provider without the knob drops it",
    "service_tier": "which Anthropic capacity serves the call; the route's own tier serves it",
    "speed": "Anthropic's fast-output mode; the route's model runs at its own speed",
    "diagnostics": "Anthropic's prompt-cache diagnostics; the answer carries none",
    "messages.content.citations": "citations of an earlier answer's text: the text is kept",
    "tools.input_examples": "example inputs: the schema and description carry the contract",
    "tools.eager_input_streaming": "tool-input streaming granularity",
    "tools.allowed_callers": "only `direct` callers exist without Anthropic's code execution",
}
_DROPPED_FIELDS = frozenset(
    {"context_management", "cache_control", "service_tier", "speed", "diagnostics"}
)
_HANDLED_FIELDS = frozenset(
    {
        "model", "messages", "max_tokens", "system", "stream", "temperature", "top_p",
        "top_k", "stop_sequences", "tools", "tool_choice", "metadata", "thinking",
        "output_config", "output_format",
    }
)  # fmt: skip
_TOOL_FIELDS = frozenset(
    {
        "type", "name", "description", "input_schema", "cache_control", "strict",
        "defer_loading", "input_examples", "eager_input_streaming", "allowed_callers",
    }
)  # fmt: skip
_EFFORTS = {"low": "low", "medium": "medium", "high": "high", "xhigh": "high", "max": "high"}
_CHOICES = {"auto": "auto", "any": "required", "none": "none", "tool": "tool"}
RAW_ARGUMENTS_KEY = "_raw_arguments"  # where arguments that are no JSON object are kept


def _refuse(what: str, *, param: str) -> NoReturn:
    raise ProxyError(
        400,
        f"{what} is not supported for this model (its provider speaks the OpenAI API).",
        code="unsupported_for_provider",
        param=param,
    )


def _bad(message: str, *, param: str) -> NoReturn:
    raise ProxyError(400, message, code="invalid_request", param=param)


def _cache(block: dict[str, Any]) -> dict[str, Any] | None:
    value = block.get("cache_control")
    return value if isinstance(value, dict) else None


def _image(block: dict[str, Any], where: str) -> Image:
    source = block.get("source")
    kind = source.get("type") if isinstance(source, dict) else None
    if kind == "base64" and isinstance(source, dict):
        media_type, data = source.get("media_type"), source.get("data")
        if not isinstance(media_type, str) or not isinstance(data, str):
            _bad(f"{where}.source needs a media_type and base64 data.", param=where)
        return Image(media_type=media_type, data=data, cache_control=_cache(block))
    if kind == "url" and isinstance(source, dict):
        url = source.get("url")
        if not isinstance(url, str):
            _bad(f"{where}.source.url must be a string.", param=where)
        return Image(url=url, cache_control=_cache(block))
    _refuse(f"An image with a `{kind}` source ({where})", param=where)


def _tool_result_content(content: Any, where: str) -> list[Text | Image]:
    if content is None:
        return []
    if isinstance(content, str):
        return [Text(content)]
    if not isinstance(content, list):
        _bad(f"{where}.content must be a string or a list of blocks.", param=where)
    parts: list[Text | Image] = []
    for index, block in enumerate(content):
        at = f"{where}.content[{index}]"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text" and isinstance(block, dict) and isinstance(block.get("text"), str):
            parts.append(Text(block["text"], cache_control=_cache(block)))
        elif kind == "image" and isinstance(block, dict):
            parts.append(_image(block, at))
        else:
            _refuse(f"A `{kind}` block in a tool result ({at})", param=at)
    return parts


def _part(block: dict[str, Any], *, role: str, where: str) -> Part:
    kind = block["type"]
    if kind == "text":
        return Text(block["text"], cache_control=_cache(block))
    if kind == "image":
        return _image(block, where)
    if kind == "tool_use":
        if role != "assistant":
            _bad(f"{where}: tool_use blocks belong in assistant messages.", param=where)
        tool_id, name, tool_input = block.get("id"), block.get("name"), block.get("input", {})
        if not isinstance(tool_id, str) or not isinstance(name, str):
            _bad(f"{where}: a tool_use block needs a string id and name.", param=where)
        if not isinstance(tool_input, dict):
            _bad(f"{where}.input must be an object.", param=where)
        arguments = json.dumps(tool_input, separators=(",", ":"), ensure_ascii=False)
        return ToolUse(tool_id, name, arguments, cache_control=_cache(block))
    if kind == "tool_result":
        if role != "user":
            _bad(f"{where}: tool_result blocks belong in user messages.", param=where)
        tool_use_id, is_error = block.get("tool_use_id"), block.get("is_error", False)
        if not isinstance(tool_use_id, str):
            _bad(f"{where}.tool_use_id must be a string.", param=where)
        if not isinstance(is_error, bool):
            _bad(f"{where}.is_error must be a boolean.", param=where)
        return ToolResult(
            tool_use_id,
            _tool_result_content(block.get("content"), where),
            is_error=is_error,
            cache_control=_cache(block),
        )
    if kind == "thinking":
        text, signature = block.get("thinking"), block.get("signature")
        if not isinstance(text, str):
            _bad(f"{where}.thinking must be a string.", param=where)
        return Thinking(text, signature if isinstance(signature, str) else None)
    if kind == "redacted_thinking":
        data = block.get("data")
        if not isinstance(data, str):
            _bad(f"{where}.data must be a string.", param=where)
        return RedactedThinking(data)
    _refuse(f"A `{kind}` content block ({where})", param=where)


def _messages(raw: list[dict[str, Any]]) -> list[Message]:
    messages = []
    for i, message in enumerate(raw):
        role = message["role"]
        content = message["content"]
        if isinstance(content, str):
            parts: list[Part] = [Text(content)]
        else:
            parts = [
                _part(block, role=role, where=f"messages[{i}].content[{j}]")
                for j, block in enumerate(content)
            ]
        messages.append(Message(role=role, parts=parts))
    return messages


def _system(system: Any) -> list[Text]:
    if system is None:
        return []
    if isinstance(system, str):
        return [Text(system)] if system else []
    return [Text(block["text"], cache_control=_cache(block)) for block in system]


def _tools(raw: Any) -> list[Tool]:
    tools = []
    for index, tool in enumerate(raw or ()):
        where = f"tools[{index}]"
        kind = tool.get("type")
        if kind not in (None, "custom"):
            _refuse(f"The Anthropic server tool `{kind}` ({where})", param=where)
        name, schema = tool.get("name"), tool.get("input_schema")
        if not isinstance(name, str) or not name:
            _bad(f"{where}.name must be a non-empty string.", param=where)
        if not isinstance(schema, dict):
            _bad(f"{where}.input_schema must be an object.", param=where)
        for key in tool:
            if key not in _TOOL_FIELDS:
                _refuse(f"`{where}.{key}`", param=f"{where}.{key}")
        if tool.get("defer_loading"):
            # Deferred tools are found by Anthropic's tool search, which cannot run here.
            _refuse(f"`defer_loading` ({where})", param=where)
        description = tool.get("description")
        strict = tool.get("strict")
        tools.append(
            Tool(
                name=name,
                description=description if isinstance(description, str) else None,
                parameters=schema,
                strict=strict if isinstance(strict, bool) else None,
                cache_control=_cache(tool),
            )
        )
    return tools


def _tool_choice(raw: Any) -> tuple[ToolChoice | None, bool | None]:
    if raw is None:
        return None, None
    kind = raw.get("type")
    mode = _CHOICES.get(kind) if isinstance(kind, str) else None
    if mode is None:
        _bad("tool_choice.type must be auto, any, none or tool.", param="tool_choice")
    name = raw.get("name")
    if mode == "tool" and (not isinstance(name, str) or not name):
        _bad("tool_choice.name is required for type tool.", param="tool_choice")
    parallel = False if raw.get("disable_parallel_tool_use") is True else None
    choice = ToolChoice(mode, name if mode == "tool" else None)  # type: ignore[arg-type]
    return choice, parallel


def _reasoning(thinking: Any, effort: Any) -> Reasoning | None:
    reasoning: Reasoning | None = None
    if thinking is not None:
        kind = thinking.get("type")
        if kind == "enabled":
            budget = thinking.get("budget_tokens")
            if not isinstance(budget, int) or isinstance(budget, bool) or budget < 1024:
                _bad("thinking.budget_tokens must be an integer >= 1024.", param="thinking")
            reasoning = Reasoning(budget_tokens=budget)
        elif kind in ("adaptive", "between_tools"):
            reasoning = Reasoning()
        elif kind == "disabled":
            reasoning = Reasoning(enabled=False)
        else:
            _bad("thinking.type must be enabled, adaptive or disabled.", param="thinking")
    if effort is not None:
        mapped = _EFFORTS.get(effort) if isinstance(effort, str) else None
        if mapped is None:
            _bad(
                "output_config.effort must be low, medium, high, xhigh or max.",
                param="output_config.effort",
            )
        if reasoning is None:
            reasoning = Reasoning(effort=mapped)
        else:
            reasoning.effort = mapped
    return reasoning


def _response_format(body: dict[str, Any]) -> ResponseFormat | None:
    config = body.get("output_config")
    if config is not None and not isinstance(config, dict):
        _bad("output_config must be an object.", param="output_config")
    for key in config or {}:
        if key not in ("effort", "format"):
            _refuse(f"`output_config.{key}`", param=f"output_config.{key}")
    fmt, where = (config or {}).get("format"), "output_config.format"
    if fmt is None and body.get("output_format") is not None:
        # The structured-outputs beta's spelling, before output_config.
        fmt, where = body["output_format"], "output_format"
    if fmt is None:
        return None
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
        _bad(f"{where}.type must be json_schema.", param=where)
    schema = fmt.get("schema")
    if not isinstance(schema, dict):
        _bad(f"{where}.schema must be an object.", param=where)
    # Anthropic's structured outputs are always constrained: the strict kind.
    return ResponseFormat(kind="json_schema", schema=schema, strict=True)


def _arguments_object(arguments: str) -> dict[str, Any]:
    """A tool call's arguments as Anthropic's ``input`` object (see the module docstring)."""
    if not arguments.strip():
        return {}  # OpenAI-compatible providers send "" for a call without arguments
    try:
        value = json.loads(arguments)
    except ValueError:
        value = None
    if isinstance(value, dict):
        return value
    return {RAW_ARGUMENTS_KEY: arguments}


def _message_id(answer_id: str) -> str:
    return answer_id if answer_id.startswith("msg_") else f"msg_{answer_id}"


def _usage_json(usage: Usage) -> dict[str, Any]:
    cached = usage.cache_read_tokens + usage.cache_write_tokens
    out: dict[str, Any] = {
        "input_tokens": max(usage.input_tokens - cached, 0),
        "cache_creation_input_tokens": usage.cache_write_tokens,
        "cache_read_input_tokens": usage.cache_read_tokens,
        "output_tokens": usage.output_tokens,
    }
    if usage.reasoning_tokens:
        # The provider's reasoning tokens (OpenAI's completion_tokens_details), counted in
        # output_tokens as Anthropic counts thinking: the anthropic SDK's
        # usage.output_tokens_details.thinking_tokens.
        out["output_tokens_details"] = {"thinking_tokens": usage.reasoning_tokens}
    return out


def _block(part: AnswerPart) -> dict[str, Any]:
    if isinstance(part, Text):
        return {"type": "text", "text": part.text}
    if isinstance(part, ToolUse):
        return {
            "type": "tool_use",
            "id": part.id,
            "name": part.name,
            "input": _arguments_object(part.arguments),
        }
    if isinstance(part, Thinking):
        return {"type": "thinking", "thinking": part.text, "signature": part.signature or ""}
    return {"type": "redacted_thinking", "data": part.data}


def _event(kind: str, payload: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + dumps({"type": kind, **payload}) + b"\n\n"


_DELTAS = {
    "text": ("text_delta", "text"),
    "arguments": ("input_json_delta", "partial_json"),
    "thinking": ("thinking_delta", "thinking"),
    "signature": ("signature_delta", "signature"),
}


class _Pending:
    """A block that started while another was open: held until its turn."""

    __slots__ = ("deltas", "part", "stopped")

    def __init__(self, part: AnswerPart) -> None:
        self.part = part
        self.deltas: list[BlockDelta] = []
        self.stopped = False


class MessagesEncoder:
    """Internal stream events in, Anthropic's SSE out, exactly as Anthropic frames them.

    Anthropic's blocks never interleave: each starts, streams and stops before the next
    starts, with indexes 0, 1, 2... (the SDKs accumulate deltas by index into the last
    block started). The internal stream may interleave (OpenAI's parallel tool calls), so
    a block that starts while another is open is held, its deltas buffered, and sent whole
    when its turn comes; the first block streams live.
    """

    def __init__(self, *, model: str) -> None:
        self.model = model
        self._started = False
        self._finished = False
        self._open: int | None = None  # the internal index of the block streaming now
        self._next = 0  # Anthropic's index for the next block
        self._indexes: dict[int, int] = {}  # internal index -> Anthropic's
        self._pending: dict[int, _Pending] = {}  # in start order (dicts keep it)
        self._stop_reason: StopReason = "end_turn"
        self._stop_sequence: str | None = None

    def error_event(self, error: ProxyError) -> bytes | None:
        return None  # the client codec's own error event ends the stream

    def feed(self, event: Event) -> bytes:
        if isinstance(event, Start):
            return self._start(event.id, event.usage)
        out = b"" if self._started else self._start("unknown", None)
        if self._finished:
            return out
        if isinstance(event, BlockStart):
            if self._open is None and not self._pending:
                out += self._open_block(event.index, event.part)
            else:
                self._pending[event.index] = _Pending(event.part)
        elif isinstance(event, BlockDelta):
            if event.index == self._open:
                out += self._delta(event)
            elif event.index in self._pending:
                self._pending[event.index].deltas.append(event)
        elif isinstance(event, BlockStop):
            if event.index == self._open:
                out += self._close() + self._drain(everything=False)
            elif event.index in self._pending:
                self._pending[event.index].stopped = True
        elif isinstance(event, Finish):
            self._stop_reason, self._stop_sequence = event.stop_reason, event.stop_sequence
        elif isinstance(event, End):
            out += self._close() + self._drain(everything=True)
            self._finished = True
            out += _event(
                "message_delta",
                {
                    "delta": {
                        "stop_reason": self._stop_reason,
                        "stop_sequence": self._stop_sequence,
                    },
                    # The full usage (Envoy AI Gateway #2352 zeroed it): the SDKs take the
                    # input and cache counts from here when present.
                    "usage": _usage_json(event.usage),
                },
            )
            out += _event("message_stop", {})
        return out

    def _start(self, message_id: str, usage: Usage | None) -> bytes:
        if self._started:
            return b""
        self._started = True
        start_usage = _usage_json(usage or Usage())
        # Anthropic's message_start counts the first output token already.
        start_usage["output_tokens"] = max(start_usage["output_tokens"], 1)
        message: dict[str, Any] = {
            "model": self.model,
            "id": _message_id(message_id),
            "type": "message",
            "role": "assistant",
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": start_usage,
        }
        # Anthropic sends a ping right after message_start.
        return _event("message_start", {"message": message}) + _event("ping", {})

    def _open_block(self, index: int, part: AnswerPart) -> bytes:
        self._open = index
        self._indexes[index] = self._next
        self._next += 1
        out = _event(
            "content_block_start", {"index": self._indexes[index], "content_block": _start_of(part)}
        )
        # A block that begins with content (rare) gets it as its first delta.
        if isinstance(part, Text) and part.text:
            out += self._delta(BlockDelta(index, "text", part.text))
        elif isinstance(part, ToolUse) and part.arguments:
            out += self._delta(BlockDelta(index, "arguments", part.arguments))
        elif isinstance(part, Thinking):
            if part.text:
                out += self._delta(BlockDelta(index, "thinking", part.text))
            if part.signature:
                out += self._delta(BlockDelta(index, "signature", part.signature))
        return out

    def _delta(self, delta: BlockDelta) -> bytes:
        if not delta.value and delta.kind != "signature":
            return b""
        kind, key = _DELTAS[delta.kind]
        return _event(
            "content_block_delta",
            {"index": self._indexes[delta.index], "delta": {"type": kind, key: delta.value}},
        )

    def _close(self) -> bytes:
        if self._open is None:
            return b""
        index, self._open = self._indexes[self._open], None
        return _event("content_block_stop", {"index": index})

    def _drain(self, *, everything: bool) -> bytes:
        """Held blocks, in start order, while each has stopped (or all, at the end)."""
        out = b""
        while self._pending and self._open is None:
            index = next(iter(self._pending))
            held = self._pending.pop(index)
            out += self._open_block(index, held.part)
            for delta in held.deltas:
                out += self._delta(delta)
            if held.stopped or everything:
                out += self._close()
        return out


def _start_of(part: AnswerPart) -> dict[str, Any]:
    if isinstance(part, Text):
        return {"type": "text", "text": ""}
    if isinstance(part, ToolUse):
        return {"type": "tool_use", "id": part.id, "name": part.name, "input": {}}
    if isinstance(part, Thinking):
        return {"type": "thinking", "thinking": "", "signature": ""}
    return {"type": "redacted_thinking", "data": part.data}


class MessagesClient:
    """The Anthropic Messages client side of a translation (see the module docstring)."""

    def decode(self, call: MessagesRequest) -> InternalCall:
        body = call.body
        for name in body:
            if name not in _HANDLED_FIELDS and name not in _DROPPED_FIELDS:
                _refuse(f"`{name}`", param=name)
        metadata = body.get("metadata") or {}
        user = metadata.get("user_id")
        choice, parallel = _tool_choice(body.get("tool_choice"))
        output_config = body.get("output_config")
        effort = output_config.get("effort") if isinstance(output_config, dict) else None
        return InternalCall(
            model=call.model,
            stream=call.stream,
            messages=_messages(call.messages),
            system=_system(body.get("system")),
            tools=_tools(body.get("tools")),
            tool_choice=choice,
            parallel_tool_calls=parallel,
            sampling=Sampling(
                temperature=body.get("temperature"),
                top_p=body.get("top_p"),
                top_k=body.get("top_k"),
                stop=list(body.get("stop_sequences") or ()),
            ),
            max_tokens=call.max_tokens,
            response_format=_response_format(body),
            reasoning=_reasoning(body.get("thinking"), effort),
            user=user if isinstance(user, str) else None,
        )

    def encode_answer(self, answer: Answer, *, call: MessagesRequest, model: str) -> bytes:
        message = {
            "model": model,
            "id": _message_id(answer.id),
            "type": "message",
            "role": "assistant",
            "content": [_block(part) for part in answer.parts],
            "stop_reason": answer.stop_reason,
            "stop_sequence": answer.stop_sequence,
            "usage": _usage_json(answer.usage),
        }
        return dumps(message)

    def encoder(self, *, call: MessagesRequest, model: str) -> MessagesEncoder:
        return MessagesEncoder(model=model)


MESSAGES_CLIENT = MessagesClient()
