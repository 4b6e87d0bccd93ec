"""OpenAI-compatible providers (OpenAI, Moonshot/Kimi, vLLM, ...): forwarded as they are.

The body goes out unchanged but for the model name, and with usage requested on streams;
the answer comes back byte for byte. The only edit to a stream is dropping the usage-only
chunk that the proxy asked for and the client did not.
"""

from __future__ import annotations

import json
from typing import Any

from core.errors import ProxyError
from routing.codecs.base import UpstreamRequest, Usage
from routing.codecs.openai_chat import ChatRequest
from routing.context import Route
from routing.sse import SSEEvent


def _usage_of(obj: dict[str, Any]) -> dict[str, Any] | None:
    usage = obj.get("usage")
    if isinstance(usage, dict):
        return usage
    # Moonshot puts the usage inside the last choice instead of at the top level.
    choices = obj.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        inner = choices[0].get("usage")
        if isinstance(inner, dict):
            return inner
    return None


def _read_usage(usage: dict[str, Any], into: Usage) -> None:
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if isinstance(prompt, int) and isinstance(completion, int):
        into.input_tokens, into.output_tokens, into.reported = prompt, completion, True


class OpenAIStream:
    def __init__(self, *, include_usage: bool) -> None:
        self.include_usage = include_usage
        self.usage = Usage()
        self.content_deltas = 0
        self.complete = False

    def feed(self, event: SSEEvent) -> bytes:
        data = event.data
        if data is None:
            return event.raw  # a comment (keep-alive): harmless to pass on
        if data == "[DONE]":
            self.complete = True
            return event.raw
        try:
            obj = json.loads(data)
        except ValueError:
            return event.raw
        if not isinstance(obj, dict):
            return event.raw
        choices = obj.get("choices")
        if isinstance(choices, list):
            for choice in choices:
                delta = choice.get("delta") if isinstance(choice, dict) else None
                if isinstance(delta, dict) and delta.get("content"):
                    self.content_deltas += 1
        usage = _usage_of(obj)
        if usage is not None:
            _read_usage(usage, self.usage)
            if not self.include_usage and choices == []:
                return b""  # the usage-only chunk the client did not ask for
        if not self.include_usage:
            # Asking for usage makes OpenAI add `"usage":null` to every chunk; a client that
            # did not ask gets the chunks as they would have been.
            return event.raw.replace(b',"usage":null', b"")
        return event.raw


class OpenAIPassthrough:
    """OpenAI chat in, OpenAI chat out: the body as sent, the answer byte for byte."""

    def build(self, *, route: Route, call: ChatRequest, max_tokens: int) -> UpstreamRequest:
        chat = call
        payload = dict(chat.body)
        payload["model"] = route.upstream_model
        if chat.max_tokens is None:
            # The reservation counted on this allowance: make the provider keep to it.
            payload["max_tokens"] = max_tokens
        if chat.stream:
            # Always ask for usage so every stream can be billed from the provider's count.
            payload["stream_options"] = {
                **(chat.body.get("stream_options") or {}),
                "include_usage": True,
            }
        return UpstreamRequest(f"{route.provider.base_url}/chat/completions", payload, {})

    def completion(self, *, route: Route, call: ChatRequest, raw: bytes) -> tuple[bytes, Usage]:
        usage = Usage()
        try:
            obj = json.loads(raw)
        except ValueError:
            raise ProxyError(
                502, "The provider sent a malformed response.", code="upstream_error"
            ) from None
        found = _usage_of(obj) if isinstance(obj, dict) else None
        if found is not None:
            _read_usage(found, usage)
        return raw, usage

    def stream(self, *, route: Route, call: ChatRequest) -> OpenAIStream:
        return OpenAIStream(include_usage=call.include_usage)
