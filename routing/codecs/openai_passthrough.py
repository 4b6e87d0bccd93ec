"""OpenAI-compatible providers (OpenAI, Moonshot/Kimi, vLLM, ...): forwarded as they are.

The body goes out unchanged but for the model name, the one completion limit the
reservation holds, and usage requested on streams; the answer comes back as sent but for
the model name (the tenant's, never the upstream's). The only other edit to a stream is
dropping the usage-only chunk that the proxy asked for and the client did not.
"""

from __future__ import annotations

import json
from typing import Any

from core.errors import ProxyError
from routing.codecs.base import (
    UpstreamRequest,
    Usage,
    dumps,
    event_object,
    failed_mid_stream,
    loads,
    sse_data,
    token_counts,
)
from routing.codecs.openai_chat import ChatRequest
from routing.context import Route
from routing.sse import SSEEvent
from usage.limits import tokens_in


def usage_of(obj: dict[str, Any]) -> dict[str, Any] | None:
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


def read_usage(usage: dict[str, Any], into: Usage) -> None:
    """An OpenAI-style usage object's counts, validated, into ``into``.

    ``prompt_tokens`` counts every prompt token, cached ones included; the cached ones are
    in ``prompt_tokens_details.cached_tokens`` (OpenAI) or a top-level ``cached_tokens``
    (Moonshot's context cache), those written to the cache (priced apart on some routes) in
    ``prompt_tokens_details.cache_write_tokens``.
    """
    counts = token_counts(usage, required=("prompt_tokens", "completion_tokens"))
    details = usage.get("prompt_tokens_details")
    cached = token_counts(
        details if isinstance(details, dict) else usage,
        optional=("cached_tokens", "cache_write_tokens"),
    )
    reasoning = token_counts(usage.get("completion_tokens_details"), optional=("reasoning_tokens",))
    if (
        counts is None
        or cached is None
        or reasoning is None
        # More read from and written to the cache than was sent.
        or cached["cached_tokens"] + cached["cache_write_tokens"] > counts["prompt_tokens"]
    ):
        into.invalid, into.reported = True, False
        return
    into.input_tokens, into.output_tokens = counts["prompt_tokens"], counts["completion_tokens"]
    into.cache_read_tokens = cached["cached_tokens"]
    into.cache_write_tokens = cached["cache_write_tokens"]
    into.reasoning_tokens = reasoning["reasoning_tokens"]
    into.reported = True


def delta_pieces(delta: dict[str, Any]) -> int:
    """The content pieces in one chunk's ``delta``: text, a refusal, reasoning and each tool
    call's arguments piece (what is billed when the stream is cut before its usage)."""
    pieces = 0
    for field in ("content", "refusal"):
        if isinstance(text := delta.get(field), str) and text:
            pieces += 1
    # DeepSeek and Moonshot call it reasoning_content, OpenRouter and newer vLLM reasoning
    # (some send both, the same text): one piece either way.
    reasoning = delta.get("reasoning_content") or delta.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        pieces += 1
    tool_calls = delta.get("tool_calls")
    if isinstance(tool_calls, list):
        for entry in tool_calls:
            function = entry.get("function") if isinstance(entry, dict) else None
            if isinstance(function, dict):
                arguments = function.get("arguments")
                if isinstance(arguments, str) and arguments:
                    pieces += 1
    return pieces


def chunk_failure(obj: dict[str, Any]) -> ProxyError | None:
    """The failure a stream chunk reports, or None.

    OpenAI's own error event is ``{"error": {...}}`` alone; OpenRouter's comes with the
    choices, the one choice finished with ``"error"`` (and its text cut short): either way
    the turn failed, and relaying it as a normal end would bill and present half an answer
    as whole.
    """
    error = obj.get("error")
    if error is not None:
        return failed_mid_stream(error)
    choices = obj.get("choices")
    if isinstance(choices, list):
        for choice in choices:
            if isinstance(choice, dict) and choice.get("finish_reason") == "error":
                return failed_mid_stream(choice.get("error"))
    return None


def output_bytes(choices: Any, key: str) -> int:
    """The size of the text an answer's choices produced (content and tool arguments)."""
    size = 0
    for choice in choices if isinstance(choices, list) else ():
        message = choice.get(key) if isinstance(choice, dict) else None
        if not isinstance(message, dict):
            continue
        for field in ("content", "reasoning_content", "refusal"):
            if isinstance(text := message.get(field), str):
                size += len(text.encode())
        for tool_call in message.get("tool_calls") or ():
            function = tool_call.get("function") if isinstance(tool_call, dict) else None
            if isinstance(function, dict) and isinstance(args := function.get("arguments"), str):
                size += len(args.encode())
    return size


