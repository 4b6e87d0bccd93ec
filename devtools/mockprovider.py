"""A fake upstream LLM provider for tests and benchmarks, as a pure ASGI application.

It speaks the OpenAI chat-completions, the OpenAI Responses and the Anthropic Messages wire
formats exactly as the real services do, streaming included, so the official SDKs (and the
proxy) parse it unchanged.
It needs neither Django nor a database; ``python manage.py mock_provider`` serves it with Daphne.

Endpoints
    ``POST /v1/chat/completions``  OpenAI; needs ``Authorization: Bearer <key>``.
    ``POST /v1/responses``         OpenAI Responses; same auth, ``x-request-id``; needs ``model``
                                   and ``input`` (a string or a list of items). It stores
                                   nothing: a ``previous_response_id`` gets OpenAI's 400 for an
                                   id it does not hold (``previous_response_not_found``), and
                                   a reasoning item passed back without encrypted content the
                                   400 for an item not persisted. Its stream is OpenAI's
                                   event sequence (``event: <type>`` lines, every event with
                                   its ``sequence_number``): ``response.created``,
                                   ``response.in_progress``, then per output item
                                   ``output_item.added``, its part's ``added``, its deltas,
                                   ``done`` events and ``output_item.done``; then
                                   ``response.completed`` (``response.incomplete`` when cut at
                                   ``max_output_tokens``) with the whole output and usage.
    ``GET  /v1/models``            OpenAI model list (one model, ``mock-model``; no auth).
    ``POST /v1/messages``          Anthropic; needs a key in ``x-api-key`` (or, as the installed
                                   SDK sends it, ``Authorization: Bearer``), an
                                   ``anthropic-version`` header and ``max_tokens``. A query
                                   string (``?beta=true``) and ``anthropic-beta`` headers are
                                   accepted and kept in the record.
    ``POST /v1/messages/count_tokens``  Anthropic; same auth and version header; answers
                                   ``{"input_tokens": N}`` by the prompt-token rule below. It is
                                   recorded like a call, but no fault applies to it.
    ``GET  /_mock/stats``          ``{"calls": N, "requests": [record, ...]}`` (last 1000).
    ``POST /_mock/reset``          forget the records, restore the start-up configuration.
    ``GET|POST /_mock/config``     read / merge the configuration (see ``MockProvider.configure``).

    Unknown top-level fields and unknown content block types are accepted silently; the
    record keeps the body as received.

Output
    A reply is a list of blocks, each streamed as pieces, each piece exactly one output token:

    1. thinking (``config["thinking"]``, in pieces of two words): on Anthropic when the request
       has ``thinking: {"type": "enabled" | "adaptive"}``, as a ``thinking`` block with a
       signature (``thinking_delta`` pieces, then a ``signature_delta``); on OpenAI whenever
       configured, as ``reasoning_content`` (Moonshot / DeepSeek style), also counted in
       ``completion_tokens_details.reasoning_tokens``.
       On Responses, whenever configured, as a ``reasoning`` output item whose summary is
       that text (``reasoning_summary_text`` deltas), with ``encrypted_content`` (the text
       and an HMAC of it, checked when it comes back: 400 otherwise) when ``include`` has
       ``"reasoning.encrypted_content"``; counted in ``output_tokens_details.reasoning_tokens``.
    2. then one of:

       - after a tool result (the last message is OpenAI ``role: tool`` messages, an
         Anthropic user message with ``tool_result`` blocks, or the last Responses input items
         are ``function_call_output`` / ``custom_tool_call_output``): the text
         ``"Tool results: " + " | ".join(each result's text)`` in pieces of two words (a
         result's text: its string content, or its text parts concatenated); finish
         ``stop`` / ``end_turn``;
       - when the request offers tools (and ``tool_choice`` is not none) named in
         ``config["tool_calls"]``: a call of each of those, in the configured order
         (``config["tool_text"]``, in pieces of two words, first when set); their compact JSON
         arguments in pieces of ``arguments_chunk`` characters; ids ``call_<24 hex>`` /
         ``toolu_<24 hex>``; finish ``tool_calls`` / ``tool_use``. On Responses each is a
         ``function_call`` item (``function_call_arguments`` deltas), or, for a tool the request
         offers as ``{"type": "custom"}`` (Codex's apply_patch), a ``custom_tool_call`` whose
         ``input`` is the configured arguments' ``"input"`` string (else their compact JSON),
         in the same pieces (``custom_tool_call_input`` deltas);
       - otherwise ``chunks`` pieces, piece ``i`` being ``text[i % len(text)]``
         (``DEFAULT_TEXT`` unless configured).

    When the request holds images (OpenAI ``image_url`` parts; Responses ``input_image``
    parts, also in tool outputs; Anthropic ``image`` blocks, also inside ``tool_result``
    content), the reply's text, if it has any, starts with one more
    piece, ``"I see N image(s). "``. Images are checked as the real APIs check them (400
    otherwise).

    The reply text is cut just before the first stop sequence it contains (OpenAI ``stop``;
    Anthropic ``stop_sequences``), dropping what follows: finish ``stop`` /
    ``stop_reason: "stop_sequence"`` with ``stop_sequence`` set. Then, when the pieces
    outnumber the request's ``max_tokens`` (OpenAI: ``max_completion_tokens`` or
    ``max_tokens``), only that many are sent: ``finish_reason: "length"`` /
    ``stop_reason: "max_tokens"`` (a cut tool call keeps its partial arguments on OpenAI and
    streams; a non-streamed Anthropic reply gives it ``input: {}``). Responses has no stop
    sequences; past ``max_output_tokens`` its reply has ``status: "incomplete"``,
    ``incomplete_details: {"reason": "max_output_tokens"}`` and the cut item ``incomplete``.

    ``config["cache"]`` ``{"read": R, "write": W}`` makes replies report cache figures:
    Anthropic ``cache_read_input_tokens = R``, ``cache_creation_input_tokens = W`` and
    ``input_tokens = max(prompt - R - W, 0)``, in ``message_start`` and ``message_delta``
    alike (streams always repeat the input and cache counts in ``message_delta``); OpenAI
    ``prompt_tokens`` stays the total and ``prompt_tokens_details.cached_tokens = R``;
    Responses likewise (``input_tokens`` and ``input_tokens_details.cached_tokens = R``).

Checks a real API makes that the mock makes too (400 in the API's own error shape)
    A tool result must answer a tool call of the assistant message just before it, and
    every tool call followed by another message must be answered there (OpenAI's and
    Anthropic's own messages). A ``thinking`` block passed back must carry the signature the
    mock gave its text: base64 of an HMAC-SHA256 with a per-process secret ("Invalid
    `signature` in `thinking` block" otherwise). ``thinking.budget_tokens`` must be at least
    1024 and below ``max_tokens``. Stop sequences must be strings (Anthropic: not only
    whitespace; OpenAI: at most 4).

Prompt tokens
    ``sum(3 + words(message content) for each message)``, plus ``3 + words(system)`` when an
    Anthropic request has a ``system`` field, plus ``3 + words(description)`` for each tool
    definition (OpenAI ``function.description``, Anthropic ``description``; none counts 0),
    where ``words(x)`` is ``len(x.split())`` for a string and, for a list, the sum of that over
    its ``{"type": "text"}`` parts and over the content of its ``tool_result`` blocks; any other
    content (images, tool calls, thinking, ...) counts zero words. A Responses request counts
    ``3 + words`` for each message item (a string input is one) and each tool output item,
    for ``instructions`` and for each tool's ``description``, words being those of strings and
    of ``input_text`` / ``output_text`` parts.

Record
    Each call's record (``/_mock/stats``) has, besides the request (``path``, ``query``,
    ``headers``, ``body``...) and timings: ``text_sent`` (text pieces only), ``chunks_sent``
    (all pieces), ``usage`` (``input_tokens`` = the prompt count, ``output_tokens``, plus
    ``cache_read_tokens`` / ``cache_write_tokens`` when cache figures are reported and
    ``reasoning_tokens`` when thinking is sent), ``images``, ``tool_results`` (``[{tool_use_id,
    text, is_error, images}]`` or null), ``tool_calls`` (``[{id, name, arguments}]``),
    ``thinking`` and ``stop_sequence``.

Timing
    Headers, and the frames that precede the content (OpenAI's role chunk; Anthropic's
    ``message_start``, ``content_block_start`` and ``ping``), go out at once; the first piece
    waits ``ttft`` seconds, each further piece ``chunk_delay`` seconds; a later block's opening
    frames (a tool call's id and name; Anthropic's block stop and start) go with its first
    piece, after that piece's wait. A non-streamed reply is
    sent after the whole generation time, ``ttft + chunk_delay * (n - 1)``. Every SSE event is
    its own ASGI body message. A client disconnect is noticed during any wait and ends the call.

Faults (``config["faults"]``)
    The first rule whose ``match`` fits the (validated) request and whose ``times`` is not
    spent is applied; see ``MockProvider.configure`` for the actions. ``break_after`` under
    Daphne closes the TCP connection mid-body, so the client sees a truncated chunked
    response, exactly like a provider dying mid-stream. Other ASGI servers offer no way to do
    that, so there it ends the body cleanly but without the terminating events ([DONE],
    ``message_stop``), which a careful client must treat as a failure all the same.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import copy
import hashlib
import hmac
import json
import math
import re
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

Scope = Mapping[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Api = Literal["openai", "anthropic", "responses"]  # "responses": OpenAI's Responses API

MAX_RECORDS = 1000
DEFAULT_TEXT: tuple[str, ...] = (
    "Hello",
    " from",
    " the",
    " mock",
    " provider",
    ".",
    " Every",
    " piece",
    " is",
    " one",
    " token",
    ".",
)
MODEL_LIST = {
    "object": "list",
    "data": [{"id": "mock-model", "object": "model", "created": 0, "owned_by": "mock"}],
}
FAULT_ACTIONS = frozenset(
    {"status", "delay_headers", "break_after", "drip", "echo_key", "echo_key_in_answer",
     "stream_error", "usage", "garbage_line", "prefer_max_tokens", "body"}
)  # fmt: skip
MATCH_KEYS = frozenset({"api_key", "model", "api"})
MATCH_APIS = ("openai", "anthropic", "responses")  # the values a fault's match.api may take
CONFIG_KEYS = frozenset(
    {"chunks", "chunk_delay", "ttft", "text", "faults", "tool_calls", "tool_text",
     "arguments_chunk", "thinking", "cache"}
)  # fmt: skip
ANTHROPIC_MEDIA_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
OPENAI_IMAGE_URL = re.compile(r"(https?://|data:image/[\w.+-]+;base64,)")
WORDS_PER_PIECE = 2  # how a generated sentence (tool results, thinking) is split into pieces

JSON_TYPE = (b"content-type", b"application/json")
SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
]
# What the real services call their request-id header.
REQUEST_ID_HEADER: dict[Api, bytes] = {
    "openai": b"x-request-id",
    "anthropic": b"request-id",
    "responses": b"x-request-id",
}
# What the Responses API's stream_error fault sends: OpenAI's `error` event, or a
# `response.failed` event whose response carries the error.
RESPONSES_STREAM_ERRORS = ("error", "response.failed")
# The `include` value that makes the Responses API return reasoning as encrypted content.
ENCRYPTED_REASONING = "reasoning.encrypted_content"

# The error a status fault sends by default, as each API reports that status:
# OpenAI (type, code, message), Anthropic type.
OPENAI_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("invalid_request_error", "unsupported_country_region_territory", "Forbidden."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests."),
}
ANTHROPIC_ERRORS: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def _json(obj: Any) -> bytes:
    return _encode(obj).encode()


class ConfigError(ValueError):
    """A control-API payload that does not describe a valid configuration."""


@dataclass
class Fault:
    match: dict[str, str]
    times: int | None
    action: dict[str, Any]

    def fits(self, api: Api, api_key: str, model: str) -> bool:
        seen = {"api": api, "api_key": api_key, "model": model}
        return all(seen[name] == want for name, want in self.match.items())

    def as_json(self) -> dict[str, Any]:
        return {"match": self.match, "times": self.times, "action": self.action}


@dataclass
class Config:
    chunks: int
    chunk_delay: float
    ttft: float
    text: list[str] | None = None
    faults: list[Fault] = field(default_factory=list)
    tool_calls: list[dict[str, Any]] | None = None  # [{"name": str, "arguments": {...}}]
    tool_text: str | None = None  # a text piece before the tool calls
    arguments_chunk: int = 8  # characters of arguments JSON per streamed piece
    thinking: str | None = None
    cache: dict[str, int] | None = None  # {"read": N, "write": M}

    def as_json(self) -> dict[str, Any]:
        return {
            "chunks": self.chunks,
            "chunk_delay": self.chunk_delay,
            "ttft": self.ttft,
            "text": self.text,
            "faults": [fault.as_json() for fault in self.faults],
            "tool_calls": copy.deepcopy(self.tool_calls),
            "tool_text": self.tool_text,
            "arguments_chunk": self.arguments_chunk,
            "thinking": self.thinking,
            "cache": None if self.cache is None else dict(self.cache),
        }


def _count(cfg: Mapping[str, Any], name: str) -> int:
    value = cfg.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{name} must be a non-negative integer")
    return value


def _seconds(cfg: Mapping[str, Any], name: str) -> float:
    value = cfg.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf:
        raise ConfigError(f"{name} must be a non-negative number of seconds")
    return float(value)


def _parse_fault(rule: Any) -> Fault:
    if not isinstance(rule, dict):
        raise ConfigError("each fault must be an object")
    match = rule.get("match") or {}
    if not isinstance(match, dict) or not set(match) <= MATCH_KEYS:
        raise ConfigError(f"fault match may only use {sorted(MATCH_KEYS)}")
    if not all(isinstance(value, str) for value in match.values()):
        raise ConfigError("fault match values must be strings")
    if "api" in match and match["api"] not in MATCH_APIS:
        raise ConfigError(f"fault match api must be one of {list(MATCH_APIS)}")
    times = rule.get("times")
    if times is not None and (isinstance(times, bool) or not isinstance(times, int) or times < 0):
        raise ConfigError("fault times must be null or a non-negative integer")
    action = rule.get("action")
    if not isinstance(action, dict) or action.get("type") not in FAULT_ACTIONS:
        raise ConfigError(f"fault action type must be one of {sorted(FAULT_ACTIONS)}")
    kind = action["type"]
    if kind == "status":
        status = action.get("status")
        if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
            raise ConfigError("a status fault needs a status between 400 and 599")
        if not isinstance(action.get("headers", {}), dict):
            raise ConfigError("status fault headers must be an object")
    elif kind == "delay_headers":
        _seconds(action, "seconds")
    elif kind in ("break_after", "stream_error", "garbage_line"):
        _count(action, "chunks")
        if kind == "stream_error" and action.get("event", "error") not in RESPONSES_STREAM_ERRORS:
            raise ConfigError(f"stream_error event must be one of {list(RESPONSES_STREAM_ERRORS)}")
    elif kind == "body":
        if not isinstance(action.get("body"), dict):
            raise ConfigError("a body fault needs a body object")
    elif kind == "usage":
        if "usage" not in action or not isinstance(action["usage"], dict | None):
            raise ConfigError("a usage fault needs usage: an object or null")
    elif kind == "drip":
        if _seconds(action, "interval") <= 0:
            raise ConfigError("drip interval must be positive")
        _seconds(action, "max_seconds")
    return Fault(match=dict(match), times=times, action=copy.deepcopy(action))


def _text_of(content: Any) -> str:
    """A string content, or the text of its ``{"type": "text"}`` parts, concatenated."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
            if isinstance(part.get("text"), str)
        )
    return ""


