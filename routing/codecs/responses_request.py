"""The OpenAI Responses wire format (`POST /v1/responses`), as clients send it: parsing.

Only what the proxy itself relies on is checked here (model, input, stream, the token limit
that caps a reservation, the sampling numbers, the types of the fields a translation reads),
in OpenAI's own words and codes, so a client's error handling sees what OpenAI would have
said. Every other field, known or not, stays in ``body``: a route whose provider speaks
Responses natively gets it as sent, and a translation (routing/codecs/responses_client.py)
decides field by field.

The proxy stores nothing, so what needs a stored object is refused here, for every route:
``previous_response_id`` and ``conversation`` (pooled provider keys and failover mean no single
provider account holds a tenant's earlier responses, and one tenant must never reach
another's), and ``background: true`` (nothing would be kept to poll).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

from core.errors import ProxyError
from routing.codecs.json_input import load_json_object
from routing.codecs.openai_chat import MAX_TOKENS_LIMIT

# Why a stored object cannot be used, said once for every refusal that needs one.
NOT_STORED = (
    "this proxy does not store responses or conversations (requests are spread over pooled "
    "provider accounts, so none holds them); send the whole conversation in `input`"
)


def _error(message: str, *, code: str, param: str | None) -> NoReturn:
    raise ProxyError(400, message, code=code, param=param)


def _invalid(message: str, *, param: str | None = None) -> NoReturn:
    # load_json_object's callback: a body that is no JSON object.
    _error(message, code="invalid_json" if param is None else "invalid_value", param=param)


def _kind(value: Any) -> str:
    """OpenAI's word for a JSON value's type, in its "but got ... instead" messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _wrong_type(param: str, expected: str, value: Any) -> NoReturn:
    _error(
        f"Invalid type for '{param}': expected {expected}, but got {_kind(value)} instead.",
        code="invalid_type",
        param=param,
    )


@dataclass(frozen=True, slots=True)
class ResponsesRequest:
    body: dict[str, Any]
    model: str
    stream: bool
    max_tokens: int | None  # `max_output_tokens`
    input: str | list[dict[str, Any]]
    include: tuple[str, ...] = ()
    completions: int = 1  # the Responses API has no `n`


def _number(body: dict[str, Any], name: str, high: float) -> None:
    value = body.get(name)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        _wrong_type(name, "a decimal", value)
    if value < 0:
        _error(
            f"Invalid '{name}': decimal below minimum value. Expected a value >= 0, but got "
            f"{value} instead.",
            code="decimal_below_min_value",
            param=name,
        )
    if value > high:
        _error(
            f"Invalid '{name}': decimal above maximum value. Expected a value <= {high:g}, but "
            f"got {value} instead.",
            code="decimal_above_max_value",
            param=name,
        )


def _max_output_tokens(body: dict[str, Any]) -> int | None:
    value = body.get("max_output_tokens")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        _wrong_type("max_output_tokens", "an integer", value)
    if value < 1:
        _error(
            "Invalid 'max_output_tokens': integer below minimum value. Expected a value >= 1, "
            f"but got {value} instead.",
            code="integer_below_min_value",
            param="max_output_tokens",
        )
    if value > MAX_TOKENS_LIMIT:
        _error(
            "Invalid 'max_output_tokens': integer above maximum value. Expected a value <= "
            f"{MAX_TOKENS_LIMIT}, but got {value} instead.",
            code="integer_above_max_value",
            param="max_output_tokens",
        )
    return value


# Optional fields a translation reads, by the JSON types they may have (null is always fine).
_TYPES: dict[str, tuple[str, tuple[type, ...]]] = {
    "instructions": ("a string", (str,)),
    "tools": ("an array", (list,)),
    "tool_choice": ("one of a string or object", (str, dict)),
    "text": ("an object", (dict,)),
    "reasoning": ("an object", (dict,)),
    "metadata": ("an object", (dict,)),
    "include": ("an array", (list,)),
    "stream_options": ("an object", (dict,)),
    "parallel_tool_calls": ("a boolean", (bool,)),
    "store": ("a boolean", (bool,)),
    "background": ("a boolean", (bool,)),
    "user": ("a string", (str,)),
    "safety_identifier": ("a string", (str,)),
    "prompt_cache_key": ("a string", (str,)),
}


