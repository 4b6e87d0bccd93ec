"""ASGI entry point, served by Daphne.

Two Django handlers share one process: the proxy API under /v1/ runs with only the
async-native middleware in PROXY_MIDDLEWARE, so a request never waits on the shared sync
thread that Django's session, CSRF and auth middleware would need; everything else (the
admin) gets the full MIDDLEWARE stack. In front of both sit the body-size guard, which
refuses an oversized upload before it is read into memory, and the slow-client guard, which
bounds what a streamed answer may hold for a client that reads slowly.
"""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proxy_site.settings")
django_application = get_asgi_application()

from proxy_site.handlers import (  # noqa: E402
    BodySizeLimit,
    ProxyAPIHandler,
    SlowClientGuard,
    route_by_path,
)

application = BodySizeLimit(
    SlowClientGuard(route_by_path(api=ProxyAPIHandler(), default=django_application))
)
