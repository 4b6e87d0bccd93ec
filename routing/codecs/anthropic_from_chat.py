"""Anthropic's Messages API behind OpenAI chat completions.

Translated: system and developer messages (joined into ``system``), user and assistant
messages with text content (strings or text parts), max_tokens / max_completion_tokens,
temperature (clamped to Anthropic's 0..1), top_p, stop, user, and streaming. Not yet
translated, and refused with a 400 rather than silently dropped: tools and tool messages,
images and other non-text parts, ``n`` > 1, logprobs, response_format.
"""

from __future__ import annotations

import json
import time
from typing import Any, NoReturn

from django.conf import settings

from core.errors import ProxyError
from routing.codecs.base import (
    SSE_DONE,
    UpstreamRequest,
    Usage,
    dumps,
    failed_mid_stream,
    sse_data,
    token_counts,
)
from routing.codecs.openai_chat import ChatRequest
from routing.context import Route
from routing.sse import SSEEvent
from usage.limits import tokens_in

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
_UNSUPPORTED = ("tools", "tool_choice", "functions", "function_call", "response_format", "audio")


def _unsupported(what: str) -> NoReturn:
    raise ProxyError(
        400,
        f"{what} is not supported for this model yet (its provider speaks the Anthropic API).",
        code="unsupported_for_provider",
    )


def _text_of(content: Any, where: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    texts = []
    for part in content:
        if not isinstance(part, dict) or part.get("type") != "text":
            _unsupported(f"A non-text content part in {where}")
        text = part.get("text")
        if not isinstance(text, str):
            raise ProxyError(400, f"A text part in {where} has no text.", code="invalid_request")
        texts.append(text)
    return "\n".join(texts)


_CACHE_COUNTS = ("cache_creation_input_tokens", "cache_read_input_tokens")


def _read_usage(
    usage: Any, into: Usage, *, required: tuple[str, ...], optional: tuple[str, ...]
) -> None:
    """Take the counts an Anthropic usage object carries (validated) into ``into``.

    Anthropic counts cached prompt tokens apart from input_tokens; all were sent, so all
    are input. A stream's message_delta usage is cumulative: the last one is the total.
    """
    counts = token_counts(usage, required=required, optional=(*optional, *_CACHE_COUNTS))
    if counts is None:
        into.invalid = True
        return
    present = usage if isinstance(usage, dict) else {}
    if "input_tokens" in present:
        into.input_tokens = counts["input_tokens"] + sum(counts[name] for name in _CACHE_COUNTS)
    if any(present.get(name) is not None for name in _CACHE_COUNTS):
        into.cache_read_tokens = counts["cache_read_input_tokens"]
        into.cache_write_tokens = counts["cache_creation_input_tokens"]
    if "output_tokens" in present:
        into.output_tokens = counts["output_tokens"]


def _usage_json(usage: Usage, cached: int) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
        "prompt_tokens_details": {"cached_tokens": cached},
    }


