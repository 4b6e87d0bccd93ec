"""Clients speaking the OpenAI Responses API, when their route's provider speaks another format.

:class:`ResponsesClient` decodes a Responses request (routing/codecs/responses_request.py)
into the internal model (routing/codecs/model.py) and encodes the internal answer and stream
back as a ``response`` object and Responses events, exactly as OpenAI sends them (checked by
the tests against the ``openai`` SDK's types and its stream accumulator).

| Responses request | internal model | notes |
|---|---|---|
| `instructions`, `system`/`developer` messages | `system: [Text]` | in order |
| `input` string | one user `Text` | |
| `input_text`, `output_text` parts | `Text` | `refusal` parts too (the model's words) |
| `input_image` (data: or http(s) URL) | `Image` | `detail` kept; `file_id`: 400 |
| `function_call` | `ToolUse(call_id, name, arguments)` | |
| `custom_tool_call` | `ToolUse(arguments={"input": text})` | see model.CUSTOM_INPUT |
| `function_call_output`, `custom_tool_call_output` | `ToolResult` | matched by call_id |
| `reasoning` | `Thinking(summary, signature)` | :data:`SIGNATURE_PREFIX`; or `RedactedThinking` |
| `additional_tools` items | their tools join `tools` | not a message |
| other items (`item_reference`, hosted tool calls...) | 400 naming `input[i]` | |
| `function` tools, `custom` tools | `Tool`, `Tool(kind="custom", format)` | |
| `web_search`, `tool_search` tools | dropped | :data:`DROPPED_HINTS` says why |
| `namespace` tools | their tools, as `<namespace>__<name>` | see :class:`ToolNames` |
| other hosted tools | 400 naming `tools[i]` | |
| `tool_choice` | `ToolChoice` | `allowed_tools` and hosted: 400 |
| `text.format` | `ResponseFormat` | |
| `reasoning.effort` | `Reasoning` | `none`: thinking off |
| `temperature`, `top_p`, `max_output_tokens` | `Sampling`, `max_tokens` | |
| `safety_identifier` / `user` | `user` | |

Answers carry each part as an output item, in order: ``reasoning`` (``rs_``), ``message``
(``msg_``), ``function_call`` (``fc_``) or, for a custom tool, ``custom_tool_call`` (``ctc_``,
its ``{"input": ...}`` arguments unwrapped). A thinking block's signature (Anthropic's) is
always the reasoning item's ``encrypted_content`` (after :data:`SIGNATURE_PREFIX`, so that
OpenAI's own encrypted reasoning is never taken for one), asked for or not: the proxy is stateless,
so the item the client sends back is the only way the signature can return to Anthropic,
and clients such as the Agents SDK send output items back as they got them. A redacted
thinking block is a reasoning item with no summary whose ``encrypted_content`` is
:data:`REDACTED_PREFIX` + its data. A stop at the token limit is ``status: "incomplete"``
with ``incomplete_details.reason`` ``max_output_tokens``; Anthropic's ``refusal`` stop is
``content_filter``, as OpenAI reports its own filter.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal, NoReturn

from core.errors import ProxyError
from routing.codecs.base import Usage, dumps
from routing.codecs.model import (
    CUSTOM_INPUT,
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
    custom_parameters,
)
from routing.codecs.responses_request import NOT_STORED, ResponsesRequest

# Fields and values accepted and not sent on, each with why nothing the client relies on is
# lost.
DROPPED_HINTS: dict[str, str] = {
    "store": "OpenAI keeps the response for later retrieval; the proxy stores nothing and "
    "the answer is the same (a later previous_response_id gets a clear 400)",
    "metadata": "tags for OpenAI's stored responses (see `store`); echoed in the response, "
    "the answer does not depend on them",
    "client_metadata": "a client's tracing tags for OpenAI (Codex sends its turn ids); the "
    "answer does not depend on them",
    "include": "reasoning.encrypted_content is always sent when there is one (see the module "
    "docstring); the others ask for outputs of hosted tools, which a translation never runs",
    "prompt_cache_key": "a routing hint for OpenAI's own prompt cache; other providers cache "
    "by their own rules",
    "prompt_cache_retention": "how long OpenAI keeps its prompt cache; other providers keep "
    "theirs by their own rules",
    "service_tier": "only auto and default reach a translation (the parser refuses the others, "
    "which would change the price): both mean the provider's normal tier",
    "stream_options": "include_obfuscation pads OpenAI's own events; these carry no padding",
    "truncation": "`auto` lets OpenAI cut the start of an input that overflows the context "
    "window; without it such a request fails with the provider's error rather than being "
    "answered differently, and every other request is the same",
    "background": "only false reaches a translation (true is refused by the parser)",
    "reasoning.summary": "whether OpenAI summarises its reasoning; thinking the provider "
    "returns is always sent as the reasoning item's summary",
    "reasoning.generate_summary": "the older name of reasoning.summary",
    "reasoning.context": "which turns' reasoning OpenAI shows the model; the provider sees the "
    "reasoning items the input carries",
    "text.verbosity": "a GPT-5 style hint on answer length with no equivalent elsewhere; the "
    "instructions are the portable way to ask for it",
    "input[].id": "ids of earlier output items; the content is what the provider reads",
    "input[].status": "whether an earlier item was complete; the content is what counts",
    "input[].phase": "whether an earlier assistant message was commentary or the final "
    "answer; the text is kept",
    "input[].content[].annotations": "citations of an earlier answer: output only",
    "input[].content[].logprobs": "log probabilities of an earlier answer: output only",
    "tools[web_search]": "OpenAI's hosted web search, which the model may use; no other "
    "provider runs it, so the model answers from what it knows (the client never runs it "
    "itself, so nothing it waits for goes missing)",
    "tools[tool_search]": "searches the tools marked defer_loading, which a translation "
    "refuses; with none, there is nothing for it to find",
}
_HANDLED = frozenset(
    {
        "model", "input", "instructions", "stream", "tools", "tool_choice",
        "parallel_tool_calls", "temperature", "top_p", "max_output_tokens", "text",
        "reasoning", "safety_identifier", "user",
    }
)  # fmt: skip
_TOP_HINTS = frozenset(
    {
        "store", "metadata", "client_metadata", "include", "prompt_cache_key",
        "prompt_cache_retention", "service_tier", "stream_options", "truncation", "background",
    }
)  # fmt: skip
# Refused unless absent or at a value meaning "not used".
_UNLESS_DEFAULT: dict[str, tuple[Any, ...]] = {
    "prompt": (None,),  # a prompt template stored in a provider account
    "top_logprobs": (None, 0),
    "max_tool_calls": (None,),
    "context_management": (None, []),
    "moderation": (None,),
}
_HOSTED_TOOLS_DROPPED = frozenset({"web_search", "web_search_preview", "tool_search"})
_EFFORTS = frozenset({"minimal", "low", "medium", "high", "xhigh", "max"})
_INCLUDE_REFUSED = frozenset({"message.output_text.logprobs"})
REDACTED_PREFIX = "redacted_thinking:"  # encrypted_content of a redacted thinking block
# encrypted_content carrying an Anthropic thinking signature. Anything else there (OpenAI's
# own encrypted reasoning, from a turn a passthrough route answered) is no signature Anthropic
# could check: the item's text is kept, as thinking without a signature.
SIGNATURE_PREFIX = "anthropic:"
# The names other providers accept for a tool (Anthropic's and OpenAI chat's rule).
_TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
NAMESPACE_SEPARATOR = "__"  # a namespaced tool's name elsewhere: <namespace>__<name>


def _unsupported(param: str, what: str | None = None) -> NoReturn:
    raise ProxyError(
        400,
        f"{what or f'`{param}`'} is not supported for this model (its provider does not "
        "speak the OpenAI Responses API).",
        code="unsupported_for_provider",
        param=param,
    )


def _invalid(param: str, message: str) -> NoReturn:
    raise ProxyError(400, f"`{param}` {message}", code="invalid_request", param=param)


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str):
        _invalid(where, "must be a string.")
    return value


def _optional_string(value: Any, where: str) -> str | None:
    return None if value is None else _string(value, where)


# --- decoding the request ----------------------------------------------------------------


def _image(part: dict[str, Any], where: str) -> Image:
    if part.get("file_id") is not None:
        _unsupported(
            f"{where}.file_id", "An image given by `file_id` (a file in a provider account)"
        )
    url = part.get("image_url")
    if not isinstance(url, str):
        _invalid(f"{where}.image_url", "is required and must be a string.")
    detail = _optional_string(part.get("detail"), f"{where}.detail")
    if url.startswith("data:"):
        header, comma, data = url[5:].partition(",")
        media_type, _, encoding = header.partition(";")
        if not comma or encoding != "base64" or not media_type or not data:
            _invalid(f"{where}.image_url", "must be a base64 data URL (data:<type>;base64,...).")
        return Image(media_type=media_type, data=data, detail=detail)
    if url.startswith(("https://", "http://")):
        return Image(url=url, detail=detail)
    _invalid(f"{where}.image_url", "must be an http(s) URL or a base64 data URL.")


def _parts(content: Any, where: str, *, images: bool) -> list[Text | Image]:
    """A message's or a tool output's content as text (and, where ``images``, image) parts."""
    if isinstance(content, str):
        return [Text(content)] if content else []
    if not isinstance(content, list):
        _invalid(where, "must be a string or an array of content parts.")
    parts: list[Text | Image] = []
    for index, part in enumerate(content):
        at = f"{where}[{index}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if not isinstance(part, dict) or not isinstance(kind, str):
            _invalid(at, "must be an object with a `type`.")
        if kind in ("input_text", "output_text"):
            parts.append(Text(_string(part.get("text"), f"{at}.text")))
        elif kind == "refusal":
            # What the model said when it refused: its words, like any other text.
            parts.append(Text(_string(part.get("refusal"), f"{at}.refusal")))
        elif kind == "input_image" and images:
            parts.append(_image(part, at))
        elif kind in ("input_image", "input_file", "input_audio"):
            _unsupported(at, f"An `{kind}` part here (`{at}`)")
        else:
            _invalid(at, f"has an unknown content type `{kind}`.")
    return parts


def _thinking(item: dict[str, Any], where: str) -> Thinking | RedactedThinking | None:
    encrypted = _optional_string(item.get("encrypted_content"), f"{where}.encrypted_content")
    if encrypted is not None and encrypted.startswith(REDACTED_PREFIX):
        return RedactedThinking(encrypted.removeprefix(REDACTED_PREFIX))
    signature = None
    if encrypted is not None and encrypted.startswith(SIGNATURE_PREFIX):
        signature = encrypted.removeprefix(SIGNATURE_PREFIX) or None
    texts: list[str] = []
    for key, kind in (("summary", "summary_text"), ("content", "reasoning_text")):
        value = item.get(key)
        if value is None:
            continue
        if not isinstance(value, list):
            _invalid(f"{where}.{key}", "must be an array.")
        for index, part in enumerate(value):
            at = f"{where}.{key}[{index}]"
            if not isinstance(part, dict) or part.get("type") != kind:
                _invalid(at, f"must be a `{kind}` part.")
            texts.append(_string(part.get("text"), f"{at}.text"))
        if texts:
            break  # the summary when there is one, else the raw reasoning text
    if not texts and signature is None:
        return None  # a reasoning item with nothing in it (for this provider) says nothing
    return Thinking("\n\n".join(texts), signature)


def _call_id(item: dict[str, Any], where: str) -> str:
    call_id = item.get("call_id")
    if not isinstance(call_id, str) or not call_id:
        _invalid(f"{where}.call_id", "is required and must be a string.")
    return call_id


def _check_caller(item: dict[str, Any], where: str) -> None:
    caller = item.get("caller")
    if isinstance(caller, dict) and caller.get("type") not in (None, "direct"):
        _unsupported(f"{where}.caller", "A call made by a program (programmatic tool calling)")


def _messages(call: ResponsesRequest, names: ToolNames) -> tuple[list[Text], list[Message]]:
    system: list[Text] = []
    instructions = call.body.get("instructions")
    if isinstance(instructions, str) and instructions:
        system.append(Text(instructions))
    if isinstance(call.input, str):
        return system, [Message("user", [Text(call.input)])]
    messages: list[Message] = []
    call_ids: set[str] = set()  # ids of the tool calls made so far

    def add(role: Role, parts: list[Part]) -> None:
        if not parts:
            return
        if messages and messages[-1].role == role:
            messages[-1].parts.extend(parts)  # Anthropic alternates roles: merged
        else:
            messages.append(Message(role, parts))

    for index, item in enumerate(call.input):
        where = f"input[{index}]"
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "assistant", "system", "developer"):
                _invalid(f"{where}.role", "must be user, assistant, system or developer.")
            content = item.get("content")
            if role in ("system", "developer"):
                system.extend(
                    part
                    for part in _parts(content, f"{where}.content", images=False)
                    if isinstance(part, Text) and part.text
                )
            else:
                parts = _parts(content, f"{where}.content", images=role == "user")
                add(role, list(parts))
        elif kind in ("function_call", "custom_tool_call"):
            _check_caller(item, where)
            call_id = _call_id(item, where)
            name = _string(item.get("name"), f"{where}.name")
            namespace = _optional_string(item.get("namespace"), f"{where}.namespace")
            if namespace is not None:
                name = names.flat(namespace, name)
            if kind == "function_call":
                arguments = _string(item.get("arguments"), f"{where}.arguments")
            else:
                text = _string(item.get("input"), f"{where}.input")
                arguments = json.dumps({CUSTOM_INPUT: text}, ensure_ascii=False)
            call_ids.add(call_id)
            add("assistant", [ToolUse(call_id, name, arguments)])
        elif kind in ("function_call_output", "custom_tool_call_output"):
            _check_caller(item, where)
            call_id = _call_id(item, where)
            if call_id not in call_ids:
                # OpenAI's words for a result that answers no call.
                raise ProxyError(
                    400,
                    f"No tool call found for function call output with call_id {call_id}.",
                    code="invalid_request",
                    param=f"{where}.call_id",
                )
            output = item.get("output")
            if output is None:
                _invalid(f"{where}.output", "is required.")
            result = _parts(output, f"{where}.output", images=True)
            add("user", [ToolResult(call_id, result)])
        elif kind == "reasoning":
            thinking = _thinking(item, where)
            if thinking is not None:
                add("assistant", [thinking])
        elif kind == "additional_tools":
            continue  # tools given mid-conversation (Codex's): in the tool list, see _declared
        elif kind == "item_reference":
            _unsupported(where, f"An `item_reference` (`{where}`: {NOT_STORED})")
        else:
            _unsupported(where, f"A `{kind}` item (`{where}`)")
    if not messages:
        raise ProxyError(
            400,
            "`input` must hold at least one user or assistant item.",
            code="invalid_request",
            param="input",
        )
    return system, messages


@dataclass(frozen=True, slots=True)
class ToolName:
    """A tool as the client declared it, under the name the provider knows it by."""

    flat: str  # the provider's name for it
    name: str  # the client's
    namespace: str | None
    kind: Literal["function", "custom"]


class ToolNames:
    """The tools a request declares (``tools`` and ``additional_tools`` input items), with
    each namespaced one's flat name: ``<namespace>__<name>`` when that is a name providers
    accept and no other tool has, else a sanitised, shortened one made unique by a hash."""

    def __init__(self, declared: list[tuple[str, dict[str, Any], str | None]]) -> None:
        self.by_flat: dict[str, ToolName] = {}
        self._flat: dict[tuple[str, str], str] = {}
        used = {tool["name"] for _, tool, namespace in declared if namespace is None}
        for _, tool, namespace in declared:
            name, kind = tool["name"], tool["type"]
            flat = name
            if namespace is not None:
                flat = self._flat.get((namespace, name)) or _flat_name(namespace, name, used)
                self._flat[(namespace, name)] = flat
                used.add(flat)
            self.by_flat[flat] = ToolName(flat, name, namespace, kind)

    def flat(self, namespace: str, name: str) -> str:
        """A namespaced tool's flat name (one no longer declared: named the same way)."""
        return self._flat.get((namespace, name)) or _flat_name(namespace, name, set())

    def custom(self, flat: str) -> bool:
        entry = self.by_flat.get(flat)
        return entry is not None and entry.kind == "custom"

    def call_fields(self, flat: str) -> dict[str, str]:
        """The ``name`` (and ``namespace``) of a call item for the tool ``flat``: a namespaced
        tool is called by its own name in its namespace (the SDK's ``namespace`` field on
        function_call and custom_tool_call items), as OpenAI's calls to it are."""
        entry = self.by_flat.get(flat)
        if entry is None or entry.namespace is None:
            return {"name": flat}
        return {"name": entry.name, "namespace": entry.namespace}


