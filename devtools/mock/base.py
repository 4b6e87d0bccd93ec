"""The mock provider's shared wire types, constants and low-level ASGI and error helpers."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal

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


def _stream_error_frame(api: Api, message: str) -> bytes:
    """The provider's own event for a stream that fails after it started."""
    if api == "openai":
        error = {"message": message, "type": "rate_limit_exceeded", "param": None, "code": None}
        return b"data: " + _json({"error": error}) + b"\n\n"
    event = {"type": "error", "error": {"type": "overloaded_error", "message": message}}
    return b"event: error\ndata: " + _json(event) + b"\n\n"
