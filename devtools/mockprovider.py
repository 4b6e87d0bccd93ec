"""A fake upstream LLM provider for tests and benchmarks, as a pure ASGI application.

It speaks the OpenAI chat-completions and the Anthropic Messages wire formats exactly as the
real services do, streaming included, so the official SDKs (and the proxy) parse it unchanged.
It needs neither Django nor a database; ``python manage.py mock_provider`` serves it with Daphne.

Endpoints
    ``POST /v1/chat/completions``  OpenAI; needs ``Authorization: Bearer <key>``.
    ``GET  /v1/models``            OpenAI model list (one model, ``mock-model``; no auth).
    ``POST /v1/messages``          Anthropic; needs a key in ``x-api-key`` (or, as the installed
                                   SDK sends it, ``Authorization: Bearer``), an
                                   ``anthropic-version`` header and ``max_tokens``.
    ``GET  /_mock/stats``          ``{"calls": N, "requests": [record, ...]}`` (last 1000).
    ``POST /_mock/reset``          forget the records, restore the start-up configuration.
    ``GET|POST /_mock/config``     read / merge the configuration (see ``MockProvider.configure``).

Output
    The reply is ``n`` pieces, piece ``i`` being ``text[i % len(text)]`` (``DEFAULT_TEXT`` unless
    configured), each counted as exactly one completion token. ``n = chunks``, or the request's
    ``max_tokens`` (OpenAI: ``max_completion_tokens`` or ``max_tokens``) when smaller, in which
    case the reply is truncated: ``finish_reason: "length"`` / ``stop_reason: "max_tokens"``.

Prompt tokens
    ``sum(3 + words(message content) for each message)``, plus ``3 + words(system)`` when an
    Anthropic request has a ``system`` field, where ``words(x)`` is ``len(x.split())`` for a
    string and the sum of that over the ``{"type": "text"}`` parts of a list; any other content
    (images, tool calls, ...) counts zero words.

Timing
    Headers, and the frames that precede the content (OpenAI's role chunk; Anthropic's
    ``message_start``, ``content_block_start`` and ``ping``), go out at once; the first piece
    waits ``ttft`` seconds, each further piece ``chunk_delay`` seconds. A non-streamed reply is
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
import copy
import json
import math
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

Scope = Mapping[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Api = Literal["openai", "anthropic"]

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

JSON_TYPE = (b"content-type", b"application/json")
SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
]
# What the real services call their request-id header.
REQUEST_ID_HEADER: dict[Api, bytes] = {"openai": b"x-request-id", "anthropic": b"request-id"}

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

    def as_json(self) -> dict[str, Any]:
        return {
            "chunks": self.chunks,
            "chunk_delay": self.chunk_delay,
            "ttft": self.ttft,
            "text": self.text,
            "faults": [fault.as_json() for fault in self.faults],
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


def _words(content: Any) -> int:
    if isinstance(content, str):
        return len(content.split())
    if isinstance(content, list):
        return sum(
            len(part["text"].split())
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
            if isinstance(part.get("text"), str)
        )
    return 0


def prompt_tokens(messages: Iterable[Any], system: Any = None) -> int:
    """The documented deterministic prompt-token count of a request."""
    total = sum(3 + _words(m.get("content")) for m in messages if isinstance(m, dict))
    return total if system is None else total + 3 + _words(system)


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
    if api == "openai":
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
        if self.api == "openai":
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

    async def piece(self, frame: bytes, piece: str) -> None:
        await self.body(frame)
        now = time.time()
        record = self.record
        if record["first_chunk_at"] is None:
            record["first_chunk_at"] = now
        record["chunk_times"].append(now)
        record["chunks_sent"] += 1
        record["text_sent"] += piece
        record["usage"]["output_tokens"] += 1

    async def abort(self) -> None:
        request = _daphne_request(self.send)
        if request is not None:
            request.loseConnection()
        else:
            await self.body(b"", more=False)


@dataclass
class _Plan:
    """What a validated call will produce, fixed at its start."""

    model: str
    pieces: list[str]
    truncated: bool
    prompt_tokens: int
    ttft: float
    chunk_delay: float
    break_at: int | None = None
    error_at: int | None = None  # a stream's provider error event after this many pieces
    error_message: str = ""
    garbage_at: int | None = None  # a stream's data line that is not JSON, after this many
    # The usage object the reply reports instead of its true counts; None: no usage at all.
    usage_override: dict[str, Any] | None = None
    usage_replaced: bool = False


class MockProvider:
    """The mock provider's state (configuration, records, call count) and its ASGI entry."""

    def __init__(self, *, chunks: int = 8, chunk_delay: float = 0.0, ttft: float = 0.0) -> None:
        self.config = Config(chunks=0, chunk_delay=0.0, ttft=0.0)
        self.configure({"chunks": chunks, "chunk_delay": chunk_delay, "ttft": ttft})
        self._defaults = copy.copy(self.config)
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
        - ``{"type": "stream_error", "chunks": K}``: a stream of K pieces, then the API's own
          mid-stream error event quoting the request's API key, and the end of the body;
        - ``{"type": "usage", "usage": {...} | null}``: the reply (and a stream's usage
          event) reports this usage object instead of the true one, in the API's own field
          names (``prompt_tokens``... or ``input_tokens``...), or none at all for null;
        - ``{"type": "garbage_line", "chunks": K}``: a stream of K pieces, then a data line
          that is not JSON, then the rest of the stream as usual;
        - ``{"type": "body", "body": {...}}``: a 200 whose JSON body is this (an error sent
          as a 200, say), streamed or not;
        - ``{"type": "prefer_max_tokens"}``: an OpenAI call keeps to ``max_tokens`` even when
          ``max_completion_tokens`` is set (as some OpenAI-compatible servers do).
        """
        unknown = set(changes) - {"chunks", "chunk_delay", "ttft", "text", "faults"}
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
        prefix = "chatcmpl-" if api == "openai" else "msg_"
        record: dict[str, Any] = {
            "id": prefix + secrets.token_hex(12),
            "api": api,
            "path": scope["path"],
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
            if api == "openai":
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
        plan = await self._plan(call, payload)
        if plan is None:
            return
        record["usage"] = {"input_tokens": plan.prompt_tokens, "output_tokens": 0}

        action = self._take_fault(api, api_key, plan.model)
        record["fault"] = None if action is None else action["type"]
        if action is not None and await self._fault(call, plan, action):
            return
        if record["stream"]:
            await self._stream(call, plan, payload)
        else:
            await self._complete(call, plan)

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
            plan.pieces = [quote, *plan.pieces[1:]]
            return False
        elif kind == "stream_error":
            plan.error_at = action["chunks"]
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
                text = self.config.text or DEFAULT_TEXT
                count = min(self.config.chunks, limit)
                plan.pieces = [text[i % len(text)] for i in range(count)]
                plan.truncated = count < self.config.chunks
            return False
        else:  # break_after: the normal reply, cut short
            plan.break_at = action["chunks"]
            return False
        return True

    async def _plan(self, call: _Call, payload: dict[str, Any]) -> _Plan | None:
        """Validate the call as the real API would, then fix its output; None if rejected."""
        model, messages = payload.get("model"), payload.get("messages")
        for name, value, kind in (("model", model, str), ("messages", messages, list)):
            if not isinstance(value, kind):
                if call.api == "openai":
                    message = f"Missing required parameter: '{name}'."
                    await call.error(400, message, param=name, code="missing_required_parameter")
                else:
                    await call.error(400, f"{name}: Field required")
                return None
        assert isinstance(model, str) and isinstance(messages, list)
        if call.api == "openai":
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

        config = self.config
        count = config.chunks if limit is None else min(config.chunks, limit)
        text = config.text or DEFAULT_TEXT
        system = payload.get("system") if call.api == "anthropic" else None
        return _Plan(
            model=model,
            pieces=[text[i % len(text)] for i in range(count)],
            truncated=count < config.chunks,
            prompt_tokens=prompt_tokens(messages, system),
            ttft=config.ttft,
            chunk_delay=config.chunk_delay,
        )

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
        text = "".join(plan.pieces)
        reply = _openai_reply if call.api == "openai" else _anthropic_reply
        payload = reply(call.record["id"], plan, text)
        if plan.break_at is not None:
            data = _json(payload)
            await call.start(200, [JSON_TYPE])
            await call.body(data[: len(data) // 2])
            await call.abort()
            return
        record = call.record
        record["first_chunk_at"] = time.time()
        record["chunks_sent"] = count
        record["text_sent"] = text
        record["usage"]["output_tokens"] = count
        await call.json(200, payload)

    async def _stream(self, call: _Call, plan: _Plan, payload: dict[str, Any]) -> None:
        if call.api == "openai":
            options = payload.get("stream_options")
            usage = isinstance(options, dict) and options.get("include_usage") is True
            frames: _Frames = _OpenAIFrames(call.record["id"], plan, include_usage=usage)
        else:
            frames = _AnthropicFrames(call.record["id"], plan)
        await call.start(200, SSE_HEADERS)
        for frame in frames.opening():
            await call.body(frame)
        for index, piece in enumerate(plan.pieces):
            if index == plan.break_at:
                await call.abort()
                return
            if index == plan.error_at:
                await call.body(_stream_error_frame(call.api, plan.error_message), more=False)
                return
            if index == plan.garbage_at:
                await call.body(b"data: <html>upstream proxy error</html>\n\n")
            if await call.pause(plan.ttft if index == 0 else plan.chunk_delay):
                return
            await call.piece(frames.piece(piece), piece)
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


def _openai_reply(reply_id: str, plan: _Plan, text: str) -> dict[str, Any]:
    completion = len(plan.pieces)
    reply = {
        "id": reply_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": plan.model,
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": text,
                    "refusal": None,
                    "annotations": [],
                },
                "logprobs": None,
                "finish_reason": "length" if plan.truncated else "stop",
            }
        ],
        "usage": {
            "prompt_tokens": plan.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": plan.prompt_tokens + completion,
        },
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


def _anthropic_usage(input_tokens: int, output_tokens: int) -> dict[str, int]:
    return {
        "input_tokens": input_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": output_tokens,
    }


def _anthropic_reply(reply_id: str, plan: _Plan, text: str) -> dict[str, Any]:
    reply = {
        "id": reply_id,
        "type": "message",
        "role": "assistant",
        "model": plan.model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": "max_tokens" if plan.truncated else "end_turn",
        "stop_sequence": None,
        "usage": _anthropic_usage(plan.prompt_tokens, len(plan.pieces)),
    }
    return _with_usage(reply, plan)


class _Frames(Protocol):
    """The encoded SSE events of one streamed reply, in the order they are sent."""

    def opening(self) -> list[bytes]: ...

    def piece(self, text: str) -> bytes: ...

    def closing(self) -> list[bytes]: ...


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

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        chunk: dict[str, Any] = {**self.head, "choices": [choice]}
        if self.include_usage:
            chunk["usage"] = None
        return b"data: " + _json(chunk) + b"\n\n"

    def opening(self) -> list[bytes]:
        return [self._chunk({"role": "assistant", "content": "", "refusal": None}, None)]

    def piece(self, text: str) -> bytes:
        return self._chunk({"content": text}, None)

    def closing(self) -> list[bytes]:
        plan = self.plan
        frames = [self._chunk({}, "length" if plan.truncated else "stop")]
        if self.include_usage:
            completion = len(plan.pieces)
            usage = {
                "prompt_tokens": plan.prompt_tokens,
                "completion_tokens": completion,
                "total_tokens": plan.prompt_tokens + completion,
            }
            chunk = _with_usage({**self.head, "choices": [], "usage": usage}, plan)
            frames.append(b"data: " + _json(chunk) + b"\n\n")
        frames.append(b"data: [DONE]\n\n")
        return frames


class _AnthropicFrames:
    def __init__(self, reply_id: str, plan: _Plan) -> None:
        self.reply_id = reply_id
        self.plan = plan

    def opening(self) -> list[bytes]:
        message: dict[str, Any] = {
            "id": self.reply_id,
            "type": "message",
            "role": "assistant",
            "model": self.plan.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": _anthropic_usage(self.plan.prompt_tokens, 1),
        }
        block = {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "text", "text": ""},
        }
        return [
            _sse("message_start", {"type": "message_start", "message": message}),
            _sse("content_block_start", block),
            _sse("ping", {"type": "ping"}),
        ]

    def piece(self, text: str) -> bytes:
        delta = {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": text},
        }
        return _sse("content_block_delta", delta)

    def closing(self) -> list[bytes]:
        stop_reason = "max_tokens" if self.plan.truncated else "end_turn"
        message_delta = {
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": None},
            "usage": {"output_tokens": len(self.plan.pieces)},
        }
        _with_usage(message_delta, self.plan)
        return [
            _sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
            _sse("message_delta", message_delta),
            _sse("message_stop", {"type": "message_stop"}),
        ]


def build_app(*, chunks: int = 8, chunk_delay: float = 0.0, ttft: float = 0.0) -> MockProvider:
    """A fresh mock provider (an ASGI application) with these start-up defaults."""
    return MockProvider(chunks=chunks, chunk_delay=chunk_delay, ttft=ttft)