def _flat_name(namespace: str, name: str, used: set[str]) -> str:
    flat = f"{namespace}{NAMESPACE_SEPARATOR}{name}"
    if _TOOL_NAME.fullmatch(flat) and flat not in used:
        return flat
    digest = hashlib.sha256(f"{namespace}\0{name}".encode()).hexdigest()[:8]
    return re.sub(r"[^a-zA-Z0-9_-]", "_", flat)[:55] + "_" + digest


def _declared(call: ResponsesRequest) -> list[tuple[str, dict[str, Any], str | None]]:
    """Every function and custom tool the request declares, where, and in which namespace:
    ``tools``, then the ``additional_tools`` input items' (Codex sends its tools there for
    some models), a ``namespace`` tool's own tools flattened. Hosted tools stay (checked by
    _tools); a tool without a usable type or name is refused here."""
    sources: list[tuple[str, Any]] = [("tools", call.body.get("tools") or [])]
    for index, item in enumerate(call.input if isinstance(call.input, list) else ()):
        if item.get("type") == "additional_tools":
            tools = item.get("tools")
            if not isinstance(tools, list):
                _invalid(f"input[{index}].tools", "is required and must be an array.")
            sources.append((f"input[{index}].tools", tools))
    declared: list[tuple[str, dict[str, Any], str | None]] = []
    for where, tools in sources:
        for index, tool in enumerate(tools):
            at = f"{where}[{index}]"
            kind = _tool_type(tool, at)
            if kind != "namespace":
                declared.append((at, tool, None))
                continue
            namespace = tool.get("name")
            if not isinstance(namespace, str) or not namespace:
                _invalid(f"{at}.name", "is required and must be a non-empty string.")
            inner = tool.get("tools")
            if not isinstance(inner, list):
                _invalid(f"{at}.tools", "is required and must be an array.")
            for position, member in enumerate(inner):
                member_at = f"{at}.tools[{position}]"
                member_kind = _tool_type(member, member_at)
                if member_kind not in ("function", "custom"):
                    _unsupported(member_at, f"The `{member_kind}` tool (`{member_at}`)")
                declared.append((member_at, member, namespace))
    for at, tool, _ in declared:
        if tool["type"] in ("function", "custom"):
            name = tool.get("name")
            if not isinstance(name, str) or not name:
                _invalid(f"{at}.name", "is required and must be a non-empty string.")
    return declared


