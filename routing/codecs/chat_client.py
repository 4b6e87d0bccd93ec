"""Clients speaking OpenAI chat completions, when their route's provider speaks another format.

:class:`ChatClient` decodes a chat request into the internal model
(routing/codecs/model.py) and encodes the internal answer and stream back as a
``chat.completion`` and ``chat.completion.chunk`` events. Same-format routes never come here
(routing/codecs/openai_passthrough.py forwards the body as sent).

What is translated: system and developer messages (anywhere: gathered into ``system`` in
order), user text and images (``image_url`` with a ``data:`` URL or an http(s) URL, ``detail``
kept), assistant text, refusals, tool calls and reasoning (``reasoning_content`` and
LiteLLM's ``thinking_blocks``, which carry Anthropic's signatures), ``tool`` messages (tool
results, text and images), tools, tool choice, ``parallel_tool_calls``, temperature, top_p,
seed, stop, the completion limit, ``response_format``, ``reasoning_effort``, ``user`` /
``safety_identifier``, streaming and ``include_usage``.

What is refused with a 400 naming the field (it would change the answer, or the client
would miss what it asked for): legacy ``functions`` / ``function_call``, ``n`` > 1,
``logprobs`` / ``top_logprobs``, ``logit_bias``, ``audio`` and output modalities other than
text, ``prediction``, ``web_search_options``, non-zero presence / frequency penalties, and
any field this module does not know (:data:`~routing.codecs.openai_chat.KNOWN_FIELDS` is the
list): a translation cannot pass on what it does not understand.

What is dropped, because it has no meaning for another provider and no answer depends on
it: :data:`DROPPED_HINTS` lists each with the reason.

Answers: text parts become ``content`` (null when the answer is only tool calls), tool uses
``tool_calls``, thinking ``reasoning_content`` plus, when a later turn must send something
back byte for byte (a signature, a redacted block), ``thinking_blocks``. A refusal
(Anthropic's ``refusal`` stop reason) keeps its text in ``content`` with ``finish_reason``
``content_filter``; ``refusal`` stays null (OpenAI fills it only for its own structured-output
refusals, and the text was already streamed as content). Which stop sequence matched has no
OpenAI field: ``finish_reason`` is ``stop``.
"""

from __future__ import annotations

import time
from typing import Any, NoReturn

from core.errors import ProxyError
from routing.codecs.base import SSE_DONE, Usage, dumps, sse_data
from routing.codecs.model import (
    Answer,
    BlockDelta,
    BlockStart,
    BlockStop,
    End,
    Event,
    Finish,
    Image,
    InternalCall,
    Message,
    Part,
    Reasoning,
    RedactedThinking,
    ResponseFormat,
    Role,
    Sampling,
    Start,
    StopReason,
    Text,
    Thinking,
    Tool,
    ToolChoice,
    ToolResult,
    ToolUse,
)
from routing.codecs.openai_chat import KNOWN_FIELDS, ChatRequest

# Fields accepted and not sent on, each with why nothing is lost. (`max_completion_tokens`
# and `max_tokens` are read through ChatRequest.max_tokens, `stream_options` through
# ChatRequest.include_usage; their other members are hints too.)
DROPPED_HINTS: dict[str, str] = {
    "store": "OpenAI keeps the completion for its dashboard and evals; no other provider "
    "stores it, and the answer is the same",
    "metadata": "tags for OpenAI's stored completions (see `store`); the answer does not "
    "depend on them",
    "service_tier": "only auto and default reach a translation (the parser refuses the "
    "others, which would change the price): both mean the provider's normal tier",
    "prompt_cache_key": "a routing hint for OpenAI's own prompt cache; other providers "
    "cache by their own rules (Anthropic by cache_control)",
    "verbosity": "a GPT-5 style hint on answer length with no equivalent elsewhere; the "
    "system prompt is the portable way to ask for it",
    "stream_options": "only include_usage means something here (it is kept); "
    "include_obfuscation pads OpenAI's own chunks",
    "messages[].name": "a participant name OpenAI shows the model; other formats have no "
    "place for it",
    "messages[].annotations": "URL citations OpenAI attached to an earlier answer: output "
    "only, nothing the model reads back",
}

