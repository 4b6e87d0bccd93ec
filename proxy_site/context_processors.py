from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest


def environment(request: HttpRequest) -> dict[str, bool]:
    return {"proxy_production": settings.PRODUCTION}