def _parse_tool_calls(calls: Any) -> list[dict[str, Any]] | None:
    if calls is None:
        return None
    if not isinstance(calls, list):
        raise ConfigError("tool_calls must be null or a list")
    parsed = []
    for call in calls:
        if (
            not isinstance(call, dict)
            or set(call) != {"name", "arguments"}
            or not isinstance(call["name"], str)
            or not call["name"]
            or not isinstance(call["arguments"], dict)
        ):
            raise ConfigError('each tool call must be {"name": str, "arguments": {...}}')
        parsed.append({"name": call["name"], "arguments": copy.deepcopy(call["arguments"])})
    return parsed


def _words(content: Any) -> int:
    if isinstance(content, str):
        return len(content.split())
    if isinstance(content, list):
        total = 0
        for part in content:
            if not isinstance(part, dict):
                continue
            if part.get("type") == "text" and isinstance(part.get("text"), str):
                total += len(part["text"].split())
            elif part.get("type") == "tool_result":  # Anthropic: a result's own text counts
                total += _words(part.get("content"))
        return total
    return 0


def _tool_description(tool: Any) -> Any:
    """A tool definition's description: OpenAI ``function.description``, else ``description``."""
    if not isinstance(tool, dict):
        return None
    function = tool.get("function")
    return function.get("description") if isinstance(function, dict) else tool.get("description")


def prompt_tokens(messages: Iterable[Any], system: Any = None, tools: Any = None) -> int:
    """The documented deterministic prompt-token count of a request (see the module docs)."""
    total = sum(3 + _words(m.get("content")) for m in messages if isinstance(m, dict))
    if isinstance(tools, list):
        total += sum(3 + _words(_tool_description(tool)) for tool in tools)
    return total if system is None else total + 3 + _words(system)


def _word_pieces(text: str, per: int = WORDS_PER_PIECE) -> list[str]:
    """``text`` in pieces of ``per`` words each (with their spacing); they join back to it."""
    words = [word for word in re.split(r"(?<=\s)(?=\S)", text) if word]
    return ["".join(words[i : i + per]) for i in range(0, len(words), per)]


def _sign(secret: bytes, thinking: str) -> str:
    """A thinking block's signature: only this process can make one that verifies."""
    return base64.b64encode(hmac.new(secret, thinking.encode(), hashlib.sha256).digest()).decode()


def _seal(secret: bytes, reasoning: str) -> str:
    """A Responses reasoning item's ``encrypted_content``: its text with an HMAC of it, so the
    mock can tell, when it comes back, that it is its own and unaltered."""
    text = reasoning.encode()
    mac = hmac.new(secret, text, hashlib.sha256).digest()
    return "gAAAA" + base64.urlsafe_b64encode(mac + text).decode()


def _unseal(secret: bytes, sealed: str) -> str | None:
    """The reasoning text in ``sealed``, or None when this process did not make it so."""
    try:
        raw = base64.urlsafe_b64decode(sealed.removeprefix("gAAAA").encode())
    except (binascii.Error, ValueError):
        return None
    mac, text = raw[:32], raw[32:]
    if not sealed.startswith("gAAAA") or not hmac.compare_digest(
        mac, hmac.new(secret, text, hashlib.sha256).digest()
    ):
        return None
    return text.decode(errors="replace")


