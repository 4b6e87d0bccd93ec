"""Anthropic clients on Anthropic routes: forwarded as they are.

The body goes out as the client sent it but for the model name and ``max_tokens`` (the
allowance the reservation holds: the client's own, as Anthropic requires one); unknown
fields and content blocks included, so a feature Anthropic ships today works through the
proxy today. ``anthropic-version`` is the client's, ``anthropic-beta`` the client's betas
(only those PROXY_ANTHROPIC_BETAS allows, when it is set). The answer and every stream
event come back byte for byte but for the model name in the answer and in ``message_start``;
the usage is read on the way, from ``message_start`` and ``message_delta`` only: content
deltas are counted (thinking signatures excepted), not parsed.
"""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings

from core.errors import ProxyError
from routing.codecs.anthropic_messages import MessagesRequest
from routing.codecs.base import (
    UpstreamRequest,
    Usage,
    dumps,
    event_object,
    failed_mid_stream,
    loads,
)
from routing.codecs.messages_provider import AnthropicUsage
from routing.codecs.openai_passthrough import ModelName
from routing.context import Route
from routing.sse import SSEEvent
from usage.limits import tokens_in


def _output_bytes(content: Any) -> int:
    """The size of what an answer's blocks produced (text, tool input, thinking)."""
    size = 0
    for block in content if isinstance(content, list) else ():
        if not isinstance(block, dict):
            continue
        for name in ("text", "thinking"):
            if isinstance(value := block.get(name), str):
                size += len(value.encode())
        if "input" in block:
            size += len(json.dumps(block["input"], ensure_ascii=False).encode())
    return size


def _malformed() -> ProxyError:
    return ProxyError(502, "The provider sent a malformed response.", code="upstream_error")


# Events whose bytes are passed on unread: the bulk of a stream.
_COUNTED = frozenset({"content_block_delta"})
_UNREAD = frozenset({"ping", "content_block_start", "content_block_stop"})
_SIGNATURE = b'"signature_delta"'


class AnthropicPassthroughStream:
    def __init__(self, *, model: str) -> None:
        self._counts = AnthropicUsage()
        self.usage = self._counts.usage
        self.content_deltas = 0
        self.complete = False
        self._model = ModelName(model)

    def error_event(self, error: ProxyError) -> bytes | None:
        return None  # the client codec's own error event ends the stream

    def feed(self, event: SSEEvent) -> bytes:
        if event.data is None:
            return event.raw  # a comment
        kind = event.event
        if kind in _COUNTED:
            # A thinking block's signature is no content the model wrote (and not billed as
            # output): found in the bytes, so deltas stay unparsed.
            if _SIGNATURE not in event.raw:
                self.content_deltas += 1
            return event.raw
        if kind in _UNREAD:
            return event.raw
        data = event_object(event.data)
        kind = data.get("type") if isinstance(data.get("type"), str) else kind
        if kind == "content_block_delta":  # an event written without its `event:` line
            delta = data.get("delta")
            if not isinstance(delta, dict) or delta.get("type") != "signature_delta":
                self.content_deltas += 1
        elif kind == "message_start":
            message = data.get("message")
            message = message if isinstance(message, dict) else {}
            self._counts.read(
                message.get("usage"), required=("input_tokens",), optional=("output_tokens",)
            )
            # The tenant's name for the model, never the provider's.
            swapped = self._model.swap(event.raw, message.get("model"))
            if swapped is None:
                renamed = {**data, "message": {**message, "model": self._model.public}}
                swapped = b"event: message_start\ndata: " + dumps(renamed) + b"\n\n"
            return swapped
        elif kind == "message_delta":
            self._counts.read(
                data.get("usage"), required=("output_tokens",), optional=("input_tokens",)
            )
            self.usage.reported = not self.usage.invalid
        elif kind == "message_stop":
            self.complete = True
        elif kind == "error":
            raise failed_mid_stream(data.get("error"))
        return event.raw


class AnthropicPassthrough:
    """Anthropic Messages in, Anthropic Messages out."""

    def build(self, *, route: Route, call: MessagesRequest, max_tokens: int) -> UpstreamRequest:
        payload = dict(call.body)
        payload["model"] = route.upstream_model
        payload["max_tokens"] = max_tokens
        headers = {"anthropic-version": call.version or settings.PROXY_ANTHROPIC_VERSION}
        allowed: frozenset[str] | None = settings.PROXY_ANTHROPIC_BETAS
        betas = [beta for beta in call.betas if allowed is None or beta in allowed]
        if betas:
            headers["anthropic-beta"] = ",".join(betas)
        return UpstreamRequest(f"{route.provider.base_url}/v1/messages", payload, headers)

    def completion(self, *, route: Route, call: MessagesRequest, raw: bytes) -> tuple[bytes, Usage]:
        obj = loads(raw)
        if not isinstance(obj, dict):
            raise _malformed()
        if obj.get("type") == "error" or ("error" in obj and "content" not in obj):
            raise failed_mid_stream(obj.get("error"), stream=False)
        counts = AnthropicUsage()
        counts.read(obj.get("usage"), required=("input_tokens", "output_tokens"), optional=())
        usage = counts.usage
        usage.output_estimate = tokens_in(_output_bytes(obj.get("content")))
        usage.reported = not usage.invalid
        return ModelName(route.model).apply(raw, obj, event=False), usage

    def stream(self, *, route: Route, call: MessagesRequest) -> AnthropicPassthroughStream:
        return AnthropicPassthroughStream(model=route.model)
