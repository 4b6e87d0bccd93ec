"""The OpenAI chat-completions wire format, as clients send it: parsing and validation.

Only what the proxy itself relies on is checked strictly (model, messages, stream, the
token limit that caps a reservation, the sampling numbers, the types of the fields a
translation reads); other fields, known or not, are passed on to OpenAI-compatible providers
untouched, where the provider judges them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NoReturn

from core.errors import ProxyError
from routing.codecs.json_input import load_json_object

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
MAX_TOKENS_LIMIT = 10_000_000
# The longest model name a client may send: the ledger stores the name asked for, and an
# alias pattern (claude-*) would otherwise take a name of any length.
MAX_MODEL_NAME = 200

# The chat-completions parameters OpenAI documents. A request going to an OpenAI-compatible
# provider keeps any other field (a provider's extension, a parameter newer than the proxy);
# one translated for another provider refuses them by name (routing/codecs/chat_client.py),
# since there is nothing to translate them to.
KNOWN_FIELDS = frozenset(
    {
        "model", "messages", "audio", "frequency_penalty", "function_call", "functions",
        "logit_bias", "logprobs", "max_completion_tokens", "max_tokens", "metadata",
        "modalities", "n", "parallel_tool_calls", "prediction", "presence_penalty",
        "prompt_cache_key", "reasoning_effort", "response_format", "safety_identifier", "seed",
        "service_tier", "stop", "store", "stream", "stream_options", "temperature",
        "tool_choice", "tools", "top_logprobs", "top_p", "user", "verbosity",
        "web_search_options",
    }
)  # fmt: skip
# Fields whose type the proxy checks before a provider sees them.
_TYPES: dict[str, type | tuple[type, ...]] = {
    "tools": list,
    "functions": list,
    "tool_choice": (str, dict),
    "response_format": dict,
    "metadata": dict,
    "logit_bias": dict,
    "user": str,
    "seed": int,
    "parallel_tool_calls": bool,
    "store": bool,
    "logprobs": bool,
}


def _invalid(message: str, *, param: str | None = None) -> NoReturn:
    raise ProxyError(400, message, code="invalid_request", param=param)


@dataclass(frozen=True, slots=True)
class ChatRequest:
    body: dict[str, Any]
    model: str
    stream: bool
    include_usage: bool  # the client asked for the usage chunk
    max_tokens: int | None
    messages: list[dict[str, Any]]
    completions: int = 1  # `n`


def _has_type(value: Any, kind: type | tuple[type, ...]) -> bool:
    if isinstance(value, bool):  # JSON true is no integer, whatever Python thinks
        return kind is bool
    return isinstance(value, kind)


def _number(body: dict[str, Any], name: str, low: float, high: float) -> None:
    value = body.get(name)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        _invalid(f"`{name}` must be a number.", param=name)
    if not low <= value <= high:
        _invalid(f"`{name}` must be between {low:g} and {high:g}.", param=name)


def _positive_int(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_TOKENS_LIMIT:
        _invalid(f"`{name}` must be an integer between 1 and {MAX_TOKENS_LIMIT}.", param=name)
    return value


def parse_chat_request(raw: bytes, *, max_messages: int) -> ChatRequest:
    body = load_json_object(raw, invalid=_invalid)
    for name, kind in _TYPES.items():
        value = body.get(name)
        if value is not None and not _has_type(value, kind):
            _invalid(f"`{name}` has the wrong type.", param=name)
    if body.get("service_tier") not in (None, "auto", "default"):
        # A dearer (or cheaper) tier than the route is priced at: the bill would be wrong.
        _invalid("`service_tier` may only be auto or default here.", param="service_tier")

    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        _invalid("`model` is required and must be a non-empty string.", param="model")
    if len(model) > MAX_MODEL_NAME:
        _invalid(f"`model` is longer than {MAX_MODEL_NAME} characters.", param="model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        _invalid("`messages` is required and must be a non-empty array.", param="messages")
    if len(messages) > max_messages:
        _invalid(f"`messages` has more than {max_messages} entries.", param="messages")
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            _invalid(f"`{where}` must be an object.", param=where)
        role = message.get("role")
        if not isinstance(role, str) or role not in ROLES:
            _invalid(f"`{where}.role` must be one of {', '.join(sorted(ROLES))}.", param=where)
        content = message.get("content")
        if content is not None and not isinstance(content, str | list):
            _invalid(f"`{where}.content` must be a string or an array.", param=where)

    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        _invalid("`stream` must be a boolean.", param="stream")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        _invalid("`stream_options` must be an object.", param="stream_options")
    include_usage = bool(options and options.get("include_usage") is True)

    _number(body, "temperature", 0, 2)
    _number(body, "top_p", 0, 1)
    _number(body, "presence_penalty", -2, 2)
    _number(body, "frequency_penalty", -2, 2)
    n = body.get("n")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 16):
        _invalid("`n` must be an integer between 1 and 16.", param="n")
    stop = body.get("stop")
    if stop is not None and not (
        isinstance(stop, str)
        or (isinstance(stop, list) and len(stop) <= 4 and all(isinstance(s, str) for s in stop))
    ):
        _invalid("`stop` must be a string or an array of up to 4 strings.", param="stop")
    # Both fields set: the smaller binds (a provider may honour either), and it is the one
    # limit reserved and sent (openai_passthrough.py).
    limits = [_positive_int(body, name) for name in ("max_completion_tokens", "max_tokens")]
    max_tokens = min((limit for limit in limits if limit is not None), default=None)

    return ChatRequest(
        body=body,
        model=model,
        stream=stream,
        include_usage=include_usage,
        max_tokens=max_tokens,
        messages=messages,
        completions=n or 1,
    )