def _openai_error(
    message: str,
    *,
    kind: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _anthropic_error(kind: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": message}}


def _api_error(api: Api, status: int) -> dict[str, Any]:
    """The body a real provider of `api` would send with `status`."""
    if api != "anthropic":  # both OpenAI APIs share one error shape
        default = ("server_error", None, "The server had an error processing your request.")
        if status < 500:
            default = ("invalid_request_error", None, "Invalid request.")
        kind, code, text = OPENAI_ERRORS.get(status, default)
        return _openai_error(text, kind=kind, code=code)
    kind = ANTHROPIC_ERRORS.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return _anthropic_error(kind, f"Mock {kind}.")


def _sse(event: str, payload: dict[str, Any]) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + _json(payload) + b"\n\n"


async def _read_body(receive: Receive) -> bytes | None:
    """The request body, or None when the client left before sending all of it."""
    parts = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(parts)


async def _disconnected(receive: Receive) -> float:
    """Wait for the client to go away; return when that happened."""
    while (await receive())["type"] != "http.disconnect":
        pass
    return time.time()


def _daphne_request(send: Send) -> Any:
    """The Twisted request behind Daphne's `send`, or None under any other server.

    Daphne hands applications ``functools.partial(server.handle_reply, request)``. ASGI has no
    way to abort a response, and returning early only makes Daphne finish it cleanly, so this
    is the one way to make a client see a connection dropped mid-body.
    """
    for candidate in getattr(send, "args", ()):
        if callable(getattr(candidate, "loseConnection", None)):
            return candidate
    return None


class _Call:
    """One provider API call: its record, its response channel and its client watcher."""

    def __init__(
        self, api: Api, send: Send, record: dict[str, Any], gone: asyncio.Task[float]
    ) -> None:
        self.api = api
        self.send = send
        self.record = record
        self.gone = gone
        self.request_id = REQUEST_ID_HEADER[api], b"req_" + secrets.token_hex(12).encode()

    async def start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.record["status"] = status
        headers = [*headers, self.request_id]
        await self.send({"type": "http.response.start", "status": status, "headers": headers})

    async def body(self, data: bytes, *, more: bool = True) -> None:
        await self.send({"type": "http.response.body", "body": data, "more_body": more})

    async def json(
        self, status: int, payload: Any, headers: Iterable[tuple[bytes, bytes]] = ()
    ) -> None:
        data = _json(payload)
        length = (b"content-length", str(len(data)).encode())
        await self.start(status, [JSON_TYPE, length, *headers])
        await self.body(data, more=False)

    async def error(
        self, status: int, message: str, *, param: str | None = None, code: str | None = None
    ) -> None:
        """Reject the call in the API's own error shape (only OpenAI's has param and code)."""
        if self.api != "anthropic":
            await self.json(status, _openai_error(message, param=param, code=code))
        else:
            await self.json(status, _anthropic_error(ANTHROPIC_ERRORS[status], message))

    async def pause(self, seconds: float) -> bool:
        """Wait `seconds` unless the client leaves first; True when it has left."""
        if seconds > 0:
            await asyncio.wait((self.gone,), timeout=seconds)
        if not self.gone.done():
            return False
        self.record["disconnected"] = True
        self.record["disconnected_at"] = self.gone.result()
        return True

    async def piece(self, frames: list[bytes], piece: str, kind: str) -> None:
        """Send one piece's frames (block transitions first); it counts one output token."""
        for frame in frames:
            await self.body(frame)
        now = time.time()
        record = self.record
        if record["first_chunk_at"] is None:
            record["first_chunk_at"] = now
        record["chunk_times"].append(now)
        record["chunks_sent"] += 1
        usage = record["usage"]
        usage["output_tokens"] += 1
        if kind == "text":
            record["text_sent"] += piece
        elif kind == "thinking":
            usage["reasoning_tokens"] += 1

    async def abort(self) -> None:
        request = _daphne_request(self.send)
        if request is not None:
            request.loseConnection()
        else:
            await self.body(b"", more=False)


@dataclass
class _Block:
    """One content block of a reply: text, thinking, or a tool call, as streamed pieces."""

    kind: Literal["text", "thinking", "tool_use"]
    pieces: list[str]
    call_id: str = ""
    name: str = ""
    arguments: dict[str, Any] | None = None
    complete: bool = True  # False when the token limit cut it short
    custom: bool = False  # Responses: a call of a `custom` tool (its pieces are its input)
    item_id: str = ""  # Responses: the output item's id

    @property
    def text(self) -> str:
        return "".join(self.pieces)


class _Reject(Exception):
    """A request the real API refuses with a 400 (only OpenAI's error has param and code)."""

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message, self.param, self.code = message, param, code


@dataclass
class _Plan:
    """What a validated call will produce, fixed at its start."""

    model: str
    full: list[_Block]  # the whole reply the mock would give without a token limit
    prompt_tokens: int
    ttft: float
    chunk_delay: float
    secret: bytes
    cut_at: str | None = None  # the stop sequence the full reply's text was cut at
    cache_read: int | None = None  # None: the reply reports no cache figures
    cache_write: int = 0
    blocks: list[_Block] = field(default_factory=list)  # what is sent, after the limit
    truncated: bool = False
    break_at: int | None = None
    error_at: int | None = None  # a stream's provider error event after this many pieces
    error_message: str = ""
    garbage_at: int | None = None  # a stream's data line that is not JSON, after this many
    # The usage object the reply reports instead of its true counts; None: no usage at all.
    usage_override: dict[str, Any] | None = None
    usage_replaced: bool = False
    error_event: str = "error"  # Responses: what a stream_error fault sends
    encrypt_reasoning: bool = False  # Responses: reasoning items carry encrypted_content

    def limit_to(self, limit: int | None) -> None:
        """Keep the first ``limit`` pieces of the full reply (blocks past them are dropped)."""
        total = sum(len(block.pieces) for block in self.full)
        self.truncated = limit is not None and total > limit
        if limit is None or not self.truncated:
            self.blocks = [replace(block, pieces=list(block.pieces)) for block in self.full]
            return
        left, self.blocks = limit, []
        for block in self.full:
            if left == 0:
                break
            kept = block.pieces[:left]
            left -= len(kept)
            self.blocks.append(replace(block, pieces=kept, complete=kept == block.pieces))

    @property
    def stop_sequence(self) -> str | None:
        """The stop sequence that ended the reply; None when the token limit came first."""
        return None if self.truncated else self.cut_at

    @property
    def pieces(self) -> list[tuple[int, str]]:
        """Every piece to send, with the index of its block."""
        return [(index, piece) for index, block in enumerate(self.blocks) for piece in block.pieces]

    def count(self, kind: str | None = None) -> int:
        return sum(len(b.pieces) for b in self.blocks if kind is None or b.kind == kind)

    def text(self) -> str | None:
        texts = [block.text for block in self.blocks if block.kind == "text"]
        return "".join(texts) if texts else None

    def tools(self) -> list[_Block]:
        return [block for block in self.blocks if block.kind == "tool_use"]

    def signature(self, block: _Block) -> str:
        return _sign(self.secret, block.text)

    def sealed(self, block: _Block) -> str:
        """A reasoning item's encrypted_content: only this process can make one that opens."""
        return _seal(self.secret, block.text)

    def openai_finish(self) -> str:
        if self.truncated:
            return "length"
        return "tool_calls" if self.tools() else "stop"

    def anthropic_stop(self) -> str:
        if self.truncated:
            return "max_tokens"
        if self.stop_sequence is not None:
            return "stop_sequence"
        return "tool_use" if self.tools() else "end_turn"


@dataclass
class _Inspection:
    """What a validated request asks for, beyond model, messages and limit."""

    prompt_tokens: int
    images: int
    tool_results: list[dict[str, Any]] | None  # the last message's results, if it is one
    offered: dict[str, str]  # the tools the request offers: name -> "function" | "custom"
    tools_allowed: bool  # False under tool_choice none
    thinking: bool  # Anthropic: the request enables thinking
    stops: list[str]
    encrypt_reasoning: bool = False  # Responses: `include` asks for encrypted reasoning


def _inspect(api: Api, payload: dict[str, Any], messages: list[Any], secret: bytes) -> _Inspection:
    """Validate what the real API validates about tools, images, thinking and stops."""
    images = (_openai_images if api == "openai" else _anthropic_images)(messages)
    if api == "openai":
        results = _openai_tool_results(messages)
    else:
        results = _anthropic_tool_results(messages)
        _check_signatures(messages, secret)
    tools = payload.get("tools")
    offered: dict[str, str] = {}
    for tool in tools if isinstance(tools, list) else []:
        if not isinstance(tool, dict):
            continue
        function = tool.get("function") if api == "openai" else tool
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            offered[function["name"]] = "function"
    choice = payload.get("tool_choice")
    allowed = choice != "none" and not (isinstance(choice, dict) and choice.get("type") == "none")
    thinking = False
    if api == "anthropic":
        thinking = _check_thinking(payload)
    system = payload.get("system") if api == "anthropic" else None
    return _Inspection(
        prompt_tokens=prompt_tokens(messages, system, tools),
        images=images,
        tool_results=results,
        offered=offered,
        tools_allowed=allowed,
        thinking=thinking,
        stops=_stops(api, payload),
    )


def _stops(api: Api, payload: dict[str, Any]) -> list[str]:
    if api == "openai":
        stop = payload.get("stop")
        if stop is None:
            return []
        stops = [stop] if isinstance(stop, str) else stop
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise _Reject(
                "Invalid type for 'stop': expected a string or an array of strings.",
                param="stop",
                code="invalid_type",
            )
        if len(stops) > 4:
            raise _Reject(
                f"Invalid 'stop': array too long. Expected an array with maximum length 4, "
                f"but got an array with length {len(stops)} instead.",
                param="stop",
                code="array_above_max_length",
            )
        return [s for s in stops if s]
    stops = payload.get("stop_sequences")
    if stops is None:
        return []
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise _Reject("stop_sequences: Input should be a valid list of strings")
    if any(not s.strip() for s in stops):
        raise _Reject("stop_sequences: each stop sequence must contain non-whitespace")
    return list(stops)


def _check_thinking(payload: dict[str, Any]) -> bool:
    """Whether an Anthropic request enables thinking; _Reject for an invalid budget."""
    thinking = payload.get("thinking")
    if not isinstance(thinking, dict) or thinking.get("type") not in ("enabled", "adaptive"):
        return False
    if thinking["type"] == "enabled":
        budget = thinking.get("budget_tokens")
        if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1024:
            raise _Reject(
                "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024"
            )
        limit = payload.get("max_tokens")
        if isinstance(limit, int) and limit <= budget:
            raise _Reject("`max_tokens` must be greater than `thinking.budget_tokens`.")
    return True


def _check_signatures(messages: list[Any], secret: bytes) -> None:
    """Thinking blocks passed back must carry the signature this mock gave their text."""
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") != "assistant":
            continue
        content = message.get("content")
        for j, block in enumerate(content if isinstance(content, list) else []):
            if not isinstance(block, dict) or block.get("type") != "thinking":
                continue
            signature, text = block.get("signature"), block.get("thinking")
            if not isinstance(signature, str):
                raise _Reject(f"messages.{i}.content.{j}.thinking.signature: Field required")
            if not isinstance(text, str) or not hmac.compare_digest(signature, _sign(secret, text)):
                raise _Reject(f"messages.{i}.content.{j}: Invalid `signature` in `thinking` block")


def _check_thinking_kept(messages: list[Any]) -> None:
    """With thinking on (and the mock thinking, as a real model then always does), the last
    assistant turn that called tools must be passed back starting with its thinking block,
    as Anthropic requires: a client or proxy that loses it in a tool loop is refused."""
    for i in range(len(messages) - 1, -1, -1):
        message = messages[i]
        if not isinstance(message, dict) or message.get("role") != "assistant":
            continue
        content = message.get("content")
        blocks = [b for b in content if isinstance(b, dict)] if isinstance(content, list) else []
        if not any(block.get("type") == "tool_use" for block in blocks):
            return
        first = blocks[0].get("type")
        if first not in ("thinking", "redacted_thinking"):
            raise _Reject(
                f"messages.{i}.content.0.type: Expected `thinking` or `redacted_thinking`, but "
                f"found `{first}`. When `thinking` is enabled, a final `assistant` message must "
                "start with a thinking block (preceeding the lastmost set of `tool_use` and "
                "`tool_result` blocks)."
            )
        return


def _openai_images(messages: list[Any]) -> int:
    count = 0
    for i, message in enumerate(messages):
        content = message.get("content") if isinstance(message, dict) else None
        for j, part in enumerate(content if isinstance(content, list) else []):
            if not isinstance(part, dict) or part.get("type") != "image_url":
                continue
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else None
            where = f"messages[{i}].content[{j}].image_url.url"
            param = f"messages.[{i}].content.[{j}].image_url.url"
            if not isinstance(url, str):
                raise _Reject(
                    f"Missing required parameter: '{where}'.",
                    param=param,
                    code="missing_required_parameter",
                )
            if not OPENAI_IMAGE_URL.match(url):
                raise _Reject(
                    f"Invalid image URL: '{where}'. Expected a base64-encoded data URL with an "
                    "image MIME type (e.g. 'data:image/png;base64,aW1nIGJ5dGVzIGhlcmU='), or "
                    "an http(s) URL.",
                    param=param,
                    code="invalid_image_url",
                )
            count += 1
    return count


def _anthropic_images(messages: list[Any]) -> int:
    count = 0
    for i, message in enumerate(messages):
        content = message.get("content") if isinstance(message, dict) else None
        for j, block in enumerate(content if isinstance(content, list) else []):
            if not isinstance(block, dict):
                continue
            if block.get("type") == "image":
                _check_anthropic_image(block, f"messages.{i}.content.{j}.image")
                count += 1
            elif block.get("type") == "tool_result" and isinstance(block.get("content"), list):
                for k, inner in enumerate(block["content"]):
                    if isinstance(inner, dict) and inner.get("type") == "image":
                        where = f"messages.{i}.content.{j}.tool_result.content.{k}.image"
                        _check_anthropic_image(inner, where)
                        count += 1
    return count


def _check_anthropic_image(block: dict[str, Any], where: str) -> None:
    source = block.get("source")
    if not isinstance(source, dict):
        raise _Reject(f"{where}.source: Field required")
    kind = source.get("type")
    if kind == "base64":
        if source.get("media_type") not in ANTHROPIC_MEDIA_TYPES:
            expected = ", ".join(f"'{media}'" for media in ANTHROPIC_MEDIA_TYPES[:-1])
            raise _Reject(
                f"{where}.source.base64.media_type: Input should be {expected} or "
                f"'{ANTHROPIC_MEDIA_TYPES[-1]}'"
            )
        data = source.get("data")
        if not isinstance(data, str) or not data:
            raise _Reject(f"{where}.source.base64.data: Field required")
        try:
            base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise _Reject(f"{where}.source.base64.data: invalid base64 data") from None
    elif kind == "url":
        if not isinstance(source.get("url"), str):
            raise _Reject(f"{where}.source.url.url: Field required")
    elif kind == "file":
        if not isinstance(source.get("file_id"), str):
            raise _Reject(f"{where}.source.file.file_id: Field required")
    else:
        raise _Reject(
            f"{where}.source: Input tag '{kind}' found using 'type' does not match any of the "
            "expected tags: 'base64', 'file', 'url'"
        )


def _images_in(content: Any, kind: str) -> int:
    if not isinstance(content, list):
        return 0
    return sum(1 for part in content if isinstance(part, dict) and part.get("type") == kind)


def _openai_tool_results(messages: list[Any]) -> list[dict[str, Any]] | None:
    """Check every tool message answers the assistant turn before it, and every call is
    answered; the trailing tool messages' results, or None when the last message is none."""
    calls: list[str] | None = None  # the ids the latest assistant turn called
    answered: set[str] = set()
    opened = 0  # that assistant turn's index
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role == "tool":
            assert isinstance(message, dict)
            if calls is None:
                raise _Reject(
                    "Invalid parameter: messages with role 'tool' must be a response to a "
                    "preceeding message with 'tool_calls'.",
                    param=f"messages.[{i}].role",
                )
            call_id = message.get("tool_call_id")
            if not isinstance(call_id, str):
                raise _Reject(
                    "Missing parameter 'tool_call_id': messages with role 'tool' must have a "
                    "'tool_call_id'.",
                    param=f"messages.[{i}].tool_call_id",
                )
            if call_id not in calls:
                raise _Reject(
                    f"Invalid parameter: 'tool_call_id' of '{call_id}' not found in "
                    "'tool_calls' of previous message.",
                    param=f"messages.[{i}].tool_call_id",
                )
            answered.add(call_id)
            continue
        _openai_all_answered(calls, answered, opened)
        calls, answered, opened = None, set(), i
        if role == "assistant" and isinstance(message, dict):
            listed = message.get("tool_calls")
            if isinstance(listed, list) and listed:
                calls = [str(c.get("id")) for c in listed if isinstance(c, dict)]
    last = messages[-1] if messages else None
    if not isinstance(last, dict) or last.get("role") != "tool":
        return None
    first = len(messages)
    while first > 0 and isinstance(messages[first - 1], dict):
        if messages[first - 1].get("role") != "tool":
            break
        first -= 1
    return [
        {
            "tool_use_id": m["tool_call_id"],
            "text": _text_of(m.get("content")),
            "is_error": False,
            "images": _images_in(m.get("content"), "image_url"),
        }
        for m in messages[first:]
    ]


def _openai_all_answered(calls: list[str] | None, answered: set[str], at: int) -> None:
    missing = [call for call in calls or [] if call not in answered]
    if missing:
        raise _Reject(
            "An assistant message with 'tool_calls' must be followed by tool messages "
            "responding to each 'tool_call_id'. The following tool_call_ids did not have "
            f"response messages: {', '.join(map(str, missing))}",
            param=f"messages.[{at}].role",
        )


def _blocks(message: Any, kind: str) -> list[tuple[int, dict[str, Any]]]:
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, list):
        return []
    return [(j, b) for j, b in enumerate(content) if isinstance(b, dict) and b.get("type") == kind]


def _anthropic_tool_results(messages: list[Any]) -> list[dict[str, Any]] | None:
    """Check tool results answer the message before, and tool uses are answered in the next;
    the last message's results, or None when it has no tool_result block."""
    for i, message in enumerate(messages):
        uses = {b.get("id") for _, b in _blocks(messages[i - 1], "tool_use")} if i else set()
        results = _blocks(message, "tool_result")
        for j, block in results:
            if block.get("tool_use_id") not in uses:
                raise _Reject(
                    f"messages.{i}.content.{j}: unexpected `tool_use_id` found in "
                    f"`tool_result` blocks: {block.get('tool_use_id')}. Each `tool_result` "
                    "block must have a corresponding `tool_use` block in the previous message."
                )
        if i and uses:
            missing = uses - {b.get("tool_use_id") for _, b in results}
            if missing:
                raise _Reject(
                    f"messages.{i}: `tool_use` ids were found without `tool_result` blocks "
                    f"immediately after: {', '.join(sorted(map(str, missing)))}. Each "
                    "`tool_use` block must have a corresponding `tool_result` block in the "
                    "next message."
                )
    last = _blocks(messages[-1], "tool_result") if messages else []
    if not last or messages[-1].get("role") != "user":
        return None
    return [
        {
            "tool_use_id": block.get("tool_use_id"),
            "text": _text_of(block.get("content")),
            "is_error": block.get("is_error") is True,
            "images": _images_in(block.get("content"), "image"),
        }
        for _, block in last
    ]


# --- OpenAI Responses -------------------------------------------------------------------------

RESPONSES_TEXT_PARTS = ("input_text", "output_text", "text")
RESPONSES_CALLS = {"function_call": "function", "custom_tool_call": "custom tool"}
RESPONSES_OUTPUTS = {"function_call_output": "function", "custom_tool_call_output": "custom tool"}


def _responses_items(payload: dict[str, Any]) -> list[Any]:
    """The input as a list of items (a string input is one user message)."""
    given = payload["input"]
    return [{"role": "user", "content": given}] if isinstance(given, str) else given


def _responses_text(content: Any) -> str:
    """A string, or the text of a list's text parts (``input_text``, ``output_text``)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and part.get("type") in RESPONSES_TEXT_PARTS
            if isinstance(part.get("text"), str)
        )
    return ""


def _responses_words(content: Any) -> int:
    if isinstance(content, list):
        return sum(_responses_words(_responses_text([part])) for part in content)
    return len(content.split()) if isinstance(content, str) else 0


def _responses_prompt_tokens(payload: dict[str, Any], items: list[Any]) -> int:
    """The prompt-token rule for a Responses request (see the module docs)."""
    total = 0
    for item in items:
        if not isinstance(item, dict):
            continue
        kind = item.get("type", "message")
        if kind == "message":
            total += 3 + _responses_words(item.get("content"))
        elif kind in RESPONSES_OUTPUTS:
            total += 3 + _responses_words(item.get("output"))
    instructions = payload.get("instructions")
    if isinstance(instructions, str):
        total += 3 + _responses_words(instructions)
    tools = payload.get("tools")
    for tool in tools if isinstance(tools, list) else []:
        if isinstance(tool, dict):
            total += 3 + _responses_words(tool.get("description"))
    return total


def _responses_images(items: list[Any]) -> int:
    """Count (and check, as OpenAI does) the ``input_image`` parts of messages and outputs."""
    count = 0
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            continue
        field_name = "output" if item.get("type") in RESPONSES_OUTPUTS else "content"
        parts = item.get(field_name)
        for j, part in enumerate(parts if isinstance(parts, list) else []):
            if not isinstance(part, dict) or part.get("type") != "input_image":
                continue
            url, where = part.get("image_url"), f"input[{i}].{field_name}[{j}].image_url"
            if url is None and isinstance(part.get("file_id"), str):
                count += 1
                continue
            if not isinstance(url, str) or not OPENAI_IMAGE_URL.match(url):
                raise _Reject(
                    f"Invalid '{where}'. Expected a base64-encoded data URL with an image MIME "
                    "type (e.g. 'data:image/png;base64,aW1nIGJ5dGVzIGhlcmU='), or an http(s) "
                    "URL.",
                    param=where,
                    code="invalid_value",
                )
            count += 1
    return count


def _responses_tool_results(items: list[Any]) -> list[dict[str, Any]] | None:
    """Check every tool output answers a call earlier in the input and every call is
    answered (OpenAI's own messages); the trailing outputs' results, or None."""
    calls: dict[str, str] = {}  # call_id -> what OpenAI calls its kind
    answered: set[str] = set()
    for item in items:
        kind = item.get("type") if isinstance(item, dict) else None
        if kind in RESPONSES_CALLS:
            assert isinstance(item, dict)
            calls[str(item.get("call_id"))] = RESPONSES_CALLS[str(kind)]
        elif kind in RESPONSES_OUTPUTS:
            assert isinstance(item, dict)
            call_id = item.get("call_id")
            if str(call_id) not in calls:
                raise _Reject(
                    f"No tool call found for {RESPONSES_OUTPUTS[str(kind)]} call output with "
                    f"call_id {call_id}.",
                    param="input",
                )
            answered.add(str(call_id))
    for call_id, what in calls.items():
        if call_id not in answered:
            raise _Reject(f"No tool output found for {what} call {call_id}.", param="input")
    first = len(items)
    while first > 0 and isinstance(items[first - 1], dict):
        if items[first - 1].get("type") not in RESPONSES_OUTPUTS:
            break
        first -= 1
    if first == len(items):
        return None
    return [
        {
            "tool_use_id": item.get("call_id"),
            "text": _responses_text(item.get("output")),
            "is_error": False,
            "images": _images_in(item.get("output"), "input_image"),
        }
        for item in items[first:]
    ]


def _check_reasoning(items: list[Any], secret: bytes) -> None:
    """Reasoning items passed back must carry encrypted content this mock made: it stores
    nothing, so one without it names an item it cannot have (OpenAI's messages for both)."""
    for item in items:
        if not isinstance(item, dict) or item.get("type") != "reasoning":
            continue
        sealed = item.get("encrypted_content")
        if sealed is None:
            raise _Reject(
                f"Item with id '{item.get('id')}' not found. Items are not persisted when "
                "`store` is set to false. Try again with `store` set to true, or remove this "
                "item from your input.",
                param="input",
            )
        if not isinstance(sealed, str) or _unseal(secret, sealed) is None:
            shown = f"{sealed[:4]}...{sealed[-4:]}" if isinstance(sealed, str) else sealed
            raise _Reject(
                f"The encrypted content {shown} could not be verified.",
                code="invalid_encrypted_content",
            )


def _inspect_responses(payload: dict[str, Any], secret: bytes) -> _Inspection:
    """Validate what OpenAI validates about a Responses request's items and tools."""
    previous = payload.get("previous_response_id")
    if previous is not None:
        # The mock stores nothing, so every id names a response it does not have: OpenAI's
        # answer for an id it does not hold.
        raise _Reject(
            f"Previous response with id '{previous}' not found.",
            param="previous_response_id",
            code="previous_response_not_found",
        )
    items = _responses_items(payload)
    images = _responses_images(items)
    results = _responses_tool_results(items)
    _check_reasoning(items, secret)
    offered: dict[str, str] = {}
    tools = payload.get("tools")
    for tool in tools if isinstance(tools, list) else []:
        if isinstance(tool, dict) and isinstance(tool.get("name"), str):
            offered[tool["name"]] = "custom" if tool.get("type") == "custom" else "function"
    choice = payload.get("tool_choice")
    include = payload.get("include")
    return _Inspection(
        prompt_tokens=_responses_prompt_tokens(payload, items),
        images=images,
        tool_results=results,
        offered=offered,
        tools_allowed=choice != "none",
        thinking=False,
        stops=[],  # stop sequences are no Responses feature
        encrypt_reasoning=isinstance(include, list) and ENCRYPTED_REASONING in include,
    )


def _check_responses_input(payload: dict[str, Any]) -> None:
    """The checks of a Responses request's shape OpenAI makes before reading its items."""
    given = payload.get("input")
    if given is None:
        raise _Reject(
            "Missing required parameter: 'input'.", param="input", code="missing_required_parameter"
        )
    if not isinstance(given, str | list):
        raise _Reject(
            "Invalid type for 'input': expected one of a string or an array of input items, "
            f"but got {type(given).__name__} instead.",
            param="input",
            code="invalid_type",
        )
    for i, item in enumerate(given if isinstance(given, list) else []):
        if not isinstance(item, dict):
            raise _Reject(
                f"Invalid type for 'input[{i}]': expected an input item, but got "
                f"{type(item).__name__} instead.",
                param=f"input[{i}]",
                code="invalid_type",
            )


def _cut_at_stop(blocks: list[_Block], stops: list[str]) -> str | None:
    """Cut the reply's text just before the first stop sequence in it (dropping all that
    follows); the sequence, or None when the text contains none."""
    for index, block in enumerate(blocks):
        if block.kind != "text":
            continue
        text = block.text
        found = [(text.find(stop), stop) for stop in stops if stop in text]
        if not found:
            return None
        at, stop = min(found)
        kept, length = [], 0
        for piece in block.pieces:
            if length + len(piece) >= at:
                if at > length:
                    kept.append(piece[: at - length])
                break
            kept.append(piece)
            length += len(piece)
        block.pieces = kept
        del blocks[index + 1 :]
        return stop
    return None


class MockProvider:
    """The mock provider's state (configuration, records, call count) and its ASGI entry."""

    def __init__(self, *, chunks: int = 8, chunk_delay: float = 0.0, ttft: float = 0.0) -> None:
        self.config = Config(chunks=0, chunk_delay=0.0, ttft=0.0)
        self.configure({"chunks": chunks, "chunk_delay": chunk_delay, "ttft": ttft})
        self._defaults = copy.copy(self.config)
        # Signs the thinking blocks this process makes, so it can tell them when they return.
        self._secret = secrets.token_bytes(32)
        self.records: deque[dict[str, Any]] = deque(maxlen=MAX_RECORDS)
        self.calls = 0

    def reset(self) -> None:
        self.records.clear()
        self.calls = 0
        self.config = copy.copy(self._defaults)

    def configure(self, changes: Mapping[str, Any]) -> None:
        """Merge `changes` into the configuration, all or nothing; ConfigError if invalid.

        Keys: ``chunks`` (int), ``chunk_delay`` and ``ttft`` (seconds), ``text`` (a list of
        pieces, or null for the default words) and ``faults``, a list that replaces the current
        one, of rules ``{"match": {"api_key"?, "model"?, "api"?}, "times": N | null,
        "action": {...}}`` with one of these actions:

        - ``{"type": "status", "status": S, "headers": {...}?, "body": {...}?}``: answer S with
          those headers and body (default: the API's own error shape for S);
        - ``{"type": "delay_headers", "seconds": S}``: wait S seconds, then answer normally;
        - ``{"type": "break_after", "chunks": K}``: stream K pieces, then drop the connection
          (a non-streamed call gets its headers and half its body first);
        - ``{"type": "drip", "interval": S, "max_seconds": T}``: after the headers, send an SSE
          comment every S seconds, never any content, and end the body after T seconds;
        - ``{"type": "echo_key"}``: a 400 error whose message contains the request's API key;
        - ``{"type": "echo_key_in_answer"}``: a normal 200 answer whose first piece quotes the
          request's API key (as a provider quoting it in an error-like text would);
        - ``{"type": "stream_error", "chunks": K, "event"?: "error" | "response.failed"}``: a
          stream of K pieces, then the API's own mid-stream error event quoting the request's
          API key, and the end of the body (Responses: an ``error`` event, its error nested as
          OpenAI sends it, or with ``"event": "response.failed"`` a failed response);
        - ``{"type": "usage", "usage": {...} | null}``: the reply (and a stream's usage
          event) reports this usage object instead of the true one, in the API's own field
          names (``prompt_tokens``... or ``input_tokens``...), or none at all for null;
        - ``{"type": "garbage_line", "chunks": K}``: a stream of K pieces, then a data line
          that is not JSON, then the rest of the stream as usual;
        - ``{"type": "body", "body": {...}}``: a 200 whose JSON body is this (an error sent
          as a 200, say), streamed or not;
        - ``{"type": "prefer_max_tokens"}``: an OpenAI call keeps to ``max_tokens`` even when
          ``max_completion_tokens`` is set (as some OpenAI-compatible servers do).

        Agent keys (the module docs say what each reply does with them):

        - ``tool_calls``: ``[{"name": str, "arguments": {...}}, ...]`` or null: the calls a
          request offering those tools gets, all in one turn;
        - ``tool_text``: a non-empty string or null: a text piece before the tool calls;
        - ``arguments_chunk`` (int, at least 1; default 8): characters of arguments JSON per
          streamed piece;
        - ``thinking``: a non-empty string or null: the reply's thinking / reasoning text;
        - ``cache``: ``{"read": R, "write": W}`` or null: the cache figures replies report.
        """
        unknown = set(changes) - CONFIG_KEYS
        if unknown:
            raise ConfigError(f"unknown config keys: {sorted(unknown)}")
        new = copy.copy(self.config)
        if "chunks" in changes:
            new.chunks = _count(changes, "chunks")
        if "chunk_delay" in changes:
            new.chunk_delay = _seconds(changes, "chunk_delay")
        if "ttft" in changes:
            new.ttft = _seconds(changes, "ttft")
        if "text" in changes:
            text = changes["text"]
            if text is not None and (
                not isinstance(text, list) or not text or not all(isinstance(t, str) for t in text)
            ):
                raise ConfigError("text must be null or a non-empty list of strings")
            new.text = None if text is None else list(text)
        if "faults" in changes:
            if not isinstance(changes["faults"], list):
                raise ConfigError("faults must be a list")
            new.faults = [_parse_fault(rule) for rule in changes["faults"]]
        if "tool_calls" in changes:
            new.tool_calls = _parse_tool_calls(changes["tool_calls"])
        for name in ("tool_text", "thinking"):
            if name in changes:
                value = changes[name]
                if value is not None and (not isinstance(value, str) or not value):
                    raise ConfigError(f"{name} must be null or a non-empty string")
                setattr(new, name, value)
        if "arguments_chunk" in changes:
            new.arguments_chunk = _count(changes, "arguments_chunk")
            if new.arguments_chunk < 1:
                raise ConfigError("arguments_chunk must be at least 1")
        if "cache" in changes:
            cache = changes["cache"]
            if cache is not None:
                if not isinstance(cache, dict) or set(cache) != {"read", "write"}:
                    raise ConfigError('cache must be null or {"read": N, "write": M}')
                cache = {"read": _count(cache, "read"), "write": _count(cache, "write")}
            new.cache = cache
        self.config = new

    def stats(self) -> dict[str, Any]:
        return {"calls": self.calls, "requests": list(self.records)}

    def _take_fault(self, api: Api, api_key: str, model: str) -> dict[str, Any] | None:
        for fault in self.config.faults:
            if fault.times != 0 and fault.fits(api, api_key, model):
                if fault.times is not None:
                    fault.times -= 1
                return fault.action
        return None

    # --- ASGI ------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        body = await _read_body(receive)
        if body is None:
            return
        method, path = scope["method"], scope["path"]
        if method == "POST" and path == "/v1/chat/completions":
            await self._provider_call("openai", scope, body, receive, send)
        elif method == "POST" and path == "/v1/messages":
            await self._provider_call("anthropic", scope, body, receive, send)
        elif method == "POST" and path == "/v1/responses":
            await self._provider_call("responses", scope, body, receive, send)
        elif method == "POST" and path == "/v1/messages/count_tokens":
            await self._provider_call("anthropic", scope, body, receive, send)
        elif method == "GET" and path == "/v1/models":
            await _send_json(send, 200, MODEL_LIST)
        elif path.startswith("/_mock/"):
            await self._control(method, path, body, send)
        else:
            await _send_json(send, 404, _openai_error(f"Unknown route: {method} {path}"))

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _control(self, method: str, path: str, body: bytes, send: Send) -> None:
        if method == "GET" and path == "/_mock/stats":
            await _send_json(send, 200, self.stats())
        elif method == "POST" and path == "/_mock/reset":
            self.reset()
            await _send_json(send, 200, self.config.as_json())
        elif method == "GET" and path == "/_mock/config":
            await _send_json(send, 200, self.config.as_json())
        elif method == "POST" and path == "/_mock/config":
            try:
                changes = json.loads(body or b"{}")
                if not isinstance(changes, dict):
                    raise ConfigError("the config must be a JSON object")
                self.configure(changes)
            except ValueError as exc:  # ConfigError and JSONDecodeError alike
                await _send_json(send, 400, {"error": str(exc)})
                return
            await _send_json(send, 200, self.config.as_json())
        else:
            await _send_json(send, 404, {"error": f"unknown control route: {method} {path}"})

    async def _provider_call(
        self, api: Api, scope: Scope, body: bytes, receive: Receive, send: Send
    ) -> None:
        self.calls += 1
        headers: dict[str, str] = {}
        for raw_name, raw_value in scope["headers"]:
            name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        prefix = {"openai": "chatcmpl-", "anthropic": "msg_", "responses": "resp_"}[api]
        record: dict[str, Any] = {
            "id": prefix + secrets.token_hex(12),
            "api": api,
            "path": scope["path"],
            "query": scope.get("query_string", b"").decode("latin-1"),
            "api_key": _api_key(api, headers),
            "model": None,
            "stream": False,
            "body": None,
            "headers": headers,
            "status": None,
            "started_at": time.time(),
            "first_chunk_at": None,
            "chunk_times": [],
            "chunks_sent": 0,
            "text_sent": "",
            "finished_at": None,
            "disconnected": False,
            "disconnected_at": None,
            "usage": None,
            "fault": None,
            "images": 0,
            "tool_results": None,
            "tool_calls": [],
            "thinking": None,
            "stop_sequence": None,
        }
        self.records.append(record)
        gone = asyncio.ensure_future(_disconnected(receive))
        try:
            await self._serve(_Call(api, send, record, gone), body)
        finally:
            gone.cancel()
            record["finished_at"] = time.time()

    async def _serve(self, call: _Call, body: bytes) -> None:
        api, record = call.api, call.record
        api_key: str = record["api_key"]
        if not api_key:
            if api != "anthropic":
                message = (
                    "You didn't provide an API key. You need to provide your API key in an "
                    "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
                )
                await call.error(401, message, code="invalid_api_key")
            else:
                await call.error(401, "x-api-key header is required")
            return
        if api == "anthropic" and not record["headers"].get("anthropic-version"):
            await call.error(400, "anthropic-version: header is required")
            return
        try:
            payload = json.loads(body)
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            await call.error(400, "We could not parse the JSON body of your request.")
            return
        record["body"] = payload
        record["stream"] = payload.get("stream") is True
        model = payload.get("model")
        record["model"] = model if isinstance(model, str) else None
        if record["path"] == "/v1/messages/count_tokens":
            await self._count_tokens(call, payload)
            return
        plan = await self._plan(call, payload)
        if plan is None:
            return
        record["usage"] = {"input_tokens": plan.prompt_tokens, "output_tokens": 0}
        if plan.cache_read is not None:
            record["usage"]["cache_read_tokens"] = plan.cache_read
            record["usage"]["cache_write_tokens"] = plan.cache_write

        action = self._take_fault(api, api_key, plan.model)
        record["fault"] = None if action is None else action["type"]
        if action is not None and await self._fault(call, plan, action):
            return
        record["tool_calls"] = [
            {"id": block.call_id, "name": block.name, "arguments": block.arguments}
            for block in plan.tools()
        ]
        thinking = [block.text for block in plan.blocks if block.kind == "thinking"]
        record["thinking"] = thinking[0] if thinking else None
        if thinking:
            record["usage"]["reasoning_tokens"] = 0
        record["stop_sequence"] = plan.stop_sequence
        if record["stream"]:
            await self._stream(call, plan, payload)
        else:
            await self._complete(call, plan)

    async def _count_tokens(self, call: _Call, payload: dict[str, Any]) -> None:
        """Anthropic's token counter: the prompt-token rule, on a request checked as
        ``/v1/messages`` checks it (but without ``max_tokens``)."""
        model, messages = payload.get("model"), payload.get("messages")
        for name, value, kind in (("model", model, str), ("messages", messages, list)):
            if not isinstance(value, kind):
                await call.error(400, f"{name}: Field required")
                return
        assert isinstance(messages, list)
        try:
            seen = _inspect("anthropic", payload, messages, self._secret)
        except _Reject as exc:
            await call.error(400, exc.message)
            return
        call.record["images"] = seen.images
        call.record["tool_results"] = seen.tool_results
        call.record["usage"] = {"input_tokens": seen.prompt_tokens, "output_tokens": 0}
        await call.json(200, {"input_tokens": seen.prompt_tokens})

    async def _fault(self, call: _Call, plan: _Plan, action: dict[str, Any]) -> bool:
        """Apply a fault action; True when it has answered the call itself."""
        kind = action["type"]
        if kind == "status":
            await self._status_fault(call, action)
        elif kind == "echo_key":
            call.record["usage"] = None
            await call.error(400, f"Incorrect API key provided: {call.record['api_key']}.")
        elif kind == "drip":
            await self._drip(call, action["interval"], action["max_seconds"])
        elif kind == "delay_headers":
            return await call.pause(action["seconds"])
        elif kind == "echo_key_in_answer":
            quote = f"Rate limit reached for key {call.record['api_key']}. "
            texts = [block for block in plan.blocks if block.kind == "text"]
            if texts:
                texts[0].pieces = [quote, *texts[0].pieces[1:]]
            else:
                plan.blocks.insert(0, _Block("text", [quote]))
            return False
        elif kind == "stream_error":
            plan.error_at = action["chunks"]
            plan.error_event = action.get("event", "error")
            plan.error_message = f"Rate limit reached for key {call.record['api_key']}."
            return False
        elif kind == "usage":
            plan.usage_override, plan.usage_replaced = action["usage"], True
            return False
        elif kind == "body":
            call.record["usage"] = None
            await call.json(200, action["body"])
        elif kind == "garbage_line":
            plan.garbage_at = action["chunks"]
            return False
        elif kind == "prefer_max_tokens":
            limit = call.record["body"].get("max_tokens")
            if call.api == "openai" and isinstance(limit, int) and not isinstance(limit, bool):
                plan.limit_to(limit)
            return False
        else:  # break_after: the normal reply, cut short
            plan.break_at = action["chunks"]
            return False
        return True

    async def _plan(self, call: _Call, payload: dict[str, Any]) -> _Plan | None:
        """Validate the call as the real API would, then fix its output; None if rejected."""
        model, messages = payload.get("model"), payload.get("messages")
        required: tuple[tuple[str, Any, type], ...] = (("model", model, str),)
        if call.api != "responses":  # a Responses request has `input`, checked below
            required += (("messages", messages, list),)
        for name, value, kind in required:
            if not isinstance(value, kind):
                if call.api != "anthropic":
                    message = f"Missing required parameter: '{name}'."
                    await call.error(400, message, param=name, code="missing_required_parameter")
                else:
                    await call.error(400, f"{name}: Field required")
                return None
        assert isinstance(model, str)
        if call.api == "responses":
            limit_name = "max_output_tokens"
        elif call.api == "openai":
            limit_name = "max_completion_tokens"
            if payload.get(limit_name) is None:
                limit_name = "max_tokens"
        else:
            limit_name = "max_tokens"
        limit = payload.get(limit_name)
        if limit is None and call.api == "anthropic":
            await call.error(400, "max_tokens: Field required")
            return None
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, int) or limit < 1
        ):
            message = f"Invalid '{limit_name}': expected an integer of at least 1."
            await call.error(400, message, param=limit_name, code="invalid_value")
            return None

        try:
            if call.api == "responses":
                _check_responses_input(payload)
                seen = _inspect_responses(payload, self._secret)
            else:
                assert isinstance(messages, list)
                seen = _inspect(call.api, payload, messages, self._secret)
                if call.api == "anthropic" and seen.thinking and self.config.thinking is not None:
                    _check_thinking_kept(messages)
        except _Reject as exc:
            await call.error(400, exc.message, param=exc.param, code=exc.code)
            return None
        call.record["images"] = seen.images
        call.record["tool_results"] = seen.tool_results

        config = self.config
        blocks: list[_Block] = []
        if config.thinking is not None and (call.api != "anthropic" or seen.thinking):
            blocks.append(_Block("thinking", _word_pieces(config.thinking)))
        mention = [f"I see {seen.images} image(s). "] if seen.images else []
        calls = [] if not seen.tools_allowed or seen.tool_results is not None else [
            tool for tool in config.tool_calls or [] if tool["name"] in seen.offered
        ]  # fmt: skip
        if seen.tool_results is not None:
            text = "Tool results: " + " | ".join(r["text"] for r in seen.tool_results)
            blocks.append(_Block("text", [*mention, *_word_pieces(text)]))
        elif calls:
            if config.tool_text is not None:
                blocks.append(_Block("text", [*mention, *_word_pieces(config.tool_text)]))
            id_prefix = "toolu_" if call.api == "anthropic" else "call_"
            size = config.arguments_chunk
            for tool in calls:
                # A Responses `custom` tool (Codex's apply_patch) takes free text: the
                # configured "input" string, else the arguments' JSON.
                custom = seen.offered[tool["name"]] == "custom"
                given = tool["arguments"].get("input")
                text = given if custom and isinstance(given, str) else _encode(tool["arguments"])
                pieces = [text[i : i + size] for i in range(0, len(text), size)]
                call_id = id_prefix + secrets.token_hex(12)
                block = _Block("tool_use", pieces, call_id, tool["name"], tool["arguments"])
                block.custom = custom
                blocks.append(block)
        else:
            words = config.text or DEFAULT_TEXT
            pieces = [words[i % len(words)] for i in range(config.chunks)]
            blocks.append(_Block("text", [*mention, *pieces]))
        plan = _Plan(
            model=model,
            full=blocks,
            prompt_tokens=seen.prompt_tokens,
            ttft=config.ttft,
            chunk_delay=config.chunk_delay,
            secret=self._secret,
            cut_at=_cut_at_stop(blocks, seen.stops),
        )
        if config.cache is not None:
            plan.cache_read = config.cache["read"]
            plan.cache_write = config.cache["write"] if call.api == "anthropic" else 0
        if call.api == "responses":
            plan.encrypt_reasoning = seen.encrypt_reasoning
            for block in blocks:
                block.item_id = _item_prefix(block) + secrets.token_hex(24)
        plan.limit_to(limit)
        return plan

    async def _status_fault(self, call: _Call, action: dict[str, Any]) -> None:
        status: int = action["status"]
        call.record["usage"] = None
        headers = [(str(k).encode(), str(v).encode()) for k, v in action.get("headers", {}).items()]
        body = action.get("body")
        await call.json(status, _api_error(call.api, status) if body is None else body, headers)

    async def _drip(self, call: _Call, interval: float, max_seconds: float) -> None:
        await call.start(200, SSE_HEADERS)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max_seconds
        while (remaining := deadline - loop.time()) > 0:
            if await call.pause(min(interval, remaining)):
                return
            if loop.time() < deadline:
                await call.body(b": drip\n\n")
        await call.body(b"", more=False)

    async def _complete(self, call: _Call, plan: _Plan) -> None:
        """A non-streamed reply, sent once the whole generation time has passed."""
        count = len(plan.pieces)
        if await call.pause(plan.ttft + plan.chunk_delay * max(count - 1, 0)):
            return
        if call.api == "responses":
            payload = _responses_reply(call.record["id"], plan, call.record["body"])
        else:
            reply = _openai_reply if call.api == "openai" else _anthropic_reply
            payload = reply(call.record["id"], plan)
        if plan.break_at is not None:
            data = _json(payload)
            await call.start(200, [JSON_TYPE])
            await call.body(data[: len(data) // 2])
            await call.abort()
            return
        record = call.record
        record["first_chunk_at"] = time.time()
        record["chunks_sent"] = count
        record["text_sent"] = plan.text() or ""
        record["usage"]["output_tokens"] = count
        if "reasoning_tokens" in record["usage"]:
            record["usage"]["reasoning_tokens"] = plan.count("thinking")
        await call.json(200, payload)

    async def _stream(self, call: _Call, plan: _Plan, payload: dict[str, Any]) -> None:
        if call.api == "openai":
            options = payload.get("stream_options")
            usage = isinstance(options, dict) and options.get("include_usage") is True
            frames: _Frames = _OpenAIFrames(call.record["id"], plan, include_usage=usage)
        elif call.api == "responses":
            frames = _ResponsesFrames(call.record["id"], plan, payload)
        else:
            frames = _AnthropicFrames(call.record["id"], plan)
        await call.start(200, SSE_HEADERS)
        for frame in frames.opening():
            await call.body(frame)
        for index, (block, piece) in enumerate(plan.pieces):
            if index == plan.break_at:
                await call.abort()
                return
            if index == plan.error_at:
                await call.body(frames.error(plan.error_message), more=False)
                return
            if index == plan.garbage_at:
                await call.body(b"data: <html>upstream proxy error</html>\n\n")
            if await call.pause(plan.ttft if index == 0 else plan.chunk_delay):
                return
            await call.piece(frames.piece(block, piece), piece, plan.blocks[block].kind)
        if plan.break_at is not None:
            await call.abort()
            return
        *middle, last = frames.closing()
        for frame in middle:
            await call.body(frame)
        await call.body(last, more=False)


def _stream_error_frame(api: Api, message: str) -> bytes:
    """The provider's own event for a stream that fails after it started."""
    if api == "openai":
        error = {"message": message, "type": "rate_limit_exceeded", "param": None, "code": None}
        return b"data: " + _json({"error": error}) + b"\n\n"
    event = {"type": "error", "error": {"type": "overloaded_error", "message": message}}
    return b"event: error\ndata: " + _json(event) + b"\n\n"


def _api_key(api: Api, headers: Mapping[str, str]) -> str:
    """The caller's key: a Bearer token, or for Anthropic preferably its x-api-key header."""
    if api == "anthropic" and headers.get("x-api-key"):
        return headers["x-api-key"]
    scheme, _, token = headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


async def _send_json(send: Send, status: int, payload: Any) -> None:
    data = _json(payload)
    headers = [JSON_TYPE, (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


def _openai_usage(plan: _Plan) -> dict[str, Any]:
    completion = plan.count()
    usage: dict[str, Any] = {
        "prompt_tokens": plan.prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": plan.prompt_tokens + completion,
    }
    # The details objects only when they have something to say, as OpenAI-compatible
    # providers (Moonshot, DeepSeek) send them.
    if plan.cache_read is not None:
        usage["prompt_tokens_details"] = {"cached_tokens": plan.cache_read, "audio_tokens": 0}
    reasoning = plan.count("thinking")
    if reasoning:
        usage["completion_tokens_details"] = {
            "reasoning_tokens": reasoning,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        }
    return usage


def _openai_reply(reply_id: str, plan: _Plan) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": plan.text(),
        "refusal": None,
        "annotations": [],
    }
    thinking = [block.text for block in plan.blocks if block.kind == "thinking"]
    if thinking:
        message["reasoning_content"] = "".join(thinking)
    if plan.tools():
        message["tool_calls"] = [
            {
                "id": block.call_id,
                "type": "function",
                "function": {"name": block.name, "arguments": block.text},
            }
            for block in plan.tools()
        ]
    reply = {
        "id": reply_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": plan.model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": plan.openai_finish(),
            }
        ],
        "usage": _openai_usage(plan),
        "service_tier": "default",
        "system_fingerprint": "fp_mock",
    }
    return _with_usage(reply, plan)


def _with_usage(reply: dict[str, Any], plan: _Plan, key: str = "usage") -> dict[str, Any]:
    """``reply`` with a usage fault's figures (or no usage at all) in place of the true ones."""
    if plan.usage_replaced:
        if plan.usage_override is None:
            reply.pop(key, None)
        else:
            reply[key] = plan.usage_override
    return reply


def _anthropic_usage(plan: _Plan, output_tokens: int) -> dict[str, int]:
    """Anthropic's figures: ``input_tokens`` leaves out the cached prompt tokens."""
    read = plan.cache_read or 0
    write = plan.cache_write
    return {
        "input_tokens": max(plan.prompt_tokens - read - write, 0),
        "cache_creation_input_tokens": write,
        "cache_read_input_tokens": read,
        "output_tokens": output_tokens,
    }


def _anthropic_block(plan: _Plan, block: _Block, *, whole: bool) -> dict[str, Any]:
    """A content block as a reply carries it (``whole``) or as its content_block_start does."""
    if block.kind == "text":
        return {"type": "text", "text": block.text if whole else ""}
    if block.kind == "thinking":
        if not whole:
            return {"type": "thinking", "thinking": "", "signature": ""}
        return {"type": "thinking", "thinking": block.text, "signature": plan.signature(block)}
    arguments = block.arguments if whole and block.complete else None
    return {"type": "tool_use", "id": block.call_id, "name": block.name, "input": arguments or {}}


def _anthropic_reply(reply_id: str, plan: _Plan) -> dict[str, Any]:
    reply = {
        "id": reply_id,
        "type": "message",
        "role": "assistant",
        "model": plan.model,
        "content": [_anthropic_block(plan, block, whole=True) for block in plan.blocks],
        "stop_reason": plan.anthropic_stop(),
        "stop_sequence": plan.stop_sequence,
        "usage": _anthropic_usage(plan, plan.count()),
    }
    return _with_usage(reply, plan)


class _Frames(Protocol):
    """The encoded SSE events of one streamed reply, in the order they are sent."""

    def opening(self) -> list[bytes]: ...

    def piece(self, block: int, text: str) -> list[bytes]:
        """The frames that send piece ``text`` of block ``block`` (the piece's own last)."""
        ...

    def closing(self) -> list[bytes]: ...

    def error(self, message: str) -> bytes:
        """The provider's own event for a stream that fails after it started."""
        ...


class _OpenAIFrames:
    def __init__(self, reply_id: str, plan: _Plan, *, include_usage: bool) -> None:
        self.plan = plan
        self.include_usage = include_usage
        self.head = {
            "id": reply_id,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": plan.model,
            "service_tier": "default",
            "system_fingerprint": "fp_mock",
        }
        tools = [i for i, block in enumerate(plan.blocks) if block.kind == "tool_use"]
        self.tool_index = {block: index for index, block in enumerate(tools)}
        self.started: set[int] = set()

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        chunk: dict[str, Any] = {**self.head, "choices": [choice]}
        if self.include_usage:
            chunk["usage"] = None
        return b"data: " + _json(chunk) + b"\n\n"

    def opening(self) -> list[bytes]:
        # A reply of tool calls only has null content, as OpenAI sends it.
        content = None if self.plan.text() is None else ""
        return [self._chunk({"role": "assistant", "content": content, "refusal": None}, None)]

    def piece(self, block: int, text: str) -> list[bytes]:
        kind = self.plan.blocks[block].kind
        if kind == "text":
            return [self._chunk({"content": text}, None)]
        if kind == "thinking":  # Moonshot's and DeepSeek's field for it
            return [self._chunk({"reasoning_content": text}, None)]
        frames = []
        index = self.tool_index[block]
        if block not in self.started:  # a call opens with its id and name, no arguments
            self.started.add(block)
            call = self.plan.blocks[block]
            function = {"name": call.name, "arguments": ""}
            opening = {"index": index, "id": call.call_id, "type": "function", "function": function}
            frames.append(self._chunk({"tool_calls": [opening]}, None))
        arguments = {"index": index, "function": {"arguments": text}}
        frames.append(self._chunk({"tool_calls": [arguments]}, None))
        return frames

    def closing(self) -> list[bytes]:
        plan = self.plan
        frames = [self._chunk({}, plan.openai_finish())]
        if self.include_usage:
            chunk = _with_usage({**self.head, "choices": [], "usage": _openai_usage(plan)}, plan)
            frames.append(b"data: " + _json(chunk) + b"\n\n")
        frames.append(b"data: [DONE]\n\n")
        return frames

    def error(self, message: str) -> bytes:
        return _stream_error_frame("openai", message)


class _AnthropicFrames:
    """Block 0 starts at once; each later block starts (after the previous one stopped) with
    its first piece, or at the end when it has none."""

    DELTAS = {"text": ("text_delta", "text"), "thinking": ("thinking_delta", "thinking"),
              "tool_use": ("input_json_delta", "partial_json")}  # fmt: skip

    def __init__(self, reply_id: str, plan: _Plan) -> None:
        self.reply_id = reply_id
        self.plan = plan
        self.current = 0  # the block started last

    def _start(self, index: int) -> bytes:
        block = _anthropic_block(self.plan, self.plan.blocks[index], whole=False)
        event = {"type": "content_block_start", "index": index, "content_block": block}
        return _sse("content_block_start", event)

    def _stop(self, index: int) -> list[bytes]:
        frames = []
        block = self.plan.blocks[index]
        if block.kind == "thinking":  # its signature comes just before its stop
            delta = {"type": "signature_delta", "signature": self.plan.signature(block)}
            event = {"type": "content_block_delta", "index": index, "delta": delta}
            frames.append(_sse("content_block_delta", event))
        event = {"type": "content_block_stop", "index": index}
        return [*frames, _sse("content_block_stop", event)]

    def _advance(self, to: int) -> list[bytes]:
        frames = []
        while self.current < to:
            frames += self._stop(self.current)
            self.current += 1
            if self.current < len(self.plan.blocks):
                frames.append(self._start(self.current))
        return frames

    def opening(self) -> list[bytes]:
        message: dict[str, Any] = {
            "id": self.reply_id,
            "type": "message",
            "role": "assistant",
            "model": self.plan.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": _anthropic_usage(self.plan, 1),
        }
        return [
            _sse("message_start", {"type": "message_start", "message": message}),
            self._start(0),
            _sse("ping", {"type": "ping"}),
        ]

    def piece(self, block: int, text: str) -> list[bytes]:
        kind, field_name = self.DELTAS[self.plan.blocks[block].kind]
        delta = {"type": kind, field_name: text}
        event = {"type": "content_block_delta", "index": block, "delta": delta}
        return [*self._advance(block), _sse("content_block_delta", event)]

    def closing(self) -> list[bytes]:
        plan = self.plan
        message_delta = {
            "type": "message_delta",
            "delta": {"stop_reason": plan.anthropic_stop(), "stop_sequence": plan.stop_sequence},
            # Real streams repeat the input and cache counts here, cumulative like the output.
            "usage": _anthropic_usage(plan, plan.count()),
        }
        _with_usage(message_delta, plan)
        return [
            *self._advance(len(plan.blocks)),
            _sse("message_delta", message_delta),
            _sse("message_stop", {"type": "message_stop"}),
        ]

    def error(self, message: str) -> bytes:
        return _stream_error_frame("anthropic", message)


def _item_prefix(block: _Block) -> str:
    """OpenAI's prefix for the id of an output item of this kind."""
    if block.kind == "text":
        return "msg_"
    if block.kind == "thinking":
        return "rs_"
    return "ctc_" if block.custom else "fc_"


def _output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "annotations": [], "logprobs": [], "text": text}


def _summary_text(text: str) -> dict[str, Any]:
    return {"type": "summary_text", "text": text}


def _responses_item(plan: _Plan, block: _Block, *, done: bool) -> dict[str, Any]:
    """An output item as ``response.output_item.added`` carries it, or (``done``) as
    ``response.output_item.done`` and the whole response do."""
    status = ("completed" if block.complete else "incomplete") if done else "in_progress"
    text = block.text if done else ""
    if block.kind == "text":
        content = [_output_text(text)] if done else []
        return {
            "id": block.item_id,
            "type": "message",
            "status": status,
            "content": content,
            "role": "assistant",
        }
    if block.kind == "thinking":
        item: dict[str, Any] = {"id": block.item_id, "type": "reasoning"}
        if plan.encrypt_reasoning:
            item["encrypted_content"] = plan.sealed(block)
        item["summary"] = [_summary_text(text)] if done else []
        return item
    if block.custom:
        return {
            "id": block.item_id,
            "type": "custom_tool_call",
            "status": status,
            "call_id": block.call_id,
            "input": text,
            "name": block.name,
        }
    return {
        "id": block.item_id,
        "type": "function_call",
        "status": status,
        "arguments": text,
        "call_id": block.call_id,
        "name": block.name,
    }


def _responses_usage(plan: _Plan) -> dict[str, Any]:
    """The Responses API's figures: ``input_tokens`` counts the cached ones too."""
    output = plan.count()
    return {
        "input_tokens": plan.prompt_tokens,
        "input_tokens_details": {"cached_tokens": plan.cache_read or 0, "cache_write_tokens": 0},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": plan.count("thinking")},
        "total_tokens": plan.prompt_tokens + output,
    }


def _responses_object(
    reply_id: str,
    plan: _Plan,
    payload: dict[str, Any],
    *,
    created: int,
    status: str,
    output: list[dict[str, Any]],
    error: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A ``response`` object: the request's settings echoed, as OpenAI does."""
    reasoning, text = payload.get("reasoning"), payload.get("text")
    reasoning = reasoning if isinstance(reasoning, dict) else {}
    text = text if isinstance(text, dict) else {}
    finished = status in ("completed", "incomplete")
    return {
        "id": reply_id,
        "object": "response",
        "created_at": created,
        "status": status,
        "background": False,
        "completed_at": int(time.time()) if status == "completed" else None,
        "error": error,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "instructions": payload.get("instructions"),
        "max_output_tokens": payload.get("max_output_tokens"),
        "max_tool_calls": payload.get("max_tool_calls"),
        "model": plan.model,
        "output": output,
        "parallel_tool_calls": payload.get("parallel_tool_calls", True),
        "previous_response_id": None,
        "prompt_cache_key": payload.get("prompt_cache_key"),
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "safety_identifier": payload.get("safety_identifier"),
        "service_tier": "default",
        "store": payload.get("store", True),
        "temperature": payload.get("temperature", 1.0),
        "text": {"format": {"type": "text"}, "verbosity": "medium", **text},
        "tool_choice": payload.get("tool_choice", "auto"),
        "tools": payload.get("tools", []),
        "top_logprobs": 0,
        "top_p": payload.get("top_p", 1.0),
        "truncation": payload.get("truncation", "disabled"),
        "usage": _responses_usage(plan) if finished else None,
        "user": payload.get("user"),
        "metadata": payload.get("metadata") or {},
    }


def _responses_reply(
    reply_id: str, plan: _Plan, payload: dict[str, Any], created: int | None = None
) -> dict[str, Any]:
    """The whole response: a non-streamed reply, and what a stream's last event carries."""
    reply = _responses_object(
        reply_id,
        plan,
        payload,
        created=int(time.time()) if created is None else created,
        status="incomplete" if plan.truncated else "completed",
        output=[_responses_item(plan, block, done=True) for block in plan.blocks],
    )
    return _with_usage(reply, plan)


class _ResponsesFrames:
    """OpenAI's Responses events: each numbered; item 0 opens at once, each later item (after
    the previous one's done events) with its first piece."""

    DELTAS = {"text": "response.output_text.delta",
              "thinking": "response.reasoning_summary_text.delta"}  # fmt: skip

    def __init__(self, reply_id: str, plan: _Plan, payload: dict[str, Any]) -> None:
        self.reply_id = reply_id
        self.plan = plan
        self.payload = payload
        self.created = int(time.time())
        self.sequence = 0
        self.current = 0  # the item opened last

    def _event(self, kind: str, **fields: Any) -> bytes:
        event = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return _sse(kind, event)

    def _where(self, index: int) -> dict[str, Any]:
        return {"item_id": self.plan.blocks[index].item_id, "output_index": index}

    def _start(self, index: int) -> list[bytes]:
        block = self.plan.blocks[index]
        item = _responses_item(self.plan, block, done=False)
        frames = [self._event("response.output_item.added", output_index=index, item=item)]
        where = self._where(index)
        if block.kind == "text":
            part = _output_text("")
            frames.append(
                self._event("response.content_part.added", **where, content_index=0, part=part)
            )
        elif block.kind == "thinking":
            part = _summary_text("")
            frames.append(
                self._event(
                    "response.reasoning_summary_part.added", **where, summary_index=0, part=part
                )
            )
        return frames

    def _stop(self, index: int) -> list[bytes]:
        block, where = self.plan.blocks[index], self._where(index)
        text = block.text
        if block.kind == "text":
            frames = [
                self._event(
                    "response.output_text.done", **where, content_index=0, text=text, logprobs=[]
                ),
                self._event(
                    "response.content_part.done", **where, content_index=0, part=_output_text(text)
                ),
            ]
        elif block.kind == "thinking":
            frames = [
                self._event(
                    "response.reasoning_summary_text.done", **where, summary_index=0, text=text
                ),
                self._event(
                    "response.reasoning_summary_part.done",
                    **where,
                    summary_index=0,
                    part=_summary_text(text),
                ),
            ]
        elif block.custom:
            frames = [self._event("response.custom_tool_call_input.done", **where, input=text)]
        else:
            frames = [
                self._event(
                    "response.function_call_arguments.done",
                    **where,
                    name=block.name,
                    arguments=text,
                )
            ]
        item = _responses_item(self.plan, block, done=True)
        frames.append(self._event("response.output_item.done", output_index=index, item=item))
        return frames

    def _advance(self, to: int) -> list[bytes]:
        frames = []
        while self.current < to:
            frames += self._stop(self.current)
            self.current += 1
            if self.current < len(self.plan.blocks):
                frames += self._start(self.current)
        return frames

    def opening(self) -> list[bytes]:
        response = _responses_object(
            self.reply_id,
            self.plan,
            self.payload,
            created=self.created,
            status="in_progress",
            output=[],
        )
        frames = [
            self._event("response.created", response=response),
            self._event("response.in_progress", response=response),
        ]
        return frames + (self._start(0) if self.plan.blocks else [])

    def piece(self, block: int, text: str) -> list[bytes]:
        sent = self.plan.blocks[block]
        if sent.kind in self.DELTAS:
            kind = self.DELTAS[sent.kind]
        elif sent.custom:
            kind = "response.custom_tool_call_input.delta"
        else:
            kind = "response.function_call_arguments.delta"
        fields: dict[str, Any] = self._where(block)
        if sent.kind == "text":
            fields.update(content_index=0, delta=text, logprobs=[])
        elif sent.kind == "thinking":
            fields.update(summary_index=0, delta=text)
        else:
            fields["delta"] = text
        return [*self._advance(block), self._event(kind, **fields)]

    def closing(self) -> list[bytes]:
        frames = self._advance(len(self.plan.blocks))
        reply = _responses_reply(self.reply_id, self.plan, self.payload, self.created)
        kind = "response.incomplete" if self.plan.truncated else "response.completed"
        return [*frames, self._event(kind, response=reply)]

    def error(self, message: str) -> bytes:
        # What OpenAI sends when a stream fails after it started: an `error` event, its
        # error nested as on the wire (the SDK raises APIError on it), or `response.failed`.
        error = {"code": "rate_limit_exceeded", "message": message}
        if self.plan.error_event == "response.failed":
            response = _responses_object(
                self.reply_id,
                self.plan,
                self.payload,
                created=self.created,
                status="failed",
                output=[],
                error=error,
            )
            return self._event("response.failed", response=response)
        return self._event("error", error={"type": "tokens", **error, "param": None})


def build_app(*, chunks: int = 8, chunk_delay: float = 0.0, ttft: float = 0.0) -> MockProvider:
    """A fresh mock provider (an ASGI application) with these start-up defaults."""
    return MockProvider(chunks=chunks, chunk_delay=chunk_delay, ttft=ttft)