def _tool_type(tool: Any, at: str) -> str:
    if not isinstance(tool, dict):
        _invalid(at, "must be an object.")
    kind = tool.get("type")
    if not isinstance(kind, str):
        _invalid(f"{at}.type", "is required and must be a string.")
    return kind


def tool_names(
    call: ResponsesRequest, declared: list[tuple[str, dict[str, Any], str | None]] | None = None
) -> ToolNames:
    declared = _declared(call) if declared is None else declared
    return ToolNames([entry for entry in declared if entry[1]["type"] in ("function", "custom")])


def _tools(declared: list[tuple[str, dict[str, Any], str | None]], names: ToolNames) -> list[Tool]:
    tools: list[Tool] = []
    for at, tool, namespace in declared:
        kind = tool["type"]
        if kind in _HOSTED_TOOLS_DROPPED:
            continue  # see DROPPED_HINTS
        if kind not in ("function", "custom"):
            _unsupported(at, f"The `{kind}` tool (`{at}`)")
        name = tool["name"] if namespace is None else names.flat(namespace, tool["name"])
        description = _optional_string(tool.get("description"), f"{at}.description")
        if tool.get("defer_loading"):
            _unsupported(f"{at}.defer_loading", "`defer_loading` (tools found by tool search)")
        callers = tool.get("allowed_callers")
        if callers is not None and callers != ["direct"]:
            _unsupported(f"{at}.allowed_callers", "Programmatic tool calling")
        if kind == "custom":
            fmt = tool.get("format")
            if fmt is not None and (
                not isinstance(fmt, dict) or fmt.get("type") not in ("text", "grammar")
            ):
                _invalid(f"{at}.format", "must be a text or grammar format.")
            custom = Tool(name, description, {}, kind="custom", format=fmt)
            custom.parameters = custom_parameters(custom)
            tools.append(custom)
            continue
        if tool.get("output_schema") is not None:
            _unsupported(f"{at}.output_schema")
        parameters = tool.get("parameters")
        if parameters is None:  # a function without parameters takes none
            parameters = {"type": "object", "properties": {}}
        if not isinstance(parameters, dict):
            _invalid(f"{at}.parameters", "must be a JSON Schema object.")
        strict = tool.get("strict")
        if strict is not None and not isinstance(strict, bool):
            _invalid(f"{at}.strict", "must be a boolean.")
        tools.append(Tool(name, description, parameters, strict))
    return tools


