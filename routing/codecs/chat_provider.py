"""OpenAI-compatible providers (OpenAI, Moonshot/Kimi, vLLM) behind a client of another format.

:class:`ChatProvider` encodes an internal call (routing/codecs/model.py) as a chat-completions
request and decodes the provider's ``chat.completion`` and its chunk stream back into the
internal answer and events. Used when the client spoke another format (Anthropic
Messages); an OpenAI client on these routes is passed through instead.

What cannot be sent, and what happens to it:

- ``cache_control`` hints: dropped (these providers cache prompts on their own).
- Thinking from earlier turns: its text goes as the assistant message's
  ``reasoning_content`` (Moonshot and DeepSeek read it back, and Kimi's thinking models
  require it next to tool calls); Anthropic's signatures and redacted thinking mean nothing
  to another provider and are dropped.
- Images inside a tool result: an OpenAI ``tool`` message carries text only, so its text
  goes in the tool message and the images in a user message right after the tool
  messages, introduced by a line naming the tool call.
- A tool result marked as an error: OpenAI has no flag for it; its text is prefixed with
  ``Error:`` so the model still knows.
- How much to think (an Anthropic client's ``thinking`` budget or ``output_config.effort``):
  dropped. On these routes the model decides whether it reasons (Kimi's thinking models
  always do), and ``reasoning_effort`` would make most of them refuse the request (OpenAI
  answers 400 for it on every non-reasoning model) while Claude Code sends an effort with
  every call. An OpenAI client's own ``reasoning_effort`` passes through untouched.
- ``top_k``: refused (400): OpenAI has no such parameter. More than 4 stop sequences: refused.
- A tool choice of ``any`` or naming a tool, without tools: refused (400), as both APIs do.
"""

from __future__ import annotations

import json
import uuid
from typing import Any, NoReturn

from core.errors import ProxyError
from routing.codecs.base import UpstreamRequest, Usage, event_object, failed_mid_stream
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
    Start,
    StopReason,
    Text,
    Thinking,
    ToolResult,
    ToolUse,
)
from routing.codecs.openai_passthrough import chunk_failure, output_bytes, read_usage, usage_of
from routing.context import Route
from routing.sse import SSEEvent
from usage.limits import tokens_in

MAX_STOP_SEQUENCES = 4  # OpenAI's limit
STOP_REASONS: dict[str, StopReason] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


def _unsupported(field: str, message: str) -> NoReturn:
    raise ProxyError(
        400,
        f"{message} (its provider speaks the OpenAI chat-completions API).",
        code="unsupported_for_provider",
        param=field,
    )


def _malformed() -> NoReturn:
    raise ProxyError(502, "The provider sent a malformed response.", code="upstream_error")


def _image_part(image: Image) -> dict[str, Any]:
    url = image.url if image.url is not None else f"data:{image.media_type};base64,{image.data}"
    spec: dict[str, Any] = {"url": url}
    if image.detail is not None:
        spec["detail"] = image.detail
    return {"type": "image_url", "image_url": spec}


def _user_content(parts: list[Text | Image]) -> str | list[dict[str, Any]]:
    # One text goes as a string: every OpenAI-compatible server takes that, not all take
    # content arrays (text-only models on some servers refuse them).
    if len(parts) == 1 and isinstance(parts[0], Text):
        return parts[0].text
    return [
        {"type": "text", "text": part.text} if isinstance(part, Text) else _image_part(part)
        for part in parts
    ]


def _user_messages(message: Message) -> list[dict[str, Any]]:
    """A user message: its tool results as ``tool`` messages first (they must follow the
    assistant's tool calls directly), then one user message with the rest."""
    out: list[dict[str, Any]] = []
    rest: list[Text | Image] = []
    tool_images: list[Text | Image] = []
    for part in message.parts:
        if isinstance(part, ToolResult):
            text = "\n\n".join(p.text for p in part.content if isinstance(p, Text))
            if part.is_error:
                text = f"Error: {text}" if text else "Error"
            out.append({"role": "tool", "tool_call_id": part.tool_use_id, "content": text})
            images = [p for p in part.content if isinstance(p, Image)]
            if images:
                tool_images.append(Text(f"Images from the result of tool call {part.tool_use_id}:"))
                tool_images.extend(images)
        elif isinstance(part, Text | Image):
            rest.append(part)
        # Other parts (tool uses, thinking) cannot be a user's: the client codecs never
        # put them there.
    content = tool_images + rest
    if content:
        out.append({"role": "user", "content": _user_content(content)})
    return out