# Refused unless they are absent or carry their default (which means "not used").
_UNSUPPORTED_UNLESS_DEFAULT: dict[str, tuple[Any, ...]] = {
    "functions": (None,),
    "function_call": (None,),
    "n": (None, 1),
    "logprobs": (None, False),
    "top_logprobs": (None, 0),
    "logit_bias": (None, {}),
    "audio": (None,),
    "prediction": (None,),
    "web_search_options": (None,),
    "presence_penalty": (None, 0),
    "frequency_penalty": (None, 0),
}
_HANDLED = frozenset(
    {
        "model", "messages", "max_completion_tokens", "max_tokens", "modalities",
        "parallel_tool_calls", "reasoning_effort", "response_format", "safety_identifier",
        "seed", "stop", "stream", "stream_options", "temperature", "tool_choice", "tools",
        "top_p", "user",
    }
)  # fmt: skip
_REASONING_EFFORTS = frozenset({"minimal", "low", "medium", "high", "xhigh", "max"})
# Message keys by role; any other key with a value is refused (a null one is harmless).
_MESSAGE_KEYS: dict[str, frozenset[str]] = {
    "system": frozenset({"role", "content", "name"}),
    "developer": frozenset({"role", "content", "name"}),
    "user": frozenset({"role", "content", "name"}),
    "assistant": frozenset(
        {
            "role", "content", "name", "tool_calls", "refusal", "reasoning_content",
            "thinking_blocks", "annotations", "audio", "function_call",
        }
    ),
    "tool": frozenset({"role", "content", "tool_call_id"}),
}  # fmt: skip

FINISH_REASONS: dict[str, str] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


def _unsupported(field: str, what: str | None = None) -> NoReturn:
    raise ProxyError(
        400,
        f"{what or f'`{field}`'} is not supported for this model (its provider does not "
        "speak the OpenAI API).",
        code="unsupported_for_provider",
        param=field,
    )


def _invalid(where: str, message: str) -> NoReturn:
    raise ProxyError(400, f"`{where}` {message}", code="invalid_request", param=where)


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str):
        _invalid(where, "must be a string.")
    return value


def _cache_control(part: dict[str, Any], where: str) -> dict[str, Any] | None:
    # LiteLLM's convention for Anthropic prompt caching from an OpenAI client: kept.
    value = part.get("cache_control")
    if value is not None and not isinstance(value, dict):
        _invalid(f"{where}.cache_control", "must be an object.")
    return value


def _image(part: dict[str, Any], where: str) -> Image:
    image_url = part.get("image_url")
    if isinstance(image_url, str):  # some clients send the URL itself
        image_url = {"url": image_url}
    if not isinstance(image_url, dict) or not isinstance(image_url.get("url"), str):
        _invalid(f"{where}.image_url", "must be an object with a `url` string.")
    url: str = image_url["url"]
    detail = image_url.get("detail")
    if detail is not None:
        _string(detail, f"{where}.image_url.detail")  # auto, low, high, or newer words
    cache_control = _cache_control(part, where)
    if url.startswith("data:"):
        header, comma, data = url[5:].partition(",")
        media_type, _, encoding = header.partition(";")
        if not comma or encoding != "base64" or not media_type or not data:
            _invalid(
                f"{where}.image_url.url", "must be a base64 data URL (data:<type>;base64,...)."
            )
        return Image(media_type=media_type, data=data, detail=detail, cache_control=cache_control)
    if url.startswith(("https://", "http://")):
        return Image(url=url, detail=detail, cache_control=cache_control)
    _invalid(f"{where}.image_url.url", "must be an http(s) URL or a base64 data URL.")


