"""The proxy's own model of a call, of its answer and of its stream, whatever the wire format.

A translation goes client format -> this model -> provider format, and the answer back the
same way (routing/codecs/translate.py composes the two halves). Each wire format has one
codec per side: a *client side* that decodes a client's request into an :class:`InternalCall`
and encodes an :class:`Answer` or stream :data:`Event` s in the client's format, and a
*provider side* that encodes an :class:`InternalCall` as the provider's request and decodes
its answer and its stream. When client and provider speak the same format nothing here is
used: the request passes through (routing/codecs/*_passthrough.py).

Conventions every codec keeps:

- Roles are ``user`` and ``assistant`` only. System instructions are :attr:`InternalCall.system`
  (OpenAI ``system``/``developer`` messages anywhere in the conversation are gathered there in
  order: Anthropic has no other place for them). Tool results are parts of a ``user`` message,
  in the order the client gave them.
- A tool call's ``arguments`` is the JSON text of its input object exactly as the model wrote
  it (OpenAI's form); Anthropic codecs parse or serialise it at their edge.
- Usage: :class:`~routing.codecs.base.Usage`, whose ``input_tokens`` counts *every* prompt
  token, cached reads and cache writes included (OpenAI's ``prompt_tokens``); Anthropic
  codecs add or subtract the cache counts at their edge.
- A stream is ``Start``, then blocks (``BlockStart``, ``BlockDelta``s, ``BlockStop``) with
  indexes 0, 1, 2... in the order they start, then ``Finish`` (the stop reason) and ``End``
  (the final usage). Blocks of different indexes may interleave (OpenAI streams parallel
  tool calls that way); an encoder that cannot interleave serialises them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from core.errors import ProxyError
from routing.codecs.base import UpstreamRequest, Usage
from routing.context import Route
from routing.sse import SSEEvent

# --- a call ------------------------------------------------------------------------------


@dataclass(slots=True)
class Text:
    text: str
    # Anthropic's prompt-caching hint on this block ({"type": "ephemeral", "ttl"?}); kept
    # towards Anthropic, dropped towards providers that cache on their own.
    cache_control: dict[str, Any] | None = None


@dataclass(slots=True)
class Image:
    """An image given inline (``data``, base64, with its ``media_type``) or by ``url``."""

    media_type: str | None = None
    data: str | None = None
    url: str | None = None
    detail: str | None = None  # OpenAI's "low" / "high" / "auto"; no Anthropic equivalent
    cache_control: dict[str, Any] | None = None


@dataclass(slots=True)
class ToolUse:
    id: str
    name: str
    arguments: str  # the input object's JSON text
    cache_control: dict[str, Any] | None = None


@dataclass(slots=True)
class ToolResult:
    tool_use_id: str
    content: list[Text | Image]
    is_error: bool = False
    cache_control: dict[str, Any] | None = None


@dataclass(slots=True)
class Thinking:
    text: str
    signature: str | None = None  # Anthropic's; must come back byte for byte in later turns


@dataclass(slots=True)
class RedactedThinking:
    data: str


Part = Text | Image | ToolUse | ToolResult | Thinking | RedactedThinking
Role = Literal["user", "assistant"]


@dataclass(slots=True)
class Message:
    role: Role
    parts: list[Part]


@dataclass(slots=True)
class Tool:
    """A tool the model may call. A ``custom`` tool (OpenAI Responses: Codex's apply_patch)
    takes free text rather than a JSON object, optionally in a ``format`` (a grammar); a
    provider without such tools gets a function taking one string, ``input`` (see
    :data:`CUSTOM_INPUT`), and its calls' ``arguments`` are ``{"input": <the text>}``."""

    name: str
    description: str | None
    parameters: dict[str, Any]  # JSON Schema of the input object
    strict: bool | None = None  # OpenAI's structured-outputs switch for the arguments
    cache_control: dict[str, Any] | None = None
    kind: Literal["function", "custom"] = "function"
    format: dict[str, Any] | None = None  # a custom tool's input format ({"type": "grammar"...})


# The one argument a custom tool's call carries where only JSON-object tools exist.
CUSTOM_INPUT = "input"


def custom_parameters(tool: Tool) -> dict[str, Any]:
    """The JSON Schema standing in for a custom tool's free-text input."""
    described = "The tool's input, as free text."
    if tool.format is not None and tool.format.get("type") == "grammar":
        described += (
            f" It must match this {tool.format.get('syntax', '')} grammar:\n"
            f"{tool.format.get('definition', '')}"
        )
    return {
        "type": "object",
        "properties": {CUSTOM_INPUT: {"type": "string", "description": described}},
        "required": [CUSTOM_INPUT],
        "additionalProperties": False,
    }


@dataclass(slots=True)
class ToolChoice:
    """``auto``: the model decides; ``required``: some tool (Anthropic's ``any``); ``none``:
    no tool; ``tool``: the one named."""

    mode: Literal["auto", "required", "none", "tool"]
    name: str | None = None


@dataclass(slots=True)
class Sampling:
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    stop: list[str] = field(default_factory=list)
    seed: int | None = None


@dataclass(slots=True)
class ResponseFormat:
    kind: Literal["text", "json_object", "json_schema"]
    name: str | None = None
    schema: dict[str, Any] | None = None
    strict: bool | None = None
    description: str | None = None


@dataclass(slots=True)
class Reasoning:
    """How much the model should think: OpenAI's ``reasoning_effort`` or Anthropic's
    ``thinking`` budget (whichever the client spoke; an encoder maps one to the other)."""

    effort: str | None = None  # "minimal" | "low" | "medium" | "high" (OpenAI's words)
    budget_tokens: int | None = None  # Anthropic's thinking budget
    enabled: bool = True  # False: the client turned thinking off explicitly


@dataclass(slots=True)
class InternalCall:
    model: str  # the name the client asked for
    stream: bool
    messages: list[Message]
    system: list[Text] = field(default_factory=list)
    tools: list[Tool] = field(default_factory=list)
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None  # False: at most one tool call per turn
    sampling: Sampling = field(default_factory=Sampling)
    max_tokens: int | None = None
    response_format: ResponseFormat | None = None
    reasoning: Reasoning | None = None
    user: str | None = None  # an end-user id (OpenAI `user`, Anthropic metadata.user_id)
    include_usage: bool = False  # an OpenAI streaming client asked for the usage chunk


# --- an answer ---------------------------------------------------------------------------

# Anthropic's words, the richer set; OpenAI's finish reasons map onto them.
StopReason = Literal["end_turn", "max_tokens", "stop_sequence", "tool_use", "refusal", "pause_turn"]

AnswerPart = Text | ToolUse | Thinking | RedactedThinking


@dataclass(slots=True)
class Answer:
    id: str  # the provider's id for it (each encoder prefixes it as its format does)
    parts: list[AnswerPart]
    stop_reason: StopReason
    usage: Usage
    stop_sequence: str | None = None


# --- a stream ----------------------------------------------------------------------------


@dataclass(slots=True)
class Start:
    id: str
    usage: Usage | None = None  # what is known at the start (Anthropic: the input tokens)


@dataclass(slots=True)
class BlockStart:
    index: int
    # The block as it begins: Text(""), ToolUse(id, name, ""), Thinking(""), RedactedThinking.
    part: AnswerPart


@dataclass(slots=True)
class BlockDelta:
    index: int
    kind: Literal["text", "arguments", "thinking", "signature"]
    value: str


@dataclass(slots=True)
class BlockStop:
    index: int


@dataclass(slots=True)
class Finish:
    stop_reason: StopReason
    stop_sequence: str | None = None


@dataclass(slots=True)
class End:
    usage: Usage  # the final counts (reported=False when the provider never gave them)


Event = Start | BlockStart | BlockDelta | BlockStop | Finish | End


# --- the two halves of a translation -----------------------------------------------------


class StreamDecoder(Protocol):
    """A provider's stream events in, internal events out; keeps what the bill needs."""

    usage: Usage
    content_deltas: int  # content pieces seen (text, arguments, thinking): billed if cut
    complete: bool  # the provider ended the stream properly

    def feed(self, event: SSEEvent) -> list[Event]:
        """ProxyError(502) for the provider's own error event or an event that is no JSON."""
        ...


class StreamEncoder(Protocol):
    """Internal events in, the client's SSE bytes out."""

    def feed(self, event: Event) -> bytes: ...

    def error_event(self, error: ProxyError) -> bytes | None:
        """The event ending a stream that failed, when it depends on what was sent (see
        base.StreamTranslator.error_event); None for the client codec's own."""
        ...


class ClientSide(Protocol):
    """One client wire format, as a translation needs it."""

    def decode(self, call: Any) -> InternalCall:
        """The client's parsed request in the internal model, or ProxyError(400) naming the
        field that cannot be translated (never a field silently dropped)."""
        ...

    def encode_answer(self, answer: Answer, *, call: Any, model: str) -> bytes:
        """The client's answer body; ``model`` is the tenant's name for the model."""
        ...

    def encoder(self, *, call: Any, model: str) -> StreamEncoder: ...


class ProviderSide(Protocol):
    """One provider kind's wire format, as a translation needs it."""

    def encode(self, call: InternalCall, *, route: Route, max_tokens: int) -> UpstreamRequest:
        """The provider's request (``max_tokens`` is what the reservation holds), or
        ProxyError(400) for what this provider cannot do."""
        ...

    def decode_answer(self, raw: bytes, *, call: InternalCall) -> Answer:
        """ProxyError(502) for a malformed body, failed_mid_stream(stream=False) for an error
        sent with a 200. ``usage.output_estimate`` is set from the answer's text."""
        ...

    def decoder(self, *, call: InternalCall) -> StreamDecoder: ...
