"""The Anthropic Messages wire format, as clients send it: parsing and validation.

Only what the proxy itself relies on is checked (the model, the token limit that caps a
reservation, the messages it counts and may translate, the sampling numbers), with the words
Anthropic's own API uses for the same mistakes ("max_tokens: Field required": a pydantic
path, then what is wrong). Everything else is kept as sent: unknown top-level fields and
unknown content block types go on unchanged to an Anthropic route, so a feature works the
day Anthropic ships it; a translation (messages_client.py) refuses what it cannot carry.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

from core.errors import ProxyError
from routing.codecs.json_input import load_json_object
from routing.codecs.openai_chat import MAX_MODEL_NAME, MAX_TOKENS_LIMIT

ROLES = ("user", "assistant")


def _invalid(message: str, *, param: str | None = None) -> NoReturn:
    raise ProxyError(400, message, code="invalid_request", param=param)


def _wrong(path: str, what: str) -> NoReturn:
    """Anthropic's shape of a validation error: ``<dotted path>: <what is wrong>``."""
    _invalid(f"{path}: {what}", param=path)


@dataclass(frozen=True, slots=True)
class MessagesRequest:
    body: dict[str, Any]
    model: str
    stream: bool
    max_tokens: int | None  # None only for count_tokens, which generates nothing
    messages: list[dict[str, Any]]
    completions: int = 1  # Anthropic has no `n`
    betas: tuple[str, ...] = ()  # the `anthropic-beta` header, split on commas
    version: str | None = None  # the `anthropic-version` header


def _header(headers: Mapping[str, str], name: str) -> str | None:
    # Django's request.headers is case-insensitive; a plain dict (tests, ASGI scopes turned
    # into dicts) may not be.
    value = headers.get(name)
    if value is None:
        for key, item in headers.items():
            if key.lower() == name:
                return item
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _number(body: dict[str, Any], name: str, low: float, high: float) -> None:
    value = body.get(name)
    if value is None:
        return
    if not _is_number(value):
        _wrong(name, "Input should be a valid number")
    if value < low:
        _wrong(name, f"Input should be greater than or equal to {low:g}")
    if value > high:
        _wrong(name, f"Input should be less than or equal to {high:g}")


def _check_blocks(blocks: list[Any], path: str) -> None:
    for index, block in enumerate(blocks):
        where = f"{path}.{index}"
        if not isinstance(block, dict):
            _wrong(where, "Input should be a valid dictionary")
        kind = block.get("type")
        if kind is None:
            _wrong(f"{where}.type", "Field required")
        if not isinstance(kind, str):
            _wrong(f"{where}.type", "Input should be a valid string")
        if kind == "text" and not isinstance(block.get("text"), str):
            _wrong(f"{where}.text", "Input should be a valid string")


def _check_messages(messages: Any, max_messages: int | None) -> list[dict[str, Any]]:
    if messages is None:
        _wrong("messages", "Field required")
    if not isinstance(messages, list):
        _wrong("messages", "Input should be a valid list")
    if not messages:
        _wrong("messages", "List should have at least 1 item after validation, not 0")
    if max_messages is not None and len(messages) > max_messages:
        _wrong(
            "messages",
            f"List should have at most {max_messages} items after validation, not {len(messages)}",
        )
    for index, message in enumerate(messages):
        where = f"messages.{index}"
        if not isinstance(message, dict):
            _wrong(where, "Input should be a valid dictionary")
        if message.get("role") not in ROLES:
            _wrong(f"{where}.role", "Input should be 'user' or 'assistant'")
        content = message.get("content")
        if content is None:
            _wrong(f"{where}.content", "Field required")
        if isinstance(content, list):
            _check_blocks(content, f"{where}.content")
        elif not isinstance(content, str):
            _wrong(f"{where}.content", "Input should be a valid string or a list of content blocks")
    return messages