def _content(content: Any, where: str, *, images: bool) -> list[Text | Image]:
    """A message's content as text (and, where ``images``, image) parts."""
    if content is None:
        return []
    if isinstance(content, str):
        return [Text(content)]
    if not isinstance(content, list):
        _invalid(f"{where}.content", "must be a string or an array.")
    parts: list[Text | Image] = []
    for index, part in enumerate(content):
        at = f"{where}.content[{index}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if not isinstance(part, dict) or not isinstance(kind, str):
            _invalid(at, "must be an object with a `type`.")
        if kind == "text":
            parts.append(Text(_string(part.get("text"), f"{at}.text"), _cache_control(part, at)))
        elif kind == "image_url" and images:
            parts.append(_image(part, at))
        elif kind in ("image_url", "input_audio", "file"):
            _unsupported(at, f"A `{kind}` part in `{where}`")
        else:
            _invalid(at, f"has an unknown part type `{kind}`.")
    return parts


def _assistant_content(content: Any, where: str) -> list[Text]:
    if content is None:
        return []
    if isinstance(content, str):
        return [Text(content)] if content else []
    if not isinstance(content, list):
        _invalid(f"{where}.content", "must be a string or an array.")
    parts: list[Text] = []
    for index, part in enumerate(content):
        at = f"{where}.content[{index}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            parts.append(Text(_string(part.get("text"), f"{at}.text"), _cache_control(part, at)))
        elif kind == "refusal":
            # What the model said when it refused: its words, like any other text.
            parts.append(Text(_string(part.get("refusal"), f"{at}.refusal")))
        else:
            _invalid(at, "must be a text or refusal part.")
    return parts


def _thinking(message: dict[str, Any], where: str) -> list[Part]:
    """An earlier answer's reasoning, first: Anthropic wants thinking before the text.

    ``thinking_blocks`` (LiteLLM's convention, what this codec sends) carry the signatures
    Anthropic needs back byte for byte; when present they are the reasoning, and
    ``reasoning_content`` (the same text joined) is not read a second time.
    """
    blocks = message.get("thinking_blocks")
    if blocks is not None:
        if not isinstance(blocks, list):
            _invalid(f"{where}.thinking_blocks", "must be an array.")
        parts: list[Part] = []
        for index, block in enumerate(blocks):
            at = f"{where}.thinking_blocks[{index}]"
            kind = block.get("type") if isinstance(block, dict) else None
            if kind == "thinking":
                signature = block.get("signature")
                if signature is not None:
                    _string(signature, f"{at}.signature")
                parts.append(Thinking(_string(block.get("thinking"), f"{at}.thinking"), signature))
            elif kind == "redacted_thinking":
                parts.append(RedactedThinking(_string(block.get("data"), f"{at}.data")))
            else:
                _invalid(at, "must be a thinking or redacted_thinking block.")
        return parts
    reasoning = message.get("reasoning_content")
    if reasoning is None or reasoning == "":
        return []
    return [Thinking(_string(reasoning, f"{where}.reasoning_content"))]


def _tool_calls(value: Any, where: str) -> list[ToolUse]:
    if value is None:
        return []
    if not isinstance(value, list):
        _invalid(f"{where}.tool_calls", "must be an array.")
    calls: list[ToolUse] = []
    for index, call in enumerate(value):
        at = f"{where}.tool_calls[{index}]"
        if not isinstance(call, dict):
            _invalid(at, "must be an object.")
        if call.get("type", "function") != "function":
            _unsupported(at, f"A `{call.get('type')}` tool call")
        function = call.get("function")
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            _invalid(f"{at}.function.name", "is required and must be a string.")
        arguments = function.get("arguments")
        if not isinstance(arguments, str):
            _invalid(f"{at}.function.arguments", "must be a string (the arguments' JSON).")
        call_id = call.get("id")
        if not isinstance(call_id, str) or not call_id:
            _invalid(f"{at}.id", "is required and must be a string.")
        calls.append(ToolUse(id=call_id, name=function["name"], arguments=arguments))
    return calls


def _check_keys(message: dict[str, Any], role: str, where: str) -> None:
    for key, value in message.items():
        if key not in _MESSAGE_KEYS[role] and value is not None:
            _unsupported(f"{where}.{key}")
    for key in ("audio", "function_call"):
        if message.get(key) is not None:
            _unsupported(f"{where}.{key}")