class AnthropicStream:
    """Anthropic stream events in, OpenAI chat.completion.chunk events out."""

    def __init__(self, *, model: str, include_usage: bool) -> None:
        self.include_usage = include_usage
        self.usage = Usage()
        self.content_deltas = 0
        self.complete = False
        self._base: dict[str, Any] = {
            "id": "chatcmpl-unknown",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
        }

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        chunk = {
            **self._base,
            "choices": [
                {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            ],
        }
        if self.include_usage:
            chunk["usage"] = None
        return sse_data(chunk)

    def feed(self, event: SSEEvent) -> bytes:
        if event.data is None:
            return b""
        try:
            data = json.loads(event.data)
        except ValueError:
            return b""
        if not isinstance(data, dict):
            return b""
        kind = data.get("type") or event.event
        if kind == "message_start":
            message = data.get("message") or {}
            self._base["id"] = f"chatcmpl-{message.get('id', 'unknown')}"
            # The model stays the tenant's name for it, whatever the provider calls it.
            _read_usage(
                message.get("usage"),
                self.usage,
                required=("input_tokens",),
                optional=("output_tokens",),
            )
            return self._chunk({"role": "assistant", "content": ""})
        if kind == "content_block_delta":
            delta = data.get("delta") or {}
            if delta.get("type") == "text_delta" and delta.get("text"):
                self.content_deltas += 1
                return self._chunk({"content": delta["text"]})
            return b""
        if kind == "message_delta":
            _read_usage(
                data.get("usage"),
                self.usage,
                required=("output_tokens",),
                optional=("input_tokens",),
            )
            self.usage.reported = not self.usage.invalid
            stop_reason = (data.get("delta") or {}).get("stop_reason")
            return self._chunk({}, FINISH_REASONS.get(stop_reason or "", "stop"))
        if kind == "message_stop":
            self.complete = True
            out = b""
            if self.include_usage:
                usage = _usage_json(self.usage, self.usage.cache_read_tokens)
                out = sse_data({**self._base, "choices": [], "usage": usage})
            return out + SSE_DONE
        if kind == "error":
            # Ends the stream with the one error event the pipeline sends (its message
            # cleaned of anything about the proxy's set-up), not one of ours and then another.
            raise failed_mid_stream(data.get("error"))
        return b""  # ping, content_block_start/stop: nothing for an OpenAI client


class AnthropicFromChat:
    """OpenAI chat in, Anthropic Messages out, and the answer translated back."""

    def build(self, *, route: Route, call: ChatRequest, max_tokens: int) -> UpstreamRequest:
        chat = call
        body = chat.body
        for name in _UNSUPPORTED:
            if body.get(name) is not None:
                _unsupported(f"`{name}`")
        if body.get("n") not in (None, 1):
            _unsupported("`n` greater than 1")
        if body.get("logprobs"):
            _unsupported("`logprobs`")
        system: list[str] = []
        messages: list[dict[str, Any]] = []
        for index, message in enumerate(chat.messages):
            role, where = message["role"], f"messages[{index}]"
            if role in ("system", "developer"):
                system.append(_text_of(message.get("content"), where))
            elif role in ("user", "assistant"):
                if message.get("tool_calls") or message.get("function_call"):
                    _unsupported("A tool call")
                messages.append({"role": role, "content": _text_of(message.get("content"), where)})
            else:
                _unsupported(f"A `{role}` message")
        if not messages:
            raise ProxyError(
                400, "At least one user or assistant message is required.", code="invalid_request"
            )
        payload: dict[str, Any] = {
            "model": route.upstream_model,
            "messages": messages,
            "max_tokens": max_tokens,
        }
        if system:
            payload["system"] = "\n\n".join(system)
        temperature, top_p = body.get("temperature"), body.get("top_p")
        if top_p is not None and top_p >= 1:
            top_p = None  # 1 samples from everything: the same as not sending it
        if temperature is not None and top_p is not None:
            # Current Claude models refuse the pair; choosing one for the client would change
            # what it asked for.
            raise ProxyError(
                400,
                "`temperature` and `top_p` cannot both be set for this model (its provider "
                "speaks the Anthropic API): send one of them.",
                code="unsupported_for_provider",
                param="top_p",
            )
        if temperature is not None:
            payload["temperature"] = min(float(temperature), 1.0)
        if top_p is not None:
            payload["top_p"] = top_p
        stop = body.get("stop")
        if stop:
            stops = [stop] if isinstance(stop, str) else list(stop)
            if not all(s.strip() for s in stops):
                # Anthropic refuses stop sequences made of whitespace alone ("\n"): dropping
                # one would let the answer run past where the client wanted it cut.
                raise ProxyError(
                    400,
                    "A `stop` sequence made only of whitespace is not supported for this model "
                    "(its provider speaks the Anthropic API).",
                    code="unsupported_for_provider",
                    param="stop",
                )
            payload["stop_sequences"] = stops
        if isinstance(body.get("user"), str):
            payload["metadata"] = {"user_id": body["user"]}
        if chat.stream:
            payload["stream"] = True
        headers = {"anthropic-version": settings.PROXY_ANTHROPIC_VERSION}
        return UpstreamRequest(f"{route.provider.base_url}/v1/messages", payload, headers)

    def completion(self, *, route: Route, call: ChatRequest, raw: bytes) -> tuple[bytes, Usage]:
        try:
            obj = json.loads(raw)
            text = "".join(
                b.get("text", "")
                for b in obj["content"]
                if isinstance(b, dict) and b.get("type") == "text"
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            raise ProxyError(
                502, "The provider sent a malformed response.", code="upstream_error"
            ) from None
        usage = Usage(output_estimate=tokens_in(len(text.encode())))
        _read_usage(
            obj.get("usage"), usage, required=("input_tokens", "output_tokens"), optional=()
        )
        usage.reported = not usage.invalid  # only the provider's own figures are reported
        completion = {
            "id": f"chatcmpl-{obj.get('id', 'unknown')}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": route.model,
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
                    "finish_reason": FINISH_REASONS.get(obj.get("stop_reason") or "", "stop"),
                }
            ],
            "usage": _usage_json(usage, usage.cache_read_tokens),
        }
        return dumps(completion), usage

    def stream(self, *, route: Route, call: ChatRequest) -> AnthropicStream:
        return AnthropicStream(model=route.model, include_usage=call.include_usage)