def _tool_choice(value: Any) -> ToolChoice | None:
    if value is None:
        return None
    if value in ("auto", "none", "required"):
        return ToolChoice(value)
    kind = value.get("type") if isinstance(value, dict) else None
    if isinstance(value, dict) and kind in ("function", "custom"):
        return ToolChoice("tool", _string(value.get("name"), "tool_choice.name"))
    if isinstance(kind, str):
        _unsupported("tool_choice", f"A `{kind}` tool_choice")
    _invalid("tool_choice", "must be auto, none, required or a named function or custom tool.")


def _response_format(text: Any) -> ResponseFormat | None:
    if text is None:
        return None
    for key in text:
        if key not in ("format", "verbosity") and text[key] is not None:
            _unsupported(f"text.{key}")
    fmt = text.get("format")
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind in ("text", "json_object"):
        return ResponseFormat(kind)
    if kind != "json_schema" or not isinstance(fmt, dict):
        _invalid("text.format.type", "must be text, json_object or json_schema.")
    name = _string(fmt.get("name"), "text.format.name")
    schema = fmt.get("schema")
    if not isinstance(schema, dict):
        _invalid("text.format.schema", "is required and must be an object.")
    strict = fmt.get("strict")
    if strict is not None and not isinstance(strict, bool):
        _invalid("text.format.strict", "must be a boolean.")
    description = _optional_string(fmt.get("description"), "text.format.description")
    return ResponseFormat(
        "json_schema", name=name, schema=schema, strict=strict, description=description
    )


