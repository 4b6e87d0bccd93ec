# DRF and drf-spectacular ship no type hints: their base classes are Any to mypy.
# mypy: disallow-subclassing-any=False
"""Scopes: reading takes ``read`` (or ``write``, which implies it), writing takes ``write``."""

from __future__ import annotations

from typing import Any

from rest_framework.exceptions import PermissionDenied
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request

from api.authentication import Principal


class InsufficientScope(PermissionDenied):
    default_detail = "This credential may only read: writing takes the write scope."
    default_code = "insufficient_scope"


class PlatformScope(BasePermission):
    def has_permission(self, request: Request, view: Any) -> bool:
        principal = request.user
        if not isinstance(principal, Principal):
            return False  # no credential: DRF answers 401 (the authenticator has a header)
        if request.method in SAFE_METHODS:
            return principal.can_read()
        # A method the view does not serve gets its 405, whatever the credential's scope.
        allowed = getattr(view, "allowed_methods", None)
        if allowed is not None and request.method not in allowed:
            return True
        if not principal.can_write():
            raise InsufficientScope()
        return True
