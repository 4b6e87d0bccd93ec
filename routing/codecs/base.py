"""The codec interface: how a client's wire format and a provider's meet.

A request's journey (routing/pipeline.py) knows nothing of wire formats. It holds a
:class:`ClientCodec` for the format the client speaks (OpenAI chat completions or Anthropic
Messages), which parses the request into a
call and renders errors in the client's shape, and, per route, the :class:`ProviderCodec`
the client codec names for that provider's kind: plain pass-through when both sides speak
the same format, a translation otherwise. Adding a format adds codecs, not pipeline code.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import orjson
from django.http import HttpResponse

from core.errors import ProxyError
from routing.context import Route, Upstream
from routing.sse import SSEEvent


@dataclass(slots=True)
class Usage:
    """Token counts of one answer, by kind, as the provider reported them."""

    input_tokens: int = 0  # every prompt token, cached ones included (what is billed)
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    # True once the provider itself reported the counts; False while they are the proxy's
    # own (a stream cut before the provider's usage arrived).
    reported: bool = False
    # The provider reported figures no answer can have (negative, not integers, absurdly
    # large, missing from a whole answer): the proxy's estimate is billed instead.
    invalid: bool = False
    # The proxy's own estimate of a non-streamed answer's output (from its text), billed
    # when the provider's figures are invalid; streams count their content deltas instead.
    output_estimate: int = 0


# No single call comes near this many tokens of any kind (the largest context windows are
# about ten million): a count past it is a provider's bug or lie, never a bill.
MAX_REPORTED_TOKENS = 100_000_000


def token_counts(
    usage: Any, *, required: tuple[str, ...] = (), optional: tuple[str, ...] = ()
) -> dict[str, int] | None:
    """The named counts of a provider's usage object, or None when any is impossible.

    A count is a JSON integer from 0 to MAX_REPORTED_TOKENS: a float (even 12.0), a
    string, a bool, a negative or a huge number make the whole report untrustworthy, as
    does a required count that is missing. An optional count may be absent or null (0);
    a ``usage`` that is no object (absent, null) has every count absent.
    """
    if not isinstance(usage, Mapping):
        usage = {}
    counts: dict[str, int] = {}
    for name in (*required, *optional):
        value = usage.get(name)
        if value is None and name in optional:
            counts[name] = 0
        elif type(value) is int and 0 <= value <= MAX_REPORTED_TOKENS:
            counts[name] = value
        else:
            return None
    return counts


@dataclass(frozen=True, slots=True)
class UpstreamRequest:
    url: str
    payload: dict[str, Any]
    headers: dict[str, str]


class Call(Protocol):
    """What the journey needs of a parsed client request, whatever its wire format."""

    @property
    def model(self) -> str: ...
    @property
    def stream(self) -> bool: ...
    @property
    def max_tokens(self) -> int | None: ...  # the client's completion limit, if it set one
    @property
    def completions(self) -> int: ...  # answers asked for (each up to max_tokens)


CallT = TypeVar("CallT", bound=Call)
CallT_contra = TypeVar("CallT_contra", bound=Call, contravariant=True)


class StreamTranslator(Protocol):
    @property
    def usage(self) -> Usage: ...
    @property
    def content_deltas(self) -> int: ...  # content pieces seen: billed when usage never came
    @property
    def complete(self) -> bool: ...  # the provider ended the stream properly

    def feed(self, event: SSEEvent) -> bytes:
        """Bytes to send the client for one upstream event (b"" to send nothing)."""
        ...

    def error_event(self, error: ProxyError) -> bytes | None:
        """The event that ends this stream after ``error``, when it must follow the events
        already sent (Responses numbers them); None: the client codec's ``stream_error``."""
        ...


class ProviderCodec(Protocol[CallT_contra]):
    """One client format towards one provider kind."""

    def build(self, *, route: Route, call: CallT_contra, max_tokens: int) -> UpstreamRequest:
        """The provider's request. ``max_tokens`` is the allowance the reservation holds."""
        ...

    def completion(self, *, route: Route, call: CallT_contra, raw: bytes) -> tuple[bytes, Usage]:
        """The client's answer body and the usage, from a provider's 2xx body."""
        ...

    def stream(self, *, route: Route, call: CallT_contra) -> StreamTranslator: ...