def _messages(call: ChatRequest) -> tuple[list[Text], list[Message]]:
    system: list[Text] = []
    messages: list[Message] = []
    tool_ids: set[str] = set()  # ids of the tool calls made so far

    def add(role: Role, parts: list[Part]) -> None:
        if not parts:
            return  # an empty message (an assistant turn with nothing in it) says nothing
        if messages and messages[-1].role == role:
            messages[-1].parts.extend(parts)  # Anthropic alternates roles: merged
        else:
            messages.append(Message(role, parts))

    for index, message in enumerate(call.messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            _invalid(where, "must be an object.")
        role = message.get("role")
        if role == "function":
            _unsupported(where, f"A `function` message (`{where}`; send a `tool` message)")
        if role not in _MESSAGE_KEYS:
            _invalid(f"{where}.role", "must be system, developer, user, assistant or tool.")
        _check_keys(message, role, where)
        content = message.get("content")
        if role in ("system", "developer"):
            for part in _content(content, where, images=False):
                if isinstance(part, Text) and part.text:
                    system.append(part)
        elif role == "user":
            add("user", list(_content(content, where, images=True)))
        elif role == "assistant":
            parts: list[Part] = _thinking(message, where)
            parts.extend(_assistant_content(content, where))
            refusal = message.get("refusal")
            if refusal is not None:
                parts.append(Text(_string(refusal, f"{where}.refusal")))
            uses = _tool_calls(message.get("tool_calls"), where)
            tool_ids.update(use.id for use in uses)
            parts.extend(uses)
            add("assistant", parts)
        else:  # tool
            tool_call_id = message.get("tool_call_id")
            if not isinstance(tool_call_id, str) or not tool_call_id:
                _invalid(f"{where}.tool_call_id", "is required and must be a string.")
            if tool_call_id not in tool_ids:
                # What OpenAI says too: a result must answer a call made before it.
                _invalid(
                    f"{where}.tool_call_id", "does not match a tool call of an earlier message."
                )
            result = _content(content, where, images=True)
            add("user", [ToolResult(tool_use_id=tool_call_id, content=result)])
    if not messages:
        raise ProxyError(
            400,
            "At least one user or assistant message is required.",
            code="invalid_request",
            param="messages",
        )
    return system, messages


def _tools(value: Any) -> list[Tool]:
    if value is None:
        return []
    if not isinstance(value, list):
        _invalid("tools", "must be an array.")
    tools: list[Tool] = []
    for index, tool in enumerate(value):
        at = f"tools[{index}]"
        if not isinstance(tool, dict):
            _invalid(at, "must be an object.")
        if tool.get("type") != "function":
            _unsupported(at, f"A `{tool.get('type')}` tool")
        function = tool.get("function")
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            _invalid(f"{at}.function.name", "is required and must be a string.")
        description = function.get("description")
        if description is not None:
            _string(description, f"{at}.function.description")
        # A function without parameters takes none: the empty object schema says so.
        parameters = function.get("parameters", {"type": "object", "properties": {}})
        if not isinstance(parameters, dict):
            _invalid(f"{at}.function.parameters", "must be a JSON Schema object.")
        strict = function.get("strict")
        if strict is not None and not isinstance(strict, bool):
            _invalid(f"{at}.function.strict", "must be a boolean.")
        tools.append(Tool(function["name"], description, parameters, strict))
    return tools


def _tool_choice(value: Any) -> ToolChoice | None:
    if value is None:
        return None
    if value in ("auto", "none", "required"):
        return ToolChoice(value)
    if isinstance(value, dict) and value.get("type") == "function":
        function = value.get("function")
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            _invalid("tool_choice.function.name", "is required and must be a string.")
        return ToolChoice("tool", function["name"])
    if isinstance(value, dict) and isinstance(value.get("type"), str):
        _unsupported("tool_choice", f"A `{value['type']}` tool_choice")
    _invalid("tool_choice", "must be auto, none, required or a named function.")


def _response_format(value: Any) -> ResponseFormat | None:
    if value is None:
        return None
    kind = value.get("type") if isinstance(value, dict) else None
    if kind in ("text", "json_object"):
        return ResponseFormat(kind)
    if kind != "json_schema":
        _invalid("response_format.type", "must be text, json_object or json_schema.")
    spec = value.get("json_schema")
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        _invalid("response_format.json_schema.name", "is required and must be a string.")
    schema = spec.get("schema")
    if schema is not None and not isinstance(schema, dict):
        _invalid("response_format.json_schema.schema", "must be an object.")
    strict = spec.get("strict")
    if strict is not None and not isinstance(strict, bool):
        _invalid("response_format.json_schema.strict", "must be a boolean.")
    description = spec.get("description")
    if description is not None:
        _string(description, "response_format.json_schema.description")
    return ResponseFormat(
        "json_schema", name=spec["name"], schema=schema, strict=strict, description=description
    )


def _reasoning(value: Any) -> Reasoning | None:
    if value is None:
        return None
    if value == "none":
        return Reasoning(enabled=False)  # GPT-5.1's "do not reason": thinking off
    if value not in _REASONING_EFFORTS:
        _invalid(
            "reasoning_effort", f"must be one of none, {', '.join(sorted(_REASONING_EFFORTS))}."
        )
    return Reasoning(effort=value)


def _stop(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        _invalid("stop", "must be a string or an array of strings.")
    return list(value)


def _check_fields(body: dict[str, Any]) -> None:
    for name in sorted(body):
        if name not in KNOWN_FIELDS:
            _unsupported(name, f"The field `{name}`")
        if name in _UNSUPPORTED_UNLESS_DEFAULT:
            if body[name] not in _UNSUPPORTED_UNLESS_DEFAULT[name]:
                _unsupported(name)
        elif name not in _HANDLED and name not in DROPPED_HINTS:
            # Known to OpenAI (KNOWN_FIELDS grew) but not yet to this translation: refused
            # until it is taught, never dropped unnoticed.
            _unsupported(name)
    modalities = body.get("modalities")
    if modalities is not None and modalities != ["text"]:
        _unsupported("modalities", "An output modality other than text")
    if body.get("service_tier") not in (None, "auto", "default"):
        _unsupported("service_tier", "A `service_tier` other than auto or default")


class ChatClient:
    """OpenAI chat completions on the client's side of a translation."""

    def decode(self, call: ChatRequest) -> InternalCall:
        body = call.body
        _check_fields(body)
        system, messages = _messages(call)
        parallel = body.get("parallel_tool_calls")
        if parallel is not None and not isinstance(parallel, bool):
            _invalid("parallel_tool_calls", "must be a boolean.")
        seed = body.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            _invalid("seed", "must be an integer.")
        # safety_identifier is what OpenAI now calls the end-user id `user` was.
        user_field = "safety_identifier" if body.get("safety_identifier") is not None else "user"
        user = body.get(user_field)
        if user is not None:
            _string(user, user_field)
        return InternalCall(
            model=call.model,
            stream=call.stream,
            messages=messages,
            system=system,
            tools=_tools(body.get("tools")),
            tool_choice=_tool_choice(body.get("tool_choice")),
            parallel_tool_calls=parallel,
            sampling=Sampling(
                temperature=body.get("temperature"),
                top_p=body.get("top_p"),
                stop=_stop(body.get("stop")),
                seed=seed,
            ),
            max_tokens=call.max_tokens,
            response_format=_response_format(body.get("response_format")),
            reasoning=_reasoning(body.get("reasoning_effort")),
            user=user,
            include_usage=call.include_usage,
        )

    def encode_answer(self, answer: Answer, *, call: ChatRequest, model: str) -> bytes:
        texts = [part.text for part in answer.parts if isinstance(part, Text)]
        tools = [part for part in answer.parts if isinstance(part, ToolUse)]
        message: dict[str, Any] = {
            "role": "assistant",
            "content": "".join(texts) if texts or not tools else None,
            "refusal": None,
            "annotations": [],
        }
        if tools:
            message["tool_calls"] = [_tool_call(tool) for tool in tools]
        message.update(_reasoning_fields(answer.parts))
        completion = {
            "id": f"chatcmpl-{answer.id}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": _finish_reason(answer.stop_reason),
                }
            ],
            "usage": usage_json(answer.usage),
        }
        return dumps(completion)

    def encoder(self, *, call: ChatRequest, model: str) -> ChatEncoder:
        return ChatEncoder(model=model, include_usage=call.include_usage)