def _reasoning(value: Any) -> Reasoning | None:
    if value is None:
        return None
    for key in value:
        if (
            key not in ("effort", "summary", "generate_summary", "context")
            and value[key] is not None
        ):
            _unsupported(f"reasoning.{key}")
    effort = value.get("effort")
    if effort is None:
        return None
    if not isinstance(effort, str):
        _invalid("reasoning.effort", "must be a string.")
    if effort == "none":
        return Reasoning(enabled=False)  # GPT-5.1's "do not reason": thinking off
    if effort not in _EFFORTS:
        _invalid("reasoning.effort", f"must be one of none, {', '.join(sorted(_EFFORTS))}.")
    return Reasoning(effort=effort)


def _check_fields(call: ResponsesRequest) -> None:
    body = call.body
    for name in sorted(body):
        if name in _UNLESS_DEFAULT:
            if body[name] not in _UNLESS_DEFAULT[name]:
                _unsupported(name)
        elif name not in _HANDLED and name not in _TOP_HINTS and body[name] is not None:
            # A field newer than this translation: refused until it is taught, never
            # dropped unnoticed.
            _unsupported(name, f"The field `{name}`")
    truncation = body.get("truncation")
    if truncation not in (None, "auto", "disabled"):
        _invalid("truncation", "must be auto or disabled.")
    for index, entry in enumerate(call.include):
        if entry in _INCLUDE_REFUSED:
            _unsupported(f"include[{index}]", f"`include: {entry}`")


class ResponsesClient:
    """The OpenAI Responses client side of a translation (see the module docstring)."""

    def decode(self, call: ResponsesRequest) -> InternalCall:
        body = call.body
        _check_fields(call)
        declared = _declared(call)
        names = tool_names(call, declared)
        system, messages = _messages(call, names)
        user_field = "safety_identifier" if body.get("safety_identifier") is not None else "user"
        return InternalCall(
            model=call.model,
            stream=call.stream,
            messages=messages,
            system=system,
            tools=_tools(declared, names),
            tool_choice=_tool_choice(body.get("tool_choice")),
            parallel_tool_calls=body.get("parallel_tool_calls"),
            sampling=Sampling(temperature=body.get("temperature"), top_p=body.get("top_p")),
            max_tokens=call.max_tokens,
            response_format=_response_format(body.get("text")),
            reasoning=_reasoning(body.get("reasoning")),
            user=body.get(user_field),
            # Every Responses stream ends with the usage: nothing to ask for.
            include_usage=True,
        )

    def encode_answer(self, answer: Answer, *, call: ResponsesRequest, model: str) -> bytes:
        names = tool_names(call)
        items = [_item(part, names=names) for part in answer.parts]
        status, details = _status(answer.stop_reason)
        if status == "incomplete" and items and "status" in items[-1]:
            items[-1]["status"] = "incomplete"  # the item the limit cut
        response = _response(call, model=model, response_id=_response_id(answer.id))
        now = int(time.time())
        response.update(
            status=status,
            completed_at=now if status == "completed" else None,
            incomplete_details=details,
            output=items,
            usage=usage_json(answer.usage),
        )
        return dumps(response)

    def encoder(self, *, call: ResponsesRequest, model: str) -> ResponsesEncoder:
        return ResponsesEncoder(call=call, model=model)


# --- encoding the answer -----------------------------------------------------------------


def _new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def _response_id(answer_id: str) -> str:
    return answer_id if answer_id.startswith("resp_") else f"resp_{answer_id}"


def _status(stop_reason: StopReason) -> tuple[str, dict[str, str] | None]:
    if stop_reason == "max_tokens":
        return "incomplete", {"reason": "max_output_tokens"}
    if stop_reason == "refusal":
        return "incomplete", {"reason": "content_filter"}
    return "completed", None


def usage_json(usage: Usage) -> dict[str, Any]:
    """OpenAI's Responses usage: input_tokens counts every prompt token, cached included."""
    return {
        "input_tokens": usage.input_tokens,
        "input_tokens_details": {
            "cached_tokens": usage.cache_read_tokens,
            "cache_write_tokens": usage.cache_write_tokens,
        },
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.input_tokens + usage.output_tokens,
    }


def _echo_tools(call: ResponsesRequest) -> list[dict[str, Any]]:
    """The request's tools as the response lists them (only those the model was given)."""
    echoed: list[dict[str, Any]] = []
    for tool in call.body.get("tools") or ():
        if not isinstance(tool, dict) or tool.get("type") in _HOSTED_TOOLS_DROPPED:
            continue
        if tool.get("type") == "namespace":
            echoed.append(
                {
                    "type": "namespace",
                    "name": tool.get("name"),
                    "description": tool.get("description") or "",
                    "tools": [_echo_tool(member) for member in tool.get("tools") or ()],
                }
            )
        else:
            echoed.append(_echo_tool(tool))
    return echoed


