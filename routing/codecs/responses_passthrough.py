"""OpenAI Responses clients on OpenAI-kind providers that speak Responses natively.

The body goes out as the client sent it, unknown fields and item types included (a feature
OpenAI ships today works through the proxy today), but for three fields: the model (the
route's), ``max_output_tokens`` (the allowance the reservation holds) and ``store``, forced to
false. The proxy is stateless: a response stored under a pooled provider account could be
read back by no one but whoever next draws that key (another tenant, possibly), and failover
would scatter a conversation's stored turns over accounts none of which holds them all; the
client sends the whole conversation in ``input`` instead, reasoning as encrypted content:
``include`` always gets ``reasoning.encrypted_content`` (added to what the client asked for),
since a reasoning item the client sends back is refused by OpenAI unless it carries it.

The answer and every stream event come back byte for byte but for the model name, swapped
in the bytes of the events that carry a whole ``response`` (created, in progress, completed,
incomplete, failed); the usage is read from ``response.completed`` / ``response.incomplete``
(and ``response.failed``, when it has one): every other event is passed on unread (deltas
counted, not parsed). The provider's own ``response.failed``, and an ``error`` event in the
shape the SDK reads, are relayed as sent and end the stream as a failure (billed as the
provider's); a malformed ``error`` event is replaced by the proxy's.
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
    token_counts,
)
from routing.codecs.openai_passthrough import ModelName
from routing.codecs.responses_request import ResponsesRequest
from routing.context import Route
from routing.sse import SSEEvent
from usage.limits import tokens_in

# The events whose data is read: those carrying the whole response, and errors. The bulk of
# a stream (items, parts, deltas) is passed on unread.
_LIFECYCLE = frozenset(
    {
        "response.created",
        "response.queued",
        "response.in_progress",
        "response.completed",
        "response.incomplete",
        "response.failed",
    }
)
ENCRYPTED_REASONING = "reasoning.encrypted_content"
_FINAL = frozenset({"response.completed", "response.incomplete"})
_READ = _LIFECYCLE | {"error"}


def read_responses_usage(usage: Any, into: Usage) -> None:
    """A Responses usage object's counts, validated, into ``into``.

    ``input_tokens`` counts every prompt token, cached ones included (they are broken down in
    ``input_tokens_details``); ``output_tokens`` counts the reasoning ones too.
    """
    counts = token_counts(usage, required=("input_tokens", "output_tokens"))
    details = usage.get("input_tokens_details") if isinstance(usage, dict) else None
    cached = token_counts(details, optional=("cached_tokens", "cache_write_tokens"))
    output_details = usage.get("output_tokens_details") if isinstance(usage, dict) else None
    reasoning = token_counts(output_details, optional=("reasoning_tokens",))
    if (
        counts is None
        or cached is None
        or reasoning is None
        # more cached than sent, more reasoning than produced: no answer has such figures
        or cached["cached_tokens"] + cached["cache_write_tokens"] > counts["input_tokens"]
        or reasoning["reasoning_tokens"] > counts["output_tokens"]
    ):
        into.invalid, into.reported = True, False
        return
    into.input_tokens, into.output_tokens = counts["input_tokens"], counts["output_tokens"]
    into.cache_read_tokens = cached["cached_tokens"]
    into.cache_write_tokens = cached["cache_write_tokens"]
    into.reasoning_tokens = reasoning["reasoning_tokens"]
    into.reported = True


def output_bytes(output: Any) -> int:
    """The size of what a response's output items produced (text, refusals, tool call
    arguments and inputs, reasoning summaries)."""
    size = 0
    for item in output if isinstance(output, list) else ():
        if not isinstance(item, dict):
            continue
        for name in ("arguments", "input"):
            if isinstance(value := item.get(name), str):
                size += len(value.encode())
        parts = [*(item.get("content") or ()), *(item.get("summary") or ())]
        for part in parts if all(isinstance(p, dict) for p in parts) else ():
            for name in ("text", "refusal"):
                if isinstance(value := part.get(name), str):
                    size += len(value.encode())
    return size


def _error_of(data: dict[str, Any]) -> Any:
    """An `error` event's error: nested as OpenAI sends it on the wire, or at the top level
    as its API reference documents it."""
    nested = data.get("error")
    return nested if isinstance(nested, dict) else data


def _failure(response: dict[str, Any], *, stream: bool) -> ProxyError:
    error = response.get("error")
    return failed_mid_stream(error if error is not None else "the response failed", stream=stream)


class ResponsesPassthroughStream:
    def __init__(self, *, model: str) -> None:
        self.usage = Usage()
        self.content_deltas = 0
        self.complete = False
        self._model = ModelName(model)
        self._events = 0  # events passed on: the next one's sequence_number

    def error_event(self, error: ProxyError) -> bytes | None:
        # The SDK's `error` event, numbered after the last event passed on (OpenAI numbers a
        # stream's events 0, 1, 2...): what a stream that broke off ends with.
        event = {
            "type": "error",
            "code": "rate_limit_exceeded" if error.status == 429 else "server_error",
            "message": error.message,
            "param": None,
            "sequence_number": self._events,
        }
        return b"event: error\ndata: " + dumps(event) + b"\n\n"

    def feed(self, event: SSEEvent) -> bytes:
        data = event.data
        if data is None:
            return event.raw  # a comment (keep-alive)
        out = self._relay(event, data)
        if out:
            self._events += 1
        return out

    def _relay(self, event: SSEEvent, data: str) -> bytes:
        kind = event.event
        if kind is not None and kind not in _READ:
            if kind.endswith(".delta"):
                self.content_deltas += 1
            return event.raw
        if data == "[DONE]":  # not OpenAI's, but some compatible servers end with it
            return event.raw
        obj = event_object(data)
        if isinstance(obj.get("type"), str):
            kind = obj["type"]  # an event written without its `event:` line
        if kind == "error":
            # Not relayed: the provider's words may name its set-up (its address, the key's
            # label, the upstream model), so the client gets the proxy's redacted error event
            # instead, numbered after the last event passed on.
            raise failed_mid_stream(_error_of(obj))
        if kind not in _LIFECYCLE:
            if kind is not None and kind.endswith(".delta"):
                self.content_deltas += 1
            return event.raw
        response = obj.get("response")
        response = response if isinstance(response, dict) else {}
        if kind == "response.failed":
            # What it used is read, then it ends the stream as an `error` event does (the
            # proxy's redacted error, never the provider's words).
            if response.get("usage") is not None:
                read_responses_usage(response.get("usage"), self.usage)
            raise _failure(response, stream=True)
        if kind in _FINAL:
            read_responses_usage(response.get("usage"), self.usage)
            self.complete = True
        # The tenant's name for the model, never the provider's.
        swapped = self._model.swap(event.raw, response.get("model"))
        if swapped is None:
            renamed = {**obj, "response": {**response, "model": self._model.public}}
            swapped = f"event: {kind}\ndata: ".encode() + dumps(renamed) + b"\n\n"
        return self._numbered(swapped, obj)

    def _numbered(self, raw: bytes, obj: dict[str, Any]) -> bytes:
        """``raw``, its sequence_number made the next one the client expects when it is not
        (an event dropped before it); as sent otherwise."""
        if obj.get("sequence_number") == self._events:
            return raw
        kind = obj.get("type")
        renumbered = {**obj, "sequence_number": self._events}
        if isinstance(obj.get("response"), dict):
            renumbered["response"] = {**obj["response"], "model": self._model.public}
        return f"event: {kind}\ndata: ".encode() + dumps(renumbered) + b"\n\n"


class ResponsesPassthrough:
    """OpenAI Responses in, OpenAI Responses out."""

    def build(self, *, route: Route, call: ResponsesRequest, max_tokens: int) -> UpstreamRequest:
        payload = dict(call.body)
        payload["model"] = route.upstream_model
        payload["max_output_tokens"] = max_tokens
        payload["store"] = False  # stateless: see the module docs
        # Unstored, a reasoning item can come back in the next turn only as its encrypted
        # content: OpenAI refuses an input reasoning item it neither stored nor can decrypt.
        if ENCRYPTED_REASONING not in call.include:
            payload["include"] = [*call.include, ENCRYPTED_REASONING]
        return UpstreamRequest(f"{route.provider.base_url}/responses", payload, {})

    def completion(
        self, *, route: Route, call: ResponsesRequest, raw: bytes
    ) -> tuple[bytes, Usage]:
        try:
            obj = json.loads(raw)
        except ValueError:
            obj = None
        if not isinstance(obj, dict):
            raise ProxyError(502, "The provider sent a malformed response.", code="upstream_error")
        if obj.get("object") != "response" and "error" in obj:
            # An error dressed as a 200: a failure, not an answer (its message goes out only
            # as the pipeline's redacted error).
            raise failed_mid_stream(obj["error"], stream=False)
        if obj.get("status") == "failed":
            # A response the provider gave up on carries no answer: the client gets the
            # provider's failure as a 502, as a stream's response.failed does.
            raise _failure(obj, stream=False)
        usage = Usage(output_estimate=tokens_in(output_bytes(obj.get("output"))))
        read_responses_usage(obj.get("usage"), usage)
        return ModelName(route.model).apply(raw, obj, event=False), usage

    def stream(self, *, route: Route, call: ResponsesRequest) -> ResponsesPassthroughStream:
        return ResponsesPassthroughStream(model=route.model)