def _finish_reason(stop_reason: StopReason) -> str:
    return FINISH_REASONS.get(stop_reason, "stop")


def _tool_call(tool: ToolUse) -> dict[str, Any]:
    return {
        "id": tool.id,
        "type": "function",
        "function": {"name": tool.name, "arguments": tool.arguments},
    }


def _thinking_block(part: Thinking | RedactedThinking) -> dict[str, Any]:
    if isinstance(part, RedactedThinking):
        return {"type": "redacted_thinking", "data": part.data}
    return {"type": "thinking", "thinking": part.text, "signature": part.signature}


def _reasoning_fields(parts: list[Any]) -> dict[str, Any]:
    """``reasoning_content`` (DeepSeek's and Moonshot's field, read by most OpenAI-compatible
    clients) and, when there is anything a later turn must send back (a signature, a
    redacted block), LiteLLM's ``thinking_blocks``."""
    thinking = [part for part in parts if isinstance(part, Thinking | RedactedThinking)]
    fields: dict[str, Any] = {}
    texts = [part.text for part in thinking if isinstance(part, Thinking)]
    if texts:
        fields["reasoning_content"] = "".join(texts)
    if any(isinstance(part, RedactedThinking) or part.signature for part in thinking):
        fields["thinking_blocks"] = [_thinking_block(part) for part in thinking]
    return fields


