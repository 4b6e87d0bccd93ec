"""Errors the proxy returns, rendered in the client's API format (OpenAI or Anthropic)."""

from __future__ import annotations

from typing import Any

from django.http import JsonResponse

# OpenAI's `type` for each status, as its API sends them.
_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_error",
    404: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_exceeded",
    502: "upstream_error",
    503: "service_unavailable",
    504: "timeout",
}
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


class ProxyError(Exception):
    """A request the proxy refuses or cannot complete, with what the client should see.

    ``transient`` marks failures worth retrying elsewhere (a timeout, a 5xx, a 429 on one
    key); permanent ones (bad input, a refused key) are not.
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        type: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
        transient: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.type = type
        self.param = param
        self.headers = headers or {}
        self.transient = transient

    def __repr__(self) -> str:
        return f"ProxyError({self.status}, {self.message!r}, code={self.code!r})"


def error_body(error: ProxyError, *, anthropic: bool = False) -> dict[str, Any]:
    if anthropic:
        kind = _ANTHROPIC_TYPES.get(error.status, "api_error")
        return {"type": "error", "error": {"type": kind, "message": error.message}}
    kind = error.type or _OPENAI_TYPES.get(
        error.status, "server_error" if error.status >= 500 else "invalid_request_error"
    )
    return {
        "error": {
            "message": error.message,
            "type": kind,
            "param": error.param,
            "code": error.code,
        }
    }


def error_response(error: ProxyError, *, anthropic: bool = False) -> JsonResponse:
    response = JsonResponse(error_body(error, anthropic=anthropic), status=error.status)
    for name, value in error.headers.items():
        response[name] = value
    return response
