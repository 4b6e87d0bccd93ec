"""Anthropic routes receiving a call an OpenAI chat client sent.

The provider half of that translation: the internal model (routing/codecs/model.py) as an
Anthropic `POST /v1/messages` request, and Anthropic's answer and stream back into it.

Request:

- ``system``: a string when it is one text without ``cache_control``, else text blocks.
- messages: consecutive messages of one role merged (Anthropic wants them alternating);
  in a user message tool results come first (Anthropic wants them right after the
  assistant's tool_use). Empty texts are left out (Anthropic refuses empty text blocks),
  and a message left with nothing is dropped. Images go as base64 or url sources (a
  ``data:`` URL becomes base64). Thinking without a signature (not Anthropic's: it cannot
  be verified, and Anthropic refuses it) is left out; signed thinking and redacted
  thinking go back byte for byte.
- tools: name, description, ``input_schema`` (the parameters; ``type: object`` added when
  absent). OpenAI's ``strict`` is dropped: Anthropic's strict tools accept only some
  models and schemas, and Claude follows a schema without it.
- tool_choice: auto / required -> any / none / tool -> ``{type: tool, name}``, with
  ``disable_parallel_tool_use`` when ``parallel_tool_calls`` is False.
- sampling: temperature clamped to Anthropic's 0..1, ``top_p`` >= 1 dropped (the same as
  unset), temperature and top_p together refused (current Claude models refuse the pair),
  top_k, stop sequences (whitespace-only ones refused: Anthropic refuses them); ``seed``
  refused (Anthropic has none).
- ``user`` -> ``metadata.user_id``.
- response_format: json_schema -> a forced tool named after the schema (its input schema
  the schema), json_object -> a forced tool taking any object; the tool's input comes back
  as the answer's TEXT (the JSON), with stop reason end_turn, streams included. Refused
  with the client's own tools (which would change what the model may call) or with
  reasoning (Anthropic refuses forced tools while thinking).
- reasoning: an effort becomes a thinking budget (low 1024, medium 4096, high and xhigh
  16384; minimal and none: no thinking), an Anthropic budget stays one, kept below
  max_tokens (max_tokens of 1024 or less cannot think: 400). Thinking on refuses
  temperature other than 1, top_p and top_k (Anthropic does), and a forced tool choice.
  Thinking is left out of a call whose last assistant message with a tool call does not
  start with signed or redacted thinking: Anthropic refuses thinking then ("a final
  assistant message must start with a thinking block"), and that is every tool loop of a
  client that does not send ``thinking_blocks`` back (the OpenAI Agents SDK, LangChain).
  Such a call is answered without thinking, as LiteLLM does.
- tool_choice ``required`` or naming a tool, without tools: refused (Anthropic refuses it).
- images: ``image/jpg`` (common in data URLs) is sent as ``image/jpeg``, the only name
  Anthropic takes.

Answers: text, tool_use (``arguments`` = the compact JSON of ``input``), thinking with its
signature, redacted thinking; Anthropic's stop reasons (``model_context_window_exceeded``
-> ``max_tokens``); usage with ``input_tokens`` = Anthropic's input + cache read + cache
write, each count validated (an impossible count marks the usage invalid: the estimate is
billed).
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from typing import Any, NoReturn

from django.conf import settings

from core.errors import ProxyError
from routing.codecs.base import (
    UpstreamRequest,
    Usage,
    event_object,
    failed_mid_stream,
    token_counts,
)
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
    Part,
    RedactedThinking,
    Start,
    StopReason,
    Text,
    Thinking,
    ToolResult,
    ToolUse,
)
from routing.context import Route
from routing.sse import SSEEvent
from usage.limits import tokens_in

# xhigh and max (the SDKs' newest efforts) think as much as high: the budget stays below
# max_tokens anyway, and a larger one would leave nothing for the answer.
THINKING_BUDGETS = {"low": 1024, "medium": 4096, "high": 16384, "xhigh": 16384, "max": 16384}
NO_THINKING_EFFORTS = frozenset({"minimal", "none"})
MIN_THINKING_BUDGET = 1024  # Anthropic's floor for budget_tokens
JSON_OBJECT_TOOL = "json_object"  # the forced tool's name for response_format json_object
JSON_SCHEMA_TOOL = "json_response"  # ... for a json_schema without a usable name
_STOP_REASONS: dict[str, StopReason] = {
    "end_turn": "end_turn",
    "max_tokens": "max_tokens",
    "stop_sequence": "stop_sequence",
    "tool_use": "tool_use",
    "refusal": "refusal",
    "pause_turn": "pause_turn",
    "model_context_window_exceeded": "max_tokens",
}
_DATA_URL = re.compile(r"data:(?P<type>[\w.+-]+/[\w.+-]+);base64,(?P<data>.*)", re.DOTALL)
_TOOL_NAME = re.compile(r"[^a-zA-Z0-9_-]")
_CACHE_COUNTS = ("cache_creation_input_tokens", "cache_read_input_tokens")


def _refuse(message: str, *, param: str) -> NoReturn:
    raise ProxyError(400, message, code="unsupported_for_provider", param=param)


def _unsupported(what: str, *, param: str) -> NoReturn:
    _refuse(
        f"{what} is not supported for this model (its provider speaks the Anthropic API).",
        param=param,
    )


def _malformed() -> NoReturn:
    raise ProxyError(502, "The provider sent a malformed response.", code="upstream_error")


def _with_cache(block: dict[str, Any], cache_control: dict[str, Any] | None) -> dict[str, Any]:
    if cache_control is not None:
        block["cache_control"] = cache_control
    return block


def _input_of(arguments: str) -> dict[str, Any]:
    """A tool call's arguments as Anthropic's ``input`` object.

    An earlier turn's broken arguments (a model's invalid JSON) are kept under a key rather
    than refused or emptied, so the conversation can go on and the model sees what it wrote.
    """
    if not arguments.strip():
        return {}
    try:
        value = json.loads(arguments)
    except ValueError:
        value = None
    return value if isinstance(value, dict) else {"_raw_arguments": arguments}


def _media_type(media_type: str | None) -> str | None:
    # Anthropic knows only image/jpeg; image/jpg (common in data URLs) is refused.
    if media_type is not None and media_type.lower() in ("image/jpg", "image/jpeg"):
        return "image/jpeg"
    return media_type


def _image(part: Image) -> dict[str, Any]:
    if part.data is not None:
        source: dict[str, Any] = {
            "type": "base64",
            "media_type": _media_type(part.media_type),
            "data": part.data,
        }
    else:
        url = part.url or ""
        found = _DATA_URL.match(url)
        if found:
            source = {
                "type": "base64",
                "media_type": _media_type(found["type"]),
                "data": found["data"],
            }
        else:
            source = {"type": "url", "url": url}
    return _with_cache({"type": "image", "source": source}, part.cache_control)


def _blocks(part: Part) -> list[dict[str, Any]]:
    if isinstance(part, Text):
        if not part.text:
            return []  # Anthropic refuses empty text blocks
        return [_with_cache({"type": "text", "text": part.text}, part.cache_control)]
    if isinstance(part, Image):
        return [_image(part)]
    if isinstance(part, ToolUse):
        block = {"type": "tool_use", "id": part.id, "name": part.name}
        block["input"] = _input_of(part.arguments)  # type: ignore[assignment]
        return [_with_cache(block, part.cache_control)]
    if isinstance(part, ToolResult):
        content: list[dict[str, Any]] = []
        for item in part.content:
            content.extend(_blocks(item))
        result: dict[str, Any] = {"type": "tool_result", "tool_use_id": part.tool_use_id}
        if len(content) == 1 and content[0]["type"] == "text" and len(content[0]) == 2:
            result["content"] = content[0]["text"]
        elif content:
            result["content"] = content
        if part.is_error:
            result["is_error"] = True
        return [_with_cache(result, part.cache_control)]
    if isinstance(part, Thinking):
        if not part.signature:
            return []  # not Anthropic's thinking: unverifiable, and refused
        return [{"type": "thinking", "thinking": part.text, "signature": part.signature}]
    return [{"type": "redacted_thinking", "data": part.data}]


def _messages(call: InternalCall) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    for message in call.messages:
        blocks = [block for part in message.parts for block in _blocks(part)]
        if not blocks:
            continue
        if messages and messages[-1]["role"] == message.role:
            messages[-1]["content"].extend(blocks)
        else:
            messages.append({"role": message.role, "content": blocks})
    for out in messages:
        if out["role"] == "user":
            # sorted() is stable: results keep their order, as do the other blocks.
            out["content"] = sorted(out["content"], key=lambda b: b["type"] != "tool_result")
    if not messages:
        raise ProxyError(
            400, "At least one user or assistant message is required.", code="invalid_request"
        )
    return messages


def _tool_loop_thinks(messages: list[dict[str, Any]]) -> bool:
    """Whether Anthropic would take thinking with this conversation: the last assistant
    message that called a tool must start with (signed or redacted) thinking, or Anthropic
    refuses the whole call ("a final assistant message must start with a thinking block")."""
    for message in reversed(messages):
        blocks = message["content"]
        if message["role"] == "assistant" and any(b["type"] == "tool_use" for b in blocks):
            return blocks[0]["type"] in ("thinking", "redacted_thinking")
    return True


def _system(call: InternalCall) -> str | list[dict[str, Any]] | None:
    texts = [text for text in call.system if text.text or text.cache_control is not None]
    if not texts:
        return None
    if len(texts) == 1 and texts[0].cache_control is None:
        return texts[0].text
    return [_with_cache({"type": "text", "text": t.text}, t.cache_control) for t in texts]


def _json_tool(call: InternalCall) -> dict[str, Any] | None:
    """The forced tool standing in for a JSON response format, or None."""
    fmt = call.response_format
    if fmt is None or fmt.kind == "text":
        return None
    if call.tools:
        _unsupported("`response_format` together with `tools`", param="response_format")
    thinking = _thinking(call, max_tokens=None)
    if thinking is not None and thinking["type"] != "disabled":
        _unsupported("`response_format` together with reasoning", param="response_format")
    if fmt.kind == "json_object":
        return {
            "name": JSON_OBJECT_TOOL,
            "description": "Respond with a JSON object.",
            "input_schema": {"type": "object"},
        }
    schema = fmt.schema or {"type": "object"}
    if schema.get("type", "object") != "object":
        _unsupported(
            "A `response_format` schema whose top level is not an object",
            param="response_format",
        )
    name = _TOOL_NAME.sub("_", fmt.name or "")[:64] or JSON_SCHEMA_TOOL
    tool: dict[str, Any] = {"name": name}
    tool["description"] = fmt.description or "Respond with JSON matching this schema."
    tool["input_schema"] = {"type": "object", **schema}
    return tool


def _thinking(call: InternalCall, *, max_tokens: int | None) -> dict[str, Any] | None:
    reasoning = call.reasoning
    if reasoning is None:
        return None
    if not reasoning.enabled:
        return {"type": "disabled"}
    budget = reasoning.budget_tokens
    if budget is None and reasoning.effort is not None:
        if reasoning.effort in NO_THINKING_EFFORTS:
            return None
        budget = THINKING_BUDGETS.get(reasoning.effort)
        if budget is None:
            _unsupported(f"`reasoning_effort` {reasoning.effort!r}", param="reasoning_effort")
    if budget is None:
        return {"type": "adaptive"}
    if max_tokens is None:
        return {"type": "enabled", "budget_tokens": budget}
    if max_tokens <= MIN_THINKING_BUDGET:
        _refuse(
            f"Reasoning needs `max_tokens` above {MIN_THINKING_BUDGET} for this model (its "
            f"provider speaks the Anthropic API and thinks at least {MIN_THINKING_BUDGET} "
            "tokens, counted in max_tokens).",
            param="max_tokens",
        )
    return {"type": "enabled", "budget_tokens": min(budget, max_tokens - 1)}


def _tool_choice(call: InternalCall) -> dict[str, Any] | None:
    choice = call.tool_choice
    if not call.tools:
        return None  # nothing to choose from: auto and none mean the same
    if choice is None or choice.mode == "auto":
        out: dict[str, Any] = {"type": "auto"}
    elif choice.mode == "required":
        out = {"type": "any"}
    elif choice.mode == "none":
        return {"type": "none"}
    else:
        out = {"type": "tool", "name": choice.name}
    if call.parallel_tool_calls is False:
        out["disable_parallel_tool_use"] = True
    elif choice is None:
        return None  # Anthropic's default
    return out


def _check_tool_choice(call: InternalCall) -> None:
    choice = call.tool_choice
    if not call.tools and choice is not None and choice.mode in ("required", "tool"):
        # A call demanded and nothing to call: Anthropic refuses it too, and dropping it
        # would answer without the call the client asked for.
        raise ProxyError(
            400,
            "`tool_choice` requires a tool call, but the request has no `tools`.",
            code="invalid_request",
            param="tool_choice",
        )


def _sampling(call: InternalCall, payload: dict[str, Any], *, thinking: bool) -> None:
    sampling = call.sampling
    if sampling.seed is not None:
        _unsupported("`seed`", param="seed")
    temperature, top_p = sampling.temperature, sampling.top_p
    if top_p is not None and top_p >= 1:
        top_p = None  # 1 samples from everything: the same as not sending it
    if temperature is not None and top_p is not None:
        # Current Claude models refuse the pair; choosing one for the client would change
        # what it asked for.
        _refuse(
            "`temperature` and `top_p` cannot both be set for this model (its provider "
            "speaks the Anthropic API): send one of them.",
            param="top_p",
        )
    if temperature is not None:
        temperature = min(float(temperature), 1.0)
    if thinking:
        # Anthropic refuses these with extended thinking on.
        if temperature is not None and temperature != 1:
            _unsupported("`temperature` other than 1 with reasoning", param="temperature")
        if top_p is not None:
            _unsupported("`top_p` with reasoning", param="top_p")
        if sampling.top_k is not None:
            _unsupported("`top_k` with reasoning", param="top_k")
    if temperature is not None:
        payload["temperature"] = temperature
    if top_p is not None:
        payload["top_p"] = top_p
    if sampling.top_k is not None:
        payload["top_k"] = sampling.top_k
    if sampling.stop:
        if not all(stop.strip() for stop in sampling.stop):
            # Anthropic refuses stop sequences made of whitespace alone ("\n"): dropping
            # one would let the answer run past where the client wanted it cut.
            _unsupported("A `stop` sequence made only of whitespace", param="stop")
        payload["stop_sequences"] = list(sampling.stop)


def _json_tool_name(call: InternalCall) -> str | None:
    fmt = call.response_format
    if fmt is None or fmt.kind == "text":
        return None
    if fmt.kind == "json_object":
        return JSON_OBJECT_TOOL
    return _TOOL_NAME.sub("_", fmt.name or "")[:64] or JSON_SCHEMA_TOOL


class AnthropicUsage:
    """Anthropic's counts as they arrive (each kept apart), and the proxy's Usage of them.

    A stream's message_delta usage is cumulative: the last count of each kind wins, and a
    kind it leaves out keeps message_start's value (the SDKs read it the same way).
    """

    def __init__(self) -> None:
        self.usage = Usage()
        self._input = 0

    def read(self, usage: Any, *, required: tuple[str, ...], optional: tuple[str, ...]) -> None:
        counts = token_counts(usage, required=required, optional=(*optional, *_CACHE_COUNTS))
        if counts is None:
            self.usage.invalid = True
            return
        present = usage if isinstance(usage, dict) else {}
        into = self.usage
        if present.get("input_tokens") is not None:
            self._input = counts["input_tokens"]
        if present.get("cache_read_input_tokens") is not None:
            into.cache_read_tokens = counts["cache_read_input_tokens"]
        if present.get("cache_creation_input_tokens") is not None:
            into.cache_write_tokens = counts["cache_creation_input_tokens"]
        # Anthropic counts cached prompt tokens apart from input_tokens; all were sent.
        into.input_tokens = self._input + into.cache_read_tokens + into.cache_write_tokens
        if present.get("output_tokens") is not None:
            into.output_tokens = counts["output_tokens"]
        details = present.get("output_tokens_details")
        thinking = token_counts(details, optional=("thinking_tokens",))
        if thinking is not None and thinking["thinking_tokens"]:
            into.reasoning_tokens = thinking["thinking_tokens"]


def _stop_reason(value: Any, *, json_mode: bool) -> StopReason:
    reason = _STOP_REASONS.get(value, "end_turn") if isinstance(value, str) else "end_turn"
    if json_mode and reason == "tool_use":
        return "end_turn"  # the forced tool was the answer, not a call to run
    return reason


def _seeded_input(block: dict[str, Any]) -> str:
    """A tool_use block's ``input`` at its start as arguments text: "" for Anthropic's own
    ``{}`` (the input follows as deltas), the JSON when a server sent it whole there."""
    given = block.get("input")
    if not isinstance(given, dict) or not given:
        return ""
    return json.dumps(given, separators=(",", ":"), ensure_ascii=False)


class MessagesDecoder:
    """Anthropic's stream events in, internal events out."""

    def __init__(self, *, json_tool: str | None) -> None:
        self.usage = Usage()
        self.content_deltas = 0
        self.complete = False
        self._counts = AnthropicUsage()
        self.usage = self._counts.usage
        self._json_tool = json_tool
        self._blocks: dict[int, str] = {}  # index -> the internal kind of each block passed on
        self._dropped: set[int] = set()  # JSON mode: the blocks other than the forced tool's
        # JSON mode: text held back until it is known whether the forced tool comes (then
        # the text is dropped) or not (then the model answered in text, which is passed on:
        # an answer is never lost for want of the JSON).
        self._held: list[Event] | None = [] if json_tool is not None else None

    def feed(self, event: SSEEvent) -> list[Event]:
        if event.data is None:
            return []  # a comment (keep-alive)
        data = event_object(event.data)
        kind = data.get("type") or event.event
        if kind == "message_start":
            message = data.get("message")
            message = message if isinstance(message, dict) else {}
            self._counts.read(
                message.get("usage"), required=("input_tokens",), optional=("output_tokens",)
            )
            message_id = message.get("id")
            return [
                Start(
                    id=message_id if isinstance(message_id, str) else "unknown",
                    usage=replace(self.usage),
                )
            ]
        if kind == "content_block_start":
            return self._block_start(data)
        if kind == "content_block_delta":
            return self._delta(data)
        if kind == "content_block_stop":
            index = data.get("index")
            stop: list[Event] = (
                [BlockStop(index)] if isinstance(index, int) and index in self._blocks else []
            )
            return self._hold(index, stop)
        if kind == "message_delta":
            self._counts.read(
                data.get("usage"), required=("output_tokens",), optional=("input_tokens",)
            )
            self.usage.reported = not self.usage.invalid
            delta = data.get("delta")
            delta = delta if isinstance(delta, dict) else {}
            sequence = delta.get("stop_sequence")
            json_answered = self._held is None and self._json_tool is not None
            reason = _stop_reason(delta.get("stop_reason"), json_mode=json_answered)
            finish = Finish(reason, sequence if isinstance(sequence, str) else None)
            held, self._held = self._held or [], None
            return [*held, finish]
        if kind == "message_stop":
            self.complete = True
            return [End(usage=replace(self.usage))]
        if kind == "error":
            raise failed_mid_stream(data.get("error"))
        return []  # ping, and event types Anthropic may add

    def _block_start(self, data: dict[str, Any]) -> list[Event]:
        index, block = data.get("index"), data.get("content_block")
        if not isinstance(index, int) or not isinstance(block, dict):
            return []
        kind = block.get("type")
        if self._json_tool is not None:
            # JSON mode: only the forced tool's input is the answer (as text), as in a whole
            # answer; text around it would corrupt the JSON the client parses. The other
            # blocks' pieces are still counted: the model wrote them, and they are billed.
            if kind == "tool_use" and block.get("name") == self._json_tool:
                # The forced tool came: the text held so far was talk around the JSON.
                for held in self._held or []:
                    if isinstance(held, BlockStart | BlockDelta | BlockStop):
                        self._blocks.pop(held.index, None)
                        self._dropped.add(held.index)
                self._held = None
                self._blocks[index] = "json"
                seeded = _seeded_input(block)
                self.content_deltas += 1 if seeded else 0
                return [BlockStart(index, Text(seeded))]
            if kind == "text" and self._held is not None:
                self._blocks[index] = "text"
                self._held.append(BlockStart(index, Text(block.get("text") or "")))
                return []
            self._dropped.add(index)
            return []
        part: AnswerPart
        if kind == "text":
            part = Text(block.get("text") or "")
        elif kind == "tool_use":
            # An Anthropic-compatible server may give the whole input here, without deltas.
            arguments = _seeded_input(block)
            self.content_deltas += 1 if arguments else 0
            part = ToolUse(str(block.get("id") or ""), str(block.get("name") or ""), arguments)
        elif kind == "thinking":
            part = Thinking(block.get("thinking") or "", block.get("signature") or None)
        elif kind == "redacted_thinking":
            part = RedactedThinking(str(block.get("data") or ""))
        else:
            return []  # a server tool's block: nothing an OpenAI client can be given
        self._blocks[index] = kind
        return [BlockStart(index, part)]

    def _delta(self, data: dict[str, Any]) -> list[Event]:
        index, delta = data.get("index"), data.get("delta")
        if isinstance(index, int) and index in self._dropped:
            if isinstance(delta, dict) and delta.get("type") != "signature_delta":
                self.content_deltas += 1
            return []
        if not isinstance(index, int) or index not in self._blocks or not isinstance(delta, dict):
            return []
        kind = delta.get("type")
        if kind == "text_delta":
            value, what = delta.get("text"), "text"
        elif kind == "input_json_delta":
            value = delta.get("partial_json")
            what = "text" if self._blocks[index] == "json" else "arguments"
        elif kind == "thinking_delta":
            value, what = delta.get("thinking"), "thinking"
        elif kind == "signature_delta":
            value, what = delta.get("signature"), "signature"
        else:
            return []  # citations_delta and what Anthropic may add
        if not isinstance(value, str) or not value:
            return []
        if what != "signature":
            self.content_deltas += 1
        return self._hold(index, [BlockDelta(index, what, value)])  # type: ignore[arg-type]

    def _hold(self, index: Any, events: list[Event]) -> list[Event]:
        """JSON mode: a text block's events wait until the forced tool comes or the turn ends."""
        if self._held is not None and events and self._blocks.get(index) == "text":
            self._held.extend(events)
            return []
        return events