def _assistant_message(message: Message) -> dict[str, Any]:
    texts = [part.text for part in message.parts if isinstance(part, Text)]
    uses = [part for part in message.parts if isinstance(part, ToolUse)]
    thinking = [part.text for part in message.parts if isinstance(part, Thinking) and part.text]
    out: dict[str, Any] = {
        "role": "assistant",
        "content": "\n\n".join(texts) if texts or not uses else None,
    }
    if uses:
        out["tool_calls"] = [
            {
                "id": use.id,
                "type": "function",
                "function": {"name": use.name, "arguments": use.arguments},
            }
            for use in uses
        ]
    if thinking:
        out["reasoning_content"] = "\n\n".join(thinking)
    return out


def _messages(call: InternalCall) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if call.system:
        out.append({"role": "system", "content": "\n\n".join(t.text for t in call.system)})
    for message in call.messages:
        if message.role == "user":
            out.extend(_user_messages(message))
        else:
            out.append(_assistant_message(message))
    return out


def _tool_choice(call: InternalCall) -> str | dict[str, Any] | None:
    choice = call.tool_choice
    if choice is None:
        return None
    if not call.tools:
        if choice.mode in ("auto", "none"):
            return None  # OpenAI refuses tool_choice without tools; without tools it is moot
        # A tool that must be called, and none to call: both APIs refuse it, and dropping
        # it would answer without the call the client demanded.
        raise ProxyError(
            400,
            "`tool_choice` requires a tool call, but the request has no `tools`.",
            code="invalid_request",
            param="tool_choice",
        )
    if choice.mode == "tool":
        return {"type": "function", "function": {"name": choice.name}}
    return choice.mode


class ChatProvider:
    """OpenAI chat completions on the provider's side of a translation."""

    def encode(self, call: InternalCall, *, route: Route, max_tokens: int) -> UpstreamRequest:
        sampling = call.sampling
        if sampling.top_k is not None:
            _unsupported("top_k", "`top_k` is not supported for this model")
        if len(sampling.stop) > MAX_STOP_SEQUENCES:
            _unsupported(
                "stop_sequences",
                f"More than {MAX_STOP_SEQUENCES} stop sequences are not supported for this model",
            )
        payload: dict[str, Any] = {
            "model": route.upstream_model,
            "messages": _messages(call),
            "max_tokens": max_tokens,
        }
        if call.tools:
            payload["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": tool.name,
                        **({"description": tool.description} if tool.description else {}),
                        "parameters": tool.parameters,
                        **({"strict": tool.strict} if tool.strict is not None else {}),
                    },
                }
                for tool in call.tools
            ]
            if call.parallel_tool_calls is not None:
                # Only with tools: OpenAI refuses the switch on a call without any.
                payload["parallel_tool_calls"] = call.parallel_tool_calls
        tool_choice = _tool_choice(call)
        if tool_choice is not None:
            payload["tool_choice"] = tool_choice
        if sampling.temperature is not None:
            payload["temperature"] = sampling.temperature
        if sampling.top_p is not None:
            payload["top_p"] = sampling.top_p
        if sampling.stop:
            payload["stop"] = list(sampling.stop)
        if sampling.seed is not None:
            payload["seed"] = sampling.seed
        response_format = call.response_format
        if response_format is not None and response_format.kind == "json_schema":
            spec: dict[str, Any] = {"name": response_format.name or "response"}
            if response_format.description is not None:
                spec["description"] = response_format.description
            if response_format.schema is not None:
                spec["schema"] = response_format.schema
            if response_format.strict is not None:
                spec["strict"] = response_format.strict
            payload["response_format"] = {"type": "json_schema", "json_schema": spec}
        elif response_format is not None and response_format.kind == "json_object":
            payload["response_format"] = {"type": "json_object"}
        if call.user is not None:
            payload["user"] = call.user
        if call.stream:
            payload["stream"] = True
            # Always: the proxy bills a stream from the provider's own usage chunk.
            payload["stream_options"] = {"include_usage": True}
        return UpstreamRequest(f"{route.provider.base_url}/chat/completions", payload, {})

    def decode_answer(self, raw: bytes, *, call: InternalCall) -> Answer:
        try:
            obj = json.loads(raw)
        except ValueError:
            obj = None
        if not isinstance(obj, dict):
            _malformed()
        choices = obj.get("choices")
        if "error" in obj and choices is None:
            # An error dressed as a 200: a failure, not an answer.
            raise failed_mid_stream(obj["error"], stream=False)
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            _malformed()
        message = choices[0].get("message")
        if not isinstance(message, dict):
            _malformed()
        parts: list[AnswerPart] = []
        reasoning = message.get("reasoning_content")
        if isinstance(reasoning, str) and reasoning:
            parts.append(Thinking(reasoning))
        for field in ("content", "refusal"):
            # A refusal is what the model said instead of an answer: its text, as text.
            if isinstance(text := message.get(field), str) and text:
                parts.append(Text(text))
        tool_calls = message.get("tool_calls") or []
        if not isinstance(tool_calls, list):
            _malformed()
        for tool_call in tool_calls:
            function = tool_call.get("function") if isinstance(tool_call, dict) else None
            if not isinstance(function, dict) or not isinstance(function.get("name"), str):
                _malformed()
            arguments = function.get("arguments")
            if not isinstance(arguments, str):
                _malformed()
            call_id = tool_call.get("id")
            parts.append(
                ToolUse(
                    id=call_id if isinstance(call_id, str) and call_id else _call_id(),
                    name=function["name"],
                    arguments=arguments,
                )
            )
        usage = Usage(output_estimate=tokens_in(output_bytes(choices, "message")))
        found = usage_of(obj)
        if found is None:
            usage.invalid = True  # a whole answer without its usage cannot be billed from it
        else:
            read_usage(found, usage)
        has_tools = any(isinstance(part, ToolUse) for part in parts)
        answer_id = obj.get("id")
        return Answer(
            id=answer_id if isinstance(answer_id, str) and answer_id else uuid.uuid4().hex,
            parts=parts,
            stop_reason=_stop_reason(choices[0].get("finish_reason"), has_tools=has_tools),
            usage=usage,
        )

    def decoder(self, *, call: InternalCall) -> ChatDecoder:
        return ChatDecoder()


