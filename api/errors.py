# DRF ships no type hints: its base classes are Any to mypy.
# mypy: disallow-subclassing-any=False
"""One error shape for every answer of the API that is not a success:

``{"error": {"code": "<stable code>", "message": "<for people>", "detail": {...}}}``

``code`` is what a platform's code branches on; ``message`` may change wording; ``detail``
(validation errors only) maps each field to its messages.
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.views import set_rollback

logger = logging.getLogger(__name__)


class ApiError(exceptions.APIException):
    """An error with its status and stable code, raised by views and services' callers."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(detail=message, code=code)
        self.status_code = status
        self.code = code
        self.message = message


# DRF's own exceptions, by class: the code the API gives them.
_CODES: tuple[tuple[type[exceptions.APIException], str], ...] = (
    (exceptions.ValidationError, "invalid_request"),
    (exceptions.ParseError, "malformed_request"),
    (exceptions.NotAuthenticated, "unauthenticated"),
    (exceptions.AuthenticationFailed, "unauthenticated"),
    (exceptions.NotFound, "not_found"),
    (exceptions.MethodNotAllowed, "method_not_allowed"),
    (exceptions.NotAcceptable, "not_acceptable"),
    (exceptions.UnsupportedMediaType, "unsupported_media_type"),
    (exceptions.Throttled, "rate_limited"),
)


def error_payload(code: str, message: str, detail: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if detail is not None:
        error["detail"] = detail
    return {"error": error}


def _message(detail: Any) -> str:
    if isinstance(detail, list) and detail:
        return _message(detail[0])
    if isinstance(detail, dict):
        return "The request is not valid: see detail."
    return str(detail)


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, Http404):
        exc = exceptions.NotFound("Not found.")
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    elif isinstance(exc, DjangoValidationError):
        # A model's own validation (full_clean in the services), field by field.
        exc = exceptions.ValidationError(
            exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages}
        )
    if not isinstance(exc, exceptions.APIException):
        # Not ours to describe: logged with its traceback, answered in the same shape.
        logger.exception("provisioning API: unexpected error")
        set_rollback()
        return Response(
            error_payload("internal_error", "The server failed to answer this request."),
            status=500,
        )
    headers: dict[str, str] = {}
    if auth := getattr(exc, "auth_header", None):
        headers["WWW-Authenticate"] = auth
    if wait := getattr(exc, "wait", None):
        headers["Retry-After"] = str(int(wait))
    detail: Any = None
    if isinstance(exc, ApiError):
        code, message = exc.code, exc.message
    elif isinstance(exc, exceptions.PermissionDenied):
        codes = exc.get_codes()
        code = codes if isinstance(codes, str) and codes != "permission_denied" else "forbidden"
        message = _message(exc.detail)
    else:
        code = next((c for cls, c in _CODES if isinstance(exc, cls)), "error")
        message = _message(exc.detail)
        if isinstance(exc, exceptions.ValidationError):
            detail = (
                exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
            )
    set_rollback()
    return Response(error_payload(code, message, detail), status=exc.status_code, headers=headers)