def _check_types(body: dict[str, Any]) -> None:
    for name, (expected, kinds) in _TYPES.items():
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) and bool not in kinds:
            _wrong_type(name, expected, value)
        if not isinstance(value, kinds):
            _wrong_type(name, expected, value)


def _input(body: dict[str, Any], max_messages: int) -> str | list[dict[str, Any]]:
    if "input" not in body or body["input"] is None:
        _error(
            "Missing required parameter: 'input'.", code="missing_required_parameter", param="input"
        )
    value = body["input"]
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        _wrong_type("input", "one of a string or array of input items", value)
    if len(value) > max_messages:
        _error(
            f"Invalid 'input': array too long. Expected an array with maximum length "
            f"{max_messages}, but got an array with length {len(value)} instead.",
            code="array_above_max_length",
            param="input",
        )
    for index, item in enumerate(value):
        if not isinstance(item, dict):
            _wrong_type(f"input[{index}]", "an input item object", item)
    return value


def _stored(body: dict[str, Any]) -> None:
    """The fields that need an object the proxy would have had to store."""
    previous = body.get("previous_response_id")
    if previous is not None:
        shown: Any = previous
        # OpenAI's code and message for an unknown previous response, and why.
        _error(
            f"Previous response with id '{shown}' not found: {NOT_STORED}.",
            code="previous_response_not_found",
            param="previous_response_id",
        )
    conversation = body.get("conversation")
    if conversation is not None:
        conversation_id = conversation.get("id") if isinstance(conversation, dict) else conversation
        _error(
            f"Conversation with id '{conversation_id}' not found: {NOT_STORED}.",
            code="conversation_not_found",
            param="conversation",
        )
    if body.get("background") is True:
        _error(
            "Background responses are not supported: the proxy keeps no response to poll or "
            "cancel later; stream the response instead.",
            code="unsupported_parameter",
            param="background",
        )


def parse_responses_request(
    raw: bytes, *, headers: Mapping[str, str], max_messages: int
) -> ResponsesRequest:
    """A `POST /v1/responses` body, or ProxyError(400) in OpenAI's words."""
    body = load_json_object(raw, invalid=_invalid)
    if "model" not in body or body["model"] is None:
        _error(
            "Missing required parameter: 'model'.", code="missing_required_parameter", param="model"
        )
    model = body["model"]
    if not isinstance(model, str):
        _wrong_type("model", "a string", model)
    if not model.strip():
        _error(
            "Invalid 'model': empty string. Expected a string with minimum length 1, but got "
            "an empty string instead.",
            code="empty_string",
            param="model",
        )
    _stored(body)
    stream = body.get("stream")
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        _wrong_type("stream", "a boolean", stream)
    _check_types(body)
    if body.get("service_tier") not in (None, "auto", "default"):
        # A dearer (or cheaper) tier than the route is priced at: the bill would be wrong.
        _error(
            "Invalid value for 'service_tier': only 'auto' and 'default' are available "
            "through this proxy.",
            code="invalid_value",
            param="service_tier",
        )
    _number(body, "temperature", 2)
    _number(body, "top_p", 1)
    include = body.get("include") or []
    for index, entry in enumerate(include):
        if not isinstance(entry, str):
            _wrong_type(f"include[{index}]", "a string", entry)
    return ResponsesRequest(
        body=body,
        model=model,
        stream=stream,
        max_tokens=_max_output_tokens(body),
        input=_input(body, max_messages),
        include=tuple(include),
    )
