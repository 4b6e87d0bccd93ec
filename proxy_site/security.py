"""What keeps secrets out of error reports, and the admin's login throttle."""

from __future__ import annotations

import re
from typing import Any

from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.views.debug import SafeExceptionReporterFilter


class SecretsReporterFilter(SafeExceptionReporterFilter):
    """Django's filter, also hiding the proxy's own secret settings (JWK, JWKS, DEV_SECRETS)
    and anything named like a provider key in a frame's locals."""

    hidden_settings = re.compile(
        "API|TOKEN|KEY|SECRET|PASS|SIGNATURE|HTTP_COOKIE|JWK|AUTHORIZATION|ENCRYPTION",
        flags=re.IGNORECASE,
    )

    def get_traceback_frame_variables(self, request: Any, tb_frame: Any) -> Any:
        variables = super().get_traceback_frame_variables(request, tb_frame)
        return [
            (name, self.cleansed_substitute if self.hidden_settings.search(name) else value)
            for name, value in variables
        ]


class ThrottledAdminLoginForm(AdminAuthenticationForm):
    """Staff login with a brake: after ADMIN_LOGIN_MAX_FAILURES wrong passwords for one
    username from one address (or five times that many from one address, whatever the
    username), that login is refused for ADMIN_LOGIN_LOCKOUT seconds, right password or not."""

    def _keys(self) -> tuple[str, str]:
        address = self.request.META.get("REMOTE_ADDR", "-") if self.request else "-"
        username = (self.data.get("username") or "").strip().lower()
        return f"admin-login:{address}:{username}", f"admin-login:{address}"

    def clean(self) -> dict[str, Any]:
        user_key, address_key = self._keys()
        limit: int = settings.ADMIN_LOGIN_MAX_FAILURES
        lockout: int = settings.ADMIN_LOGIN_LOCKOUT
        if (cache.get(user_key) or 0) >= limit or (cache.get(address_key) or 0) >= 5 * limit:
            raise ValidationError(
                f"Too many failed logins. Try again in {max(1, lockout // 60)} minutes.",
                code="throttled",
            )
        try:
            cleaned: dict[str, Any] = super().clean()
        except ValidationError:
            for key in (user_key, address_key):
                cache.add(key, 0, lockout)
                cache.incr(key)
            raise
        cache.delete(user_key)
        return cleaned