class ClientCodec(Protocol[CallT]):
    """One wire format a client speaks to the proxy."""

    name: str  # e.g. "openai-chat": the ledger's wire format, for logs and metrics

    def parse(self, raw: bytes, headers: Mapping[str, str]) -> CallT:
        """The call in ``raw``, or ProxyError(400) saying what is wrong, in this format."""
        ...

    def provider_codec(self, provider: Upstream) -> ProviderCodec[CallT]:
        """How this format reaches ``provider``: pass-through when it speaks the format."""
        ...

    def error_response(self, error: ProxyError) -> HttpResponse: ...

    def stream_error(self, error: ProxyError) -> bytes:
        """The event that ends a stream that failed after it started."""
        ...


def upstream_error(*, status: int, message: str | None, retry_after: str | None) -> ProxyError:
    """What the client sees for a provider's non-2xx answer.

    Errors about the request itself are passed on with their status; the provider refusing
    the proxy's own key or model, or failing, is the proxy's problem and becomes a 502, so a
    client never reads that "its" key is invalid. 429 and 5xx are transient: another key or
    route may serve the request.
    """
    detail = f": {message}" if message else ""
    if status in (400, 413, 422):
        return ProxyError(
            status, f"The provider rejected the request{detail}", code="upstream_invalid_request"
        )
    if status in (401, 403):
        return ProxyError(
            502,
            "The provider refused the proxy's credentials.",
            code="upstream_auth_failed",
            transient=True,
        )
    if status == 429:
        # Always a Retry-After: the provider's when it gives a usable one, else a second.
        usable = retry_after if retry_after and retry_after.isdigit() else "1"
        headers = {"Retry-After": usable}
        return ProxyError(
            429,
            "The provider is rate limiting; retry shortly.",
            code="upstream_rate_limited",
            type="rate_limit_exceeded",
            headers=headers,
            transient=True,
        )
    if status == 404:
        return ProxyError(
            502, f"The provider does not know the routed model{detail}", code="upstream_not_found"
        )
    return ProxyError(
        502, f"The provider failed (HTTP {status}).", code="upstream_error", transient=True
    )


def failed_mid_stream(error: Any, *, stream: bool = True) -> ProxyError:
    """The failure for a provider's own error event inside a stream (OpenAI's
    ``data: {"error": ...}``, Anthropic's ``event: error``), or (``stream`` False) an error
    body sent with a 200: the stream ends with the one error event the pipeline sends for
    it, or the client gets a 502, its message cleaned of the proxy's set-up."""
    message = error.get("message") if isinstance(error, dict) else error
    # Whole: redaction (routing/redaction.py) must see the message before it is shortened,
    # or a key cut in two would slip past it.
    detail = f": {message}" if isinstance(message, str) and message else "."
    where = " mid-stream" if stream else ""
    return ProxyError(502, f"The provider failed{where}{detail}", code="upstream_error")


_LONG_DIGITS = re.compile(r"[0-9]{19}")
_LONG_DIGITS_B = re.compile(rb"[0-9]{19}")


def loads(data: str | bytes) -> Any:
    """``json.loads``, or None where it fails; through orjson first, several times faster on
    the events of every stream. orjson refuses what the standard parser takes beyond strict
    JSON (NaN, lone surrogates, UTF-16 bytes): those go to the standard parser. It reads an
    integer past 64 bits as a float, where the standard parser keeps it exact: text with a
    run of 19 digits or more (the longest 64-bit integer has 19) goes there too. So what is
    accepted, and as what, is exactly ``json.loads``'s."""
    digits = _LONG_DIGITS.search(data) if isinstance(data, str) else _LONG_DIGITS_B.search(data)
    if digits is None:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass
    try:
        return json.loads(data)
    except ValueError:
        return None


def event_object(data: str) -> dict[str, Any]:
    """A provider's stream event data as the JSON object it must be, or a 502: anything else
    (an HTML error page from a gateway in front of the provider, say) means the stream can
    be trusted neither to be whole nor to be billed as answered."""
    obj = loads(data)
    if not isinstance(obj, dict):
        raise ProxyError(
            502, "The provider's stream carried an event that is not JSON.", code="upstream_error"
        )
    return obj


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def sse_data(obj: Any) -> bytes:
    return b"data: " + dumps(obj) + b"\n\n"


SSE_DONE = b"data: [DONE]\n\n"


def error_message_of(raw: bytes) -> str | None:
    """The human message in a provider's error body: OpenAI's and Anthropic's shapes both
    carry it at error.message (some OpenAI-compatible servers send error as a string)."""
    try:
        obj = json.loads(raw)
    except ValueError:
        return None
    error = obj.get("error") if isinstance(obj, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return str(error["message"])
    return error if isinstance(error, str) else None
