"""Validating and inspecting a request as the real API would: tools, images, tool results,
signatures, thinking and stop sequences."""

from __future__ import annotations

import base64
import binascii
import hmac
from typing import Any

from devtools.mock.base import ANTHROPIC_MEDIA_TYPES, ENCRYPTED_REASONING, OPENAI_IMAGE_URL, Api
from devtools.mock.plan import _Block, _Inspection, _Reject
from devtools.mock.tokens import _sign, _text_of, _unseal, prompt_tokens


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