def _echo_tool(tool: dict[str, Any]) -> dict[str, Any]:
    if tool.get("type") == "custom":
        entry = {"type": "custom", "name": tool.get("name")}
        for key in ("description", "format"):
            if tool.get(key) is not None:
                entry[key] = tool[key]
        return entry
    return {
        "type": "function",
        "description": tool.get("description"),
        "name": tool.get("name"),
        "parameters": tool.get("parameters"),
        "strict": tool.get("strict"),
    }


def _response(call: ResponsesRequest, *, model: str, response_id: str) -> dict[str, Any]:
    """A ``response`` object without its outcome (status, output, usage): the request's
    settings echoed as OpenAI echoes them, its defaults where the client set nothing."""
    body = call.body
    text: dict[str, Any] = body["text"] if isinstance(body.get("text"), dict) else {}
    reasoning: dict[str, Any] = body["reasoning"] if isinstance(body.get("reasoning"), dict) else {}
    return {
        "id": response_id,
        "object": "response",
        "created_at": int(time.time()),
        "status": "in_progress",
        "background": False,
        "completed_at": None,
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": call.max_tokens,
        "max_tool_calls": None,
        "model": model,
        "output": [],
        "parallel_tool_calls": body.get("parallel_tool_calls") is not False,
        "previous_response_id": None,
        "prompt_cache_key": body.get("prompt_cache_key"),
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "safety_identifier": body.get("safety_identifier"),
        "service_tier": "default",
        "store": False,  # nothing is stored, whatever the client asked
        "temperature": body.get("temperature", 1.0),
        "text": {
            "format": text.get("format") or {"type": "text"},
            "verbosity": text.get("verbosity") or "medium",
        },
        "tool_choice": body.get("tool_choice") or "auto",
        "tools": _echo_tools(call),
        "top_logprobs": 0,
        "top_p": body.get("top_p", 1.0),
        "truncation": body.get("truncation") or "disabled",
        "usage": None,
        "user": body.get("user"),
        "metadata": body.get("metadata") or {},
    }


def _unwrap(arguments: str) -> str:
    """A custom tool call's text from its ``{"input": ...}`` arguments; the arguments as
    they are when the model wrote something else (its text is then the best there is)."""
    try:
        value = json.loads(arguments)
    except ValueError:
        return arguments
    if isinstance(value, dict) and isinstance(value.get(CUSTOM_INPUT), str):
        return str(value[CUSTOM_INPUT])
    return arguments


def _output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "annotations": [], "logprobs": [], "text": text}


def _reasoning_item(item_id: str, part: Thinking | RedactedThinking) -> dict[str, Any]:
    item: dict[str, Any] = {"id": item_id, "type": "reasoning"}
    if isinstance(part, RedactedThinking):
        item["encrypted_content"] = REDACTED_PREFIX + part.data
        item["summary"] = []
        return item
    if part.signature:
        item["encrypted_content"] = SIGNATURE_PREFIX + part.signature
    item["summary"] = [{"type": "summary_text", "text": part.text}] if part.text else []
    return item


def _item(part: AnswerPart, *, names: ToolNames, item_id: str | None = None) -> dict[str, Any]:
    """One answer part as the completed output item."""
    if isinstance(part, Text):
        return {
            "id": item_id or _new_id("msg"),
            "type": "message",
            "status": "completed",
            "content": [_output_text(part.text)],
            "role": "assistant",
        }
    if isinstance(part, ToolUse):
        if names.custom(part.name):
            return {
                "id": item_id or _new_id("ctc"),
                "type": "custom_tool_call",
                "status": "completed",
                "call_id": part.id,
                "input": _unwrap(part.arguments),
                **names.call_fields(part.name),
            }
        return {
            "id": item_id or _new_id("fc"),
            "type": "function_call",
            "status": "completed",
            "arguments": part.arguments,
            "call_id": part.id,
            **names.call_fields(part.name),
        }
    return _reasoning_item(item_id or _new_id("rs"), part)


# --- the stream --------------------------------------------------------------------------


class _Block:
    """An internal block becoming one output item, its content gathered as it streams."""

    __slots__ = ("deltas", "item_id", "kind", "output_index", "part", "stopped", "summary_open")

    def __init__(self, part: AnswerPart, *, names: ToolNames) -> None:
        self.part = part
        if isinstance(part, Text):
            self.kind, prefix = "message", "msg"
        elif isinstance(part, ToolUse):
            self.kind, prefix = ("custom", "ctc") if names.custom(part.name) else ("function", "fc")
        else:
            self.kind, prefix = "reasoning", "rs"
        self.item_id = _new_id(prefix)
        self.output_index = -1  # set when the item is added to the stream
        self.deltas: list[BlockDelta] = []  # held while another item streams
        self.stopped = False
        self.summary_open = False