def usage_json(usage: Usage) -> dict[str, Any]:
    """OpenAI's usage object: prompt_tokens counts every prompt token, cached included.

    Tokens written to the cache (Anthropic's cache_creation_input_tokens) go in
    ``prompt_tokens_details.cache_write_tokens`` (the openai SDK's field) when there are
    any: OpenAI's own answers carry the field only then, and clients that price cache
    writes apart read it.
    """
    prompt_details: dict[str, int] = {"cached_tokens": usage.cache_read_tokens}
    if usage.cache_write_tokens:
        prompt_details["cache_write_tokens"] = usage.cache_write_tokens
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
        "prompt_tokens_details": prompt_details,
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }


class ChatEncoder:
    """Internal stream events in, ``chat.completion.chunk`` events out.

    Tool blocks become ``delta.tool_calls`` entries numbered 0, 1, ... in the order they
    start (OpenAI's own numbering, whatever the internal block indexes); the first entry of
    each carries its id, type and name with empty arguments, later ones only the index and
    an arguments piece, as OpenAI streams them. Thinking streams as ``reasoning_content``;
    a thinking block with a signature (or a redacted one) is also sent whole, once it is
    complete, as a ``thinking_blocks`` entry with an ``index`` (which the OpenAI SDK's
    accumulator needs to merge several blocks), so the client can send it back.
    """

    def __init__(self, *, model: str, include_usage: bool) -> None:
        self.include_usage = include_usage
        self._base: dict[str, Any] = {
            "id": "chatcmpl-unknown",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
        }
        self._role_sent = False
        self._finished = False
        self._done = False
        self._tools: dict[int, int] = {}  # block index -> tool_calls index
        self._argless: set[int] = set()  # tool blocks that have had no arguments yet
        self._thinking: dict[int, Thinking | RedactedThinking] = {}  # open thinking blocks
        self._thinking_sent = 0  # thinking_blocks entries sent

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        chunk: dict[str, Any] = {
            **self._base,
            "choices": [
                {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            ],
        }
        if self.include_usage:
            chunk["usage"] = None  # as OpenAI's own chunks carry it when usage is asked for
        return sse_data(chunk)

    def _delta(self, delta: dict[str, Any], *, content: str | None) -> bytes:
        """``delta``, the first one with the role (and ``content``: "" before text, null
        before a tool call or reasoning, as OpenAI and DeepSeek send them)."""
        if not self._role_sent:
            self._role_sent = True
            delta = {"role": "assistant", "content": content, **delta}
        return self._chunk(delta)

    def error_event(self, error: ProxyError) -> bytes | None:
        return None  # the client codec's own error event ends the stream

    def feed(self, event: Event) -> bytes:
        if isinstance(event, Start):
            self._base["id"] = f"chatcmpl-{event.id}"
            return b""
        if isinstance(event, BlockStart):
            return self._start(event)
        if isinstance(event, BlockDelta):
            return self._piece(event)
        if isinstance(event, BlockStop):
            return self._stop(event.index)
        if isinstance(event, Finish):
            return self._finish(event.stop_reason)
        if isinstance(event, End):
            return self._end(event.usage)
        return b""

    def _start(self, event: BlockStart) -> bytes:
        part = event.part
        if isinstance(part, Text):
            out = b"" if self._role_sent else self._delta({}, content="")
            return out + (self._chunk({"content": part.text}) if part.text else b"")
        if isinstance(part, ToolUse):
            number = self._tools[event.index] = len(self._tools)
            entry = {
                "index": number,
                "id": part.id,
                "type": "function",
                "function": {"name": part.name, "arguments": ""},
            }
            out = self._delta({"tool_calls": [entry]}, content=None)
            if part.arguments:
                out += self._arguments(number, part.arguments)
            else:
                self._argless.add(event.index)
            return out
        if isinstance(part, Thinking):
            self._thinking[event.index] = Thinking(part.text, part.signature)
            out = b"" if self._role_sent else self._delta({}, content=None)
            return out + (self._chunk({"reasoning_content": part.text}) if part.text else b"")
        self._thinking[event.index] = part
        return b"" if self._role_sent else self._delta({}, content=None)

    def _arguments(self, number: int, piece: str) -> bytes:
        return self._chunk({"tool_calls": [{"index": number, "function": {"arguments": piece}}]})

    def _piece(self, event: BlockDelta) -> bytes:
        if not event.value:
            return b""
        if event.kind == "text":
            return self._delta({"content": event.value}, content="")
        if event.kind == "arguments":
            number = self._tools.get(event.index)
            if number is None:
                return b""
            self._argless.discard(event.index)
            return self._arguments(number, event.value)
        block = self._thinking.get(event.index)
        if event.kind == "signature":
            if isinstance(block, Thinking):
                block.signature = (block.signature or "") + event.value
            return b""
        if isinstance(block, Thinking):
            block.text += event.value
        return self._delta({"reasoning_content": event.value}, content=None)

    def _no_arguments(self, index: int) -> bytes:
        """A tool call that ended without arguments gets ``{}``, as a whole answer does:
        "" is no JSON (the openai SDK's stream helper raises on it, and most clients run
        ``json.loads`` on the arguments)."""
        if index not in self._argless:
            return b""
        self._argless.discard(index)
        return self._arguments(self._tools[index], "{}")

    def _stop(self, index: int) -> bytes:
        if index in self._tools:
            return self._no_arguments(index)
        block = self._thinking.pop(index, None)
        if block is None or (isinstance(block, Thinking) and not block.signature):
            return b""
        entry = {"index": self._thinking_sent, **_thinking_block(block)}
        self._thinking_sent += 1
        return self._delta({"thinking_blocks": [entry]}, content=None)

    def _finish(self, stop_reason: StopReason) -> bytes:
        if self._finished:
            return b""
        self._finished = True
        out = b"" if self._role_sent else self._delta({}, content="")
        for index in sorted(self._argless):  # tool blocks never stopped
            out += self._no_arguments(index)
        return out + self._chunk({}, _finish_reason(stop_reason))

    def _end(self, usage: Usage) -> bytes:
        if self._done:
            return b""
        out = self._finish("end_turn") if not self._finished else b""
        self._done = True
        if self.include_usage:
            out += sse_data({**self._base, "choices": [], "usage": usage_json(usage)})
        return out + SSE_DONE


CHAT_CLIENT = ChatClient()