def _check_fields(body: dict[str, Any]) -> None:
    """The optional fields the proxy reads or translates: their types and ranges."""
    system = body.get("system")
    if system is not None:
        if isinstance(system, list):
            for index, block in enumerate(system):
                where = f"system.{index}"
                if not isinstance(block, dict):
                    _wrong(where, "Input should be a valid dictionary")
                if block.get("type") != "text":
                    _wrong(f"{where}.type", "Input should be 'text'")
                if not isinstance(block.get("text"), str):
                    _wrong(f"{where}.text", "Input should be a valid string")
        elif not isinstance(system, str):
            _wrong("system", "Input should be a valid string or a list of text blocks")
    _number(body, "temperature", 0, 1)
    _number(body, "top_p", 0, 1)
    top_k = body.get("top_k")
    if top_k is not None:
        if not _is_int(top_k):
            _wrong("top_k", "Input should be a valid integer")
        if top_k < 0:
            _wrong("top_k", "Input should be greater than or equal to 0")
    stops = body.get("stop_sequences")
    if stops is not None:
        if not isinstance(stops, list):
            _wrong("stop_sequences", "Input should be a valid list")
        for index, stop in enumerate(stops):
            if not isinstance(stop, str):
                _wrong(f"stop_sequences.{index}", "Input should be a valid string")
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            _wrong("tools", "Input should be a valid list")
        for index, tool in enumerate(tools):
            if not isinstance(tool, dict):
                _wrong(f"tools.{index}", "Input should be a valid dictionary")
    for name in ("tool_choice", "metadata", "thinking"):
        value = body.get(name)
        if value is not None and not isinstance(value, dict):
            _wrong(name, "Input should be a valid dictionary")


def _model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if model is None:
        _wrong("model", "Field required")
    if not isinstance(model, str) or not model.strip():
        _wrong("model", "Input should be a non-empty string")
    if len(model) > MAX_MODEL_NAME:
        _wrong("model", f"String should have at most {MAX_MODEL_NAME} characters")
    return model


def _betas(headers: Mapping[str, str]) -> tuple[str, ...]:
    raw = _header(headers, "anthropic-beta") or ""
    return tuple(beta.strip() for beta in raw.split(",") if beta.strip())


def parse_messages_request(
    raw: bytes, *, headers: Mapping[str, str], max_messages: int
) -> MessagesRequest:
    """A `POST /v1/messages` body, or ProxyError(400) in Anthropic's words."""
    body = load_json_object(raw, invalid=_invalid)
    model = _model(body)
    if "max_tokens" not in body:
        _wrong("max_tokens", "Field required")
    max_tokens = body["max_tokens"]
    if not _is_int(max_tokens):
        _wrong("max_tokens", "Input should be a valid integer")
    if max_tokens < 1:
        _wrong("max_tokens", "Input should be greater than or equal to 1")
    if max_tokens > MAX_TOKENS_LIMIT:
        _wrong("max_tokens", f"Input should be less than or equal to {MAX_TOKENS_LIMIT}")
    messages = _check_messages(body.get("messages"), max_messages)
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        _wrong("stream", "Input should be a valid boolean")
    _check_fields(body)
    return MessagesRequest(
        body=body,
        model=model,
        stream=stream,
        max_tokens=max_tokens,
        messages=messages,
        betas=_betas(headers),
        version=_header(headers, "anthropic-version"),
    )


def parse_count_tokens_request(
    raw: bytes, *, headers: Mapping[str, str], max_messages: int | None = None
) -> MessagesRequest:
    """A `POST /v1/messages/count_tokens` body: a messages request without max_tokens or
    stream (nothing is generated), so ``max_tokens`` is None and ``stream`` False."""
    body = load_json_object(raw, invalid=_invalid)
    model = _model(body)
    messages = _check_messages(body.get("messages"), max_messages)
    _check_fields(body)
    return MessagesRequest(
        body=body,
        model=model,
        stream=False,
        max_tokens=None,
        messages=messages,
        betas=_betas(headers),
        version=_header(headers, "anthropic-version"),
    )