def _event(kind: str, payload: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return kind, {"type": kind, **payload}


class ResponsesEncoder:
    """Internal stream events in, Responses SSE out (``event: <type>`` then ``data:``).

    Every event carries the next ``sequence_number``. Output items never interleave here:
    the internal stream may (OpenAI's parallel tool calls), so a block that starts while
    another item streams is held, its deltas buffered, and streamed whole when its turn
    comes; ``output_index`` counts items in the order they are added. An item's closing
    events wait until the next item starts or the stream finishes, so the last one can say
    it was cut by the token limit (``status: "incomplete"``), as OpenAI's do. A custom
    tool's input is sent once complete (one delta, then done): it arrives as the JSON of
    ``{"input": ...}``, whose text cannot be unwrapped piece by piece.
    """

    def __init__(self, *, call: ResponsesRequest, model: str) -> None:
        self._call, self._model = call, model
        self._names = tool_names(call)
        self._sequence = 0
        self._response: dict[str, Any] | None = None
        self._done = False  # the terminal event was sent
        self._items: list[dict[str, Any]] = []  # completed items, by output_index
        self._open: _Block | None = None  # the item streaming now
        self._closing: _Block | None = None  # stopped; its closing events not yet sent
        self._pending: dict[int, _Block] = {}  # held blocks by internal index, start order
        self._blocks: dict[int, _Block] = {}  # internal index -> block, once streamed
        self._stop_reason: StopReason = "end_turn"

    # framing

    def _frame(self, events: list[tuple[str, dict[str, Any]]]) -> bytes:
        out = b""
        for kind, payload in events:
            payload["sequence_number"] = self._sequence
            self._sequence += 1
            out += b"event: " + kind.encode() + b"\ndata: " + dumps(payload) + b"\n\n"
        return out

    def feed(self, event: Event) -> bytes:
        if self._done:
            return b""
        events: list[tuple[str, dict[str, Any]]] = []
        if isinstance(event, Start):
            self._begin(event.id, events)
            return self._frame(events)
        self._begin("unknown", events)
        if isinstance(event, BlockStart):
            block = _Block(event.part, names=self._names)
            if self._open is None and not self._pending:
                self._stream(event.index, block, events)
            else:
                self._pending[event.index] = block
        elif isinstance(event, BlockDelta):
            if self._open is not None and self._blocks.get(event.index) is self._open:
                self._delta(self._open, event, events)
            elif event.index in self._pending:
                self._pending[event.index].deltas.append(event)
        elif isinstance(event, BlockStop):
            if self._open is not None and self._blocks.get(event.index) is self._open:
                self._closing, self._open = self._open, None
                self._drain(events, everything=False)
            elif event.index in self._pending:
                self._pending[event.index].stopped = True
        elif isinstance(event, Finish):
            self._stop_reason = event.stop_reason
        elif isinstance(event, End):
            self._finish(event.usage, events)
        return self._frame(events)

    def _begin(self, provider_id: str, events: list[tuple[str, dict[str, Any]]]) -> None:
        if self._response is not None:
            return
        response_id = _new_id("resp") if provider_id == "unknown" else _response_id(provider_id)
        self._response = _response(self._call, model=self._model, response_id=response_id)
        events.append(_event("response.created", {"response": dict(self._response)}))
        events.append(_event("response.in_progress", {"response": dict(self._response)}))

    # items

    def _stream(self, index: int, block: _Block, events: list[tuple[str, dict[str, Any]]]) -> None:
        """Adds ``block``'s item (after closing the one before) and replays what it holds."""
        self._close_pending(events, status="completed")
        self._blocks[index] = block
        self._open = block
        block.output_index = len(self._items)
        added: dict[str, Any]
        part = block.part
        if block.kind == "message":
            added = {
                "id": block.item_id,
                "type": "message",
                "status": "in_progress",
                "content": [],
                "role": "assistant",
            }
        elif block.kind == "function" and isinstance(part, ToolUse):
            added = {
                "id": block.item_id,
                "type": "function_call",
                "status": "in_progress",
                "arguments": "",
                "call_id": part.id,
                **self._names.call_fields(part.name),
            }
        elif block.kind == "custom" and isinstance(part, ToolUse):
            added = {
                "id": block.item_id,
                "type": "custom_tool_call",
                "status": "in_progress",
                "call_id": part.id,
                "input": "",
                **self._names.call_fields(part.name),
            }
        else:
            added = {"id": block.item_id, "type": "reasoning", "summary": []}
        events.append(
            _event(
                "response.output_item.added", {"item": added, "output_index": block.output_index}
            )
        )
        if block.kind == "message":
            events.append(
                _event(
                    "response.content_part.added",
                    {
                        "content_index": 0,
                        "item_id": block.item_id,
                        "output_index": block.output_index,
                        "part": _output_text(""),
                    },
                )
            )
        # What the block began with, then what was held, as deltas of their own.
        start, block.part = block.part, _empty(block.part)
        for delta in (*_initial_deltas(index, start), *block.deltas):
            self._delta(block, delta, events)
        block.deltas = []
        if block.stopped:
            self._closing, self._open = block, None

    def _delta(
        self, block: _Block, delta: BlockDelta, events: list[tuple[str, dict[str, Any]]]
    ) -> None:
        part, value = block.part, delta.value
        where = {"item_id": block.item_id, "output_index": block.output_index}
        if isinstance(part, Text) and delta.kind == "text":
            if not value:
                return
            part.text += value
            events.append(
                _event(
                    "response.output_text.delta",
                    {"content_index": 0, "delta": value, **where, "logprobs": []},
                )
            )
        elif isinstance(part, ToolUse) and delta.kind == "arguments":
            part.arguments += value
            if block.kind == "function" and value:
                events.append(
                    _event("response.function_call_arguments.delta", {"delta": value, **where})
                )
        elif isinstance(part, Thinking) and delta.kind == "signature":
            part.signature = (part.signature or "") + value
        elif isinstance(part, Thinking) and delta.kind == "thinking" and value:
            if not block.summary_open:
                block.summary_open = True
                events.append(
                    _event(
                        "response.reasoning_summary_part.added",
                        {**where, "part": {"type": "summary_text", "text": ""}, "summary_index": 0},
                    )
                )
            part.text += value
            events.append(
                _event(
                    "response.reasoning_summary_text.delta",
                    {"delta": value, **where, "summary_index": 0},
                )
            )

    def _close_pending(self, events: list[tuple[str, dict[str, Any]]], *, status: str) -> None:
        """The closing events of the stopped item, now that it is known how it ended."""
        block, self._closing = self._closing, None
        if block is None:
            return
        item = _item(block.part, names=self._names, item_id=block.item_id)
        where = {"item_id": block.item_id, "output_index": block.output_index}
        part = block.part
        if block.kind == "message" and isinstance(part, Text):
            events.append(
                _event(
                    "response.output_text.done",
                    {"content_index": 0, **where, "logprobs": [], "text": part.text},
                )
            )
            events.append(
                _event(
                    "response.content_part.done",
                    {"content_index": 0, **where, "part": _output_text(part.text)},
                )
            )
        elif block.kind == "function" and isinstance(part, ToolUse):
            events.append(
                _event(
                    "response.function_call_arguments.done",
                    {
                        "arguments": part.arguments,
                        **where,
                        "name": self._names.call_fields(part.name)["name"],
                    },
                )
            )
        elif block.kind == "custom":
            if item["input"]:
                events.append(
                    _event(
                        "response.custom_tool_call_input.delta", {"delta": item["input"], **where}
                    )
                )
            events.append(
                _event("response.custom_tool_call_input.done", {"input": item["input"], **where})
            )
        elif block.summary_open and isinstance(part, Thinking):
            summary = {"type": "summary_text", "text": part.text}
            events.append(
                _event(
                    "response.reasoning_summary_text.done",
                    {**where, "summary_index": 0, "text": part.text},
                )
            )
            events.append(
                _event(
                    "response.reasoning_summary_part.done",
                    {**where, "part": summary, "summary_index": 0},
                )
            )
        if "status" in item:
            item["status"] = status
        self._items.append(item)
        events.append(
            _event("response.output_item.done", {"item": item, "output_index": block.output_index})
        )

    def _drain(self, events: list[tuple[str, dict[str, Any]]], *, everything: bool) -> None:
        """Held blocks, in start order, while each has stopped (or all, at the end)."""
        while self._pending and self._open is None:
            index = next(iter(self._pending))
            block = self._pending.pop(index)
            self._stream(index, block, events)
            if everything and self._open is block:
                self._closing, self._open = block, None

    def _finish(self, usage: Usage, events: list[tuple[str, dict[str, Any]]]) -> None:
        if self._open is not None:
            self._closing, self._open = self._open, None
        self._drain(events, everything=True)
        status, details = _status(self._stop_reason)
        self._close_pending(events, status="incomplete" if status == "incomplete" else "completed")
        assert self._response is not None
        response = dict(self._response)
        response.update(
            status=status,
            completed_at=int(time.time()) if status == "completed" else None,
            incomplete_details=details,
            output=list(self._items),
            usage=usage_json(usage),
        )
        kind = "response.completed" if status == "completed" else "response.incomplete"
        events.append(_event(kind, {"response": response}))
        self._done = True

    def error_event(self, error: ProxyError) -> bytes:
        """The events ending a stream that failed mid-way: ``response.failed``, with the
        output so far (a complete item closed, the one cut short ``incomplete``)."""
        if self._done:
            return b""
        events: list[tuple[str, dict[str, Any]]] = []
        self._begin("unknown", events)
        self._close_pending(events, status="completed")
        output = list(self._items)
        if self._open is not None:
            partial = _item(self._open.part, names=self._names, item_id=self._open.item_id)
            if "status" in partial:
                partial["status"] = "incomplete"
            output.append(partial)
        for block in self._pending.values():
            # Held behind the open item, never streamed: what they got is output all the same
            # (a finished tool call the client may want to see), in the order they started.
            held = _item(_replayed(block), names=self._names, item_id=block.item_id)
            if "status" in held and not block.stopped:
                held["status"] = "incomplete"
            output.append(held)
        assert self._response is not None
        response = dict(self._response)
        response.update(
            status="failed",
            error={
                # ResponseError.code is one of OpenAI's own codes; the proxy's is in the text.
                "code": "rate_limit_exceeded" if error.status == 429 else "server_error",
                "message": error.message,
            },
            output=output,
        )
        events.append(_event("response.failed", {"response": response}))
        self._done = True
        return self._frame(events)


def _replayed(block: _Block) -> AnswerPart:
    """A held block's part with the deltas it holds applied."""
    part = block.part
    if isinstance(part, Text):
        part = Text(part.text + "".join(d.value for d in block.deltas if d.kind == "text"))
    elif isinstance(part, ToolUse):
        arguments = "".join(d.value for d in block.deltas if d.kind == "arguments")
        part = ToolUse(part.id, part.name, part.arguments + arguments)
    elif isinstance(part, Thinking):
        text = part.text + "".join(d.value for d in block.deltas if d.kind == "thinking")
        signature = (part.signature or "") + "".join(
            d.value for d in block.deltas if d.kind == "signature"
        )
        part = Thinking(text, signature or None)
    return part


def _empty(part: AnswerPart) -> AnswerPart:
    """The block as it begins, its content to come as deltas."""
    if isinstance(part, Text):
        return Text("")
    if isinstance(part, ToolUse):
        return ToolUse(part.id, part.name, "")
    if isinstance(part, Thinking):
        return Thinking("")
    return part


def _initial_deltas(index: int, part: AnswerPart) -> list[BlockDelta]:
    if isinstance(part, Text) and part.text:
        return [BlockDelta(index, "text", part.text)]
    if isinstance(part, ToolUse) and part.arguments:
        return [BlockDelta(index, "arguments", part.arguments)]
    if isinstance(part, Thinking):
        deltas = [BlockDelta(index, "thinking", part.text)] if part.text else []
        if part.signature:
            deltas.append(BlockDelta(index, "signature", part.signature))
        return deltas
    return []


RESPONSES_CLIENT = ResponsesClient()