class MessagesProvider:
    """The Anthropic provider side of a translation (see the module docstring)."""

    def encode(self, call: InternalCall, *, route: Route, max_tokens: int) -> UpstreamRequest:
        payload: dict[str, Any] = {
            "model": route.upstream_model,
            "messages": _messages(call),
            "max_tokens": max_tokens,
        }
        system = _system(call)
        if system is not None:
            payload["system"] = system
        _check_tool_choice(call)
        json_tool = _json_tool(call)
        thinking = _thinking(call, max_tokens=max_tokens)
        thinks = thinking is not None and thinking["type"] != "disabled"
        if thinks and not _tool_loop_thinks(payload["messages"]):
            thinking, thinks = None, False  # see the module docstring
        if json_tool is not None:
            payload["tools"] = [json_tool]
            payload["tool_choice"] = {"type": "tool", "name": json_tool["name"]}
        elif call.tools:
            payload["tools"] = [
                _with_cache(
                    {
                        "name": tool.name,
                        **({"description": tool.description} if tool.description else {}),
                        "input_schema": {"type": "object", **tool.parameters},
                    },
                    tool.cache_control,
                )
                for tool in call.tools
            ]
            choice = _tool_choice(call)
            if choice is not None:
                if thinks and choice["type"] in ("any", "tool"):
                    _unsupported("Forcing a tool call with reasoning", param="tool_choice")
                payload["tool_choice"] = choice
        if thinking is not None:
            payload["thinking"] = thinking
        _sampling(call, payload, thinking=thinks)
        if call.user is not None:
            payload["metadata"] = {"user_id": call.user}
        if call.stream:
            payload["stream"] = True
        headers = {"anthropic-version": settings.PROXY_ANTHROPIC_VERSION}
        return UpstreamRequest(f"{route.provider.base_url}/v1/messages", payload, headers)

    def decode_answer(self, raw: bytes, *, call: InternalCall) -> Answer:
        try:
            obj = json.loads(raw)
        except ValueError:
            _malformed()
        if not isinstance(obj, dict):
            _malformed()
        if obj.get("type") == "error":
            raise failed_mid_stream(obj.get("error"), stream=False)
        content = obj.get("content")
        if not isinstance(content, list):
            _malformed()
        json_tool = _json_tool_name(call)
        if json_tool is not None and not any(
            isinstance(b, dict) and b.get("type") == "tool_use" and b.get("name") == json_tool
            for b in content
        ):
            json_tool = None  # the model answered in text: that is the answer, not nothing
        parts: list[AnswerPart] = []
        size = 0
        for block in content:
            if not isinstance(block, dict):
                _malformed()
            part = _answer_part(block)
            if part is None:
                continue
            if json_tool is not None:
                # Only the forced tool's input is the answer, as text: text around it
                # would corrupt the JSON the client parses.
                if not isinstance(part, ToolUse) or part.name != json_tool:
                    continue
                part = Text(part.arguments)
            if isinstance(part, Text):
                size += len(part.text.encode())
            elif isinstance(part, ToolUse):
                size += len(part.arguments.encode())
            elif isinstance(part, Thinking):
                size += len(part.text.encode())
            parts.append(part)
        counts = AnthropicUsage()
        counts.read(obj.get("usage"), required=("input_tokens", "output_tokens"), optional=())
        usage = counts.usage
        usage.reported = not usage.invalid  # only the provider's own figures are reported
        usage.output_estimate = tokens_in(size)
        message_id, sequence = obj.get("id"), obj.get("stop_sequence")
        return Answer(
            id=message_id if isinstance(message_id, str) else "unknown",
            parts=parts,
            stop_reason=_stop_reason(obj.get("stop_reason"), json_mode=json_tool is not None),
            usage=usage,
            stop_sequence=sequence if isinstance(sequence, str) else None,
        )

    def decoder(self, *, call: InternalCall) -> MessagesDecoder:
        return MessagesDecoder(json_tool=_json_tool_name(call))


def _answer_part(block: dict[str, Any]) -> AnswerPart | None:
    kind = block.get("type")
    if kind == "text":
        text = block.get("text")
        if not isinstance(text, str):
            _malformed()
        return Text(text)
    if kind == "tool_use":
        tool_id, name, tool_input = block.get("id"), block.get("name"), block.get("input")
        if not isinstance(tool_id, str) or not isinstance(name, str):
            _malformed()
        if not isinstance(tool_input, dict):
            _malformed()
        return ToolUse(
            tool_id, name, json.dumps(tool_input, separators=(",", ":"), ensure_ascii=False)
        )
    if kind == "thinking":
        text, signature = block.get("thinking"), block.get("signature")
        if not isinstance(text, str):
            _malformed()
        return Thinking(text, signature if isinstance(signature, str) and signature else None)
    if kind == "redacted_thinking":
        data = block.get("data")
        if not isinstance(data, str):
            _malformed()
        return RedactedThinking(data)
    return None  # server tools' blocks: nothing an OpenAI client can be given


MESSAGES_PROVIDER = MessagesProvider()