def _call_id() -> str:
    # Some OpenAI-compatible servers omit tool call ids; the client needs one to answer.
    return f"call_{uuid.uuid4().hex[:24]}"


def _stop_reason(finish_reason: Any, *, has_tools: bool) -> StopReason:
    reason = STOP_REASONS.get(finish_reason, "end_turn") if isinstance(finish_reason, str) else None
    if has_tools and reason in (None, "end_turn"):
        # Some compatible servers say "stop" after tool calls; an Anthropic client runs its
        # tools only on tool_use.
        return "tool_use"
    return reason or "end_turn"


class _ToolBlock:
    __slots__ = ("block", "call_id", "name", "pending")

    def __init__(self) -> None:
        self.block: int | None = None  # the internal block index, once started
        self.call_id: str | None = None
        self.name: str | None = None
        self.pending: list[str] = []  # arguments that came before the name


class ChatDecoder:
    """``chat.completion.chunk`` events in, internal stream events out."""

    def __init__(self) -> None:
        self.usage = Usage()
        self.content_deltas = 0
        self.complete = False
        self._started = False
        self._finished = False
        self._blocks = 0  # block indexes handed out
        self._open: list[int] = []  # blocks started and not stopped, in order
        self._text: int | None = None
        self._thinking: int | None = None
        self._tools: dict[int, _ToolBlock] = {}  # the provider's tool index -> its block
        self._positions: dict[int, int] = {}  # list position -> tool key, for index-less entries
        self._has_tools = False

    def _block(self, part: AnswerPart, out: list[Event]) -> int:
        index = self._blocks
        self._blocks += 1
        self._open.append(index)
        out.append(BlockStart(index, part))
        return index

    def _close(self, index: int, out: list[Event]) -> None:
        if index in self._open:
            self._open.remove(index)
            out.append(BlockStop(index))

    def _close_thinking(self, out: list[Event]) -> None:
        # Thinking comes first in Anthropic's answers: once the answer proper begins, the
        # thinking block ends (more reasoning later opens another).
        if self._thinking is not None:
            self._close(self._thinking, out)
            self._thinking = None

    def feed(self, event: SSEEvent) -> list[Event]:
        data = event.data
        if data is None or self.complete:
            return []  # a comment (keep-alive), or anything after [DONE]
        out: list[Event] = []
        if data == "[DONE]":
            self._start(None, out)
            self._finish(None, out)
            out.append(End(self.usage))
            self.complete = True
            return out
        obj = event_object(data)
        failure = chunk_failure(obj)
        if failure is not None:
            raise failure
        choices = obj.get("choices")
        self._start(obj.get("id"), out)
        choice = choices[0] if isinstance(choices, list) and choices else None
        if isinstance(choice, dict):
            delta = choice.get("delta")
            if isinstance(delta, dict):
                self._delta(delta, out)
            if choice.get("finish_reason") is not None:
                self._finish(choice["finish_reason"], out)
        usage = usage_of(obj)
        if usage is not None:
            read_usage(usage, self.usage)
        return out

    def _start(self, chunk_id: Any, out: list[Event]) -> None:
        if not self._started:
            self._started = True
            out.append(
                Start(chunk_id if isinstance(chunk_id, str) and chunk_id else uuid.uuid4().hex)
            )

    def _delta(self, delta: dict[str, Any], out: list[Event]) -> None:
        reasoning = delta.get("reasoning_content")
        if isinstance(reasoning, str) and reasoning:
            if self._thinking is None:
                self._thinking = self._block(Thinking(""), out)
            out.append(BlockDelta(self._thinking, "thinking", reasoning))
            self.content_deltas += 1
        for field in ("content", "refusal"):
            text = delta.get(field)
            if isinstance(text, str) and text:
                if self._text is None:
                    self._close_thinking(out)
                    self._text = self._block(Text(""), out)
                out.append(BlockDelta(self._text, "text", text))
                self.content_deltas += 1
        tool_calls = delta.get("tool_calls")
        if isinstance(tool_calls, list):
            for position, entry in enumerate(tool_calls):
                if isinstance(entry, dict):
                    self._tool(entry, position, out)

    def _tool(self, entry: dict[str, Any], position: int, out: list[Event]) -> None:
        call_id = entry.get("id")
        if not isinstance(call_id, str) or not call_id:
            call_id = None
        number = entry.get("index")
        if type(number) is not int:
            number = self._unindexed(position, call_id)
        tool = self._tools.setdefault(number, _ToolBlock())
        function = entry.get("function")
        if not isinstance(function, dict):
            function = {}
        if call_id is not None and tool.call_id is None:
            tool.call_id = call_id
        if isinstance(name := function.get("name"), str) and name and tool.name is None:
            tool.name = name
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            tool.pending.append(arguments)
            self.content_deltas += 1
        if tool.block is None and tool.name is not None:
            self._close_thinking(out)
            self._has_tools = True
            tool.block = self._block(ToolUse(tool.call_id or _call_id(), tool.name, ""), out)
        if tool.block is not None:
            for piece in tool.pending:
                out.append(BlockDelta(tool.block, "arguments", piece))
            tool.pending.clear()

    def _unindexed(self, position: int, call_id: str | None) -> int:
        """The tool an entry without an ``index`` belongs to.

        Such servers (Gemini's OpenAI endpoint, some vLLM parsers) send one entry per tool
        call at each position of the list, often each call whole in its own chunk: an entry
        with an id other than its position's current tool's starts a new tool (Portkey
        #1275: without this, every call merged into the first); one without an id continues
        the current one. Keys for these tools are negative, apart from real indexes.
        """
        key = self._positions.get(position)
        if key is None or (call_id is not None and self._tools[key].call_id not in (None, call_id)):
            key = self._positions[position] = -1 - len(self._tools)
        return key

    def _finish(self, finish_reason: Any, out: list[Event]) -> None:
        if self._finished:
            return
        if any(tool.block is None for tool in self._tools.values()):
            raise ProxyError(
                502,
                "The provider's stream carried a tool call without a name.",
                code="upstream_error",
            )
        self._finished = True
        for index in list(self._open):
            self._close(index, out)
        out.append(Finish(_stop_reason(finish_reason, has_tools=self._has_tools)))


CHAT_PROVIDER = ChatProvider()