class ModelName:
    """Puts the tenant's model name where the provider wrote its own in a stream's chunks.

    The chunks are relayed as their bytes; the name is swapped in place (the replacement
    found once per stream), and a chunk written some other way is re-encoded instead.
    """

    def __init__(self, public: str) -> None:
        self.public = public
        self._seen: str | None = None
        self._needles: tuple[bytes, ...] = ()
        self._replacement = b'"model":' + json.dumps(public).encode()

    def swap(self, raw: bytes, upstream: Any) -> bytes | None:
        """``raw`` with the provider's name ``upstream`` replaced by the tenant's, or None
        when ``raw`` writes it some unusual way (the caller re-encodes then)."""
        if upstream is None or upstream == self.public:
            return raw
        if upstream != self._seen:
            self._seen = upstream
            quoted = json.dumps(upstream).encode()
            self._needles = (b'"model":' + quoted, b'"model": ' + quoted)
        for needle in self._needles:
            if needle in raw:
                return raw.replace(needle, self._replacement)
        return None

    def apply(self, raw: bytes, obj: dict[str, Any], *, event: bool = True) -> bytes:
        """``raw`` (the encoding of ``obj``, a stream event or a whole answer) naming the
        tenant's model; re-encoded only when the name is written in some unusual way."""
        swapped = self.swap(raw, obj.get("model"))
        if swapped is not None:
            return swapped
        renamed = {**obj, "model": self.public}
        return sse_data(renamed) if event else dumps(renamed)


class OpenAIStream:
    def __init__(self, *, include_usage: bool, model: str) -> None:
        self.include_usage = include_usage
        self.usage = Usage()
        self.content_deltas = 0
        self.complete = False
        self._model = ModelName(model)

    def error_event(self, error: ProxyError) -> bytes | None:
        return None  # the client codec's own error event ends the stream

    def feed(self, event: SSEEvent) -> bytes:
        data = event.data
        if data is None:
            return event.raw  # a comment (keep-alive): harmless to pass on
        if data == "[DONE]":
            self.complete = True
            return event.raw
        obj = event_object(data)
        choices = obj.get("choices")
        if isinstance(choices, list):
            for choice in choices:
                delta = choice.get("delta") if isinstance(choice, dict) else None
                if isinstance(delta, dict):
                    self.content_deltas += delta_pieces(delta)
        failure = chunk_failure(obj)
        if failure is not None:
            raise failure
        raw = self._model.apply(event.raw, obj)
        usage = usage_of(obj)
        if usage is not None:
            read_usage(usage, self.usage)
            if not self.include_usage and choices == []:
                return b""  # the usage-only chunk the client did not ask for
        if not self.include_usage:
            # Asking for usage makes OpenAI add `"usage":null` to every chunk; a client that
            # did not ask gets the chunks as they would have been.
            return raw.replace(b',"usage":null', b"")
        return raw


class OpenAIPassthrough:
    """OpenAI chat in, OpenAI chat out: the body and the answer as sent, but for the model name
    and the one completion limit reserved."""

    def build(self, *, route: Route, call: ChatRequest, max_tokens: int) -> UpstreamRequest:
        chat = call
        payload = dict(chat.body)
        payload["model"] = route.upstream_model
        # The reservation counted on ``max_tokens`` (the client's limit, or the tier's
        # default): the provider gets exactly that limit, whichever field it honours. A
        # client that sent both fields gets both, at the one value reserved; one field stays
        # one field (OpenAI's reasoning models refuse max_tokens).
        limits = [name for name in ("max_completion_tokens", "max_tokens") if name in payload]
        for name in limits or ["max_tokens"]:
            payload[name] = max_tokens
        if chat.stream:
            # Always ask for usage so every stream can be billed from the provider's count.
            payload["stream_options"] = {
                **(chat.body.get("stream_options") or {}),
                "include_usage": True,
            }
        return UpstreamRequest(f"{route.provider.base_url}/chat/completions", payload, {})

    def completion(self, *, route: Route, call: ChatRequest, raw: bytes) -> tuple[bytes, Usage]:
        obj = loads(raw)
        if not isinstance(obj, dict):
            raise ProxyError(502, "The provider sent a malformed response.", code="upstream_error")
        if "error" in obj and "choices" not in obj:
            # An error dressed as a 200 (some gateways do this): a failure, not an answer,
            # and its message goes out only as the pipeline's redacted error.
            raise failed_mid_stream(obj["error"], stream=False)
        usage = Usage(output_estimate=tokens_in(output_bytes(obj.get("choices"), "message")))
        found = usage_of(obj)
        if found is None:
            usage.invalid = True  # a whole answer without its usage cannot be billed from it
        else:
            read_usage(found, usage)
        # The tenant sees the model it asked for, never the upstream's name for it; swapped in
        # the bytes, so the answer is not re-encoded.
        return ModelName(route.model).apply(raw, obj, event=False), usage

    def stream(self, *, route: Route, call: ChatRequest) -> OpenAIStream:
        return OpenAIStream(include_usage=call.include_usage, model=route.model)
