from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol

from routing.context import Route
from routing.errors import ProxyError
from routing.schema import ChatRequest
from routing.sse import SSEEvent


@dataclass(slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    # True once the provider itself reported the counts; False while they are the proxy's
    # own (a stream cut before the provider's usage arrived).
    reported: bool = False


class StreamTranslator(Protocol):
    usage: Usage
    content_deltas: int  # content pieces seen: the output count when usage never came
    complete: bool  # the provider ended the stream properly

    def feed(self, event: SSEEvent) -> bytes:
        """Bytes to send the client for one upstream event (b"" to send nothing)."""
        ...


class Adapter(Protocol):
    def build(
        self, *, route: Route, chat: ChatRequest, max_tokens: int
    ) -> tuple[str, dict[str, Any], dict[str, str]]:
        """(url, JSON payload, extra headers) for the provider.

        ``max_tokens`` is the completion allowance when the client named none.
        """
        ...

    def completion(self, *, route: Route, raw: bytes) -> tuple[bytes, Usage]:
        """The client's chat.completion body and the usage, from a provider's 2xx body."""
        ...

    def stream(self, *, route: Route, chat: ChatRequest) -> StreamTranslator: ...


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
