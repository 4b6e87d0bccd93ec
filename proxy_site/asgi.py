"""ASGI entry point, served by Daphne.

Two Django handlers share one process: the proxy API under /v1/ runs with only the
async-native middleware in PROXY_MIDDLEWARE, so a request never waits on the shared sync
thread that Django's session, CSRF and auth middleware would need; everything else (the
admin) gets the full MIDDLEWARE stack. Below them, in Daphne's HTTP protocol, the framing
guard (proxy_site/framing.py) refuses an oversized body on its declared length, a chunked one
the moment it crosses the cap, and repeated or contradictory framing headers, before anything
reads the body; the ASGI body-size guard stays as its fallback. In front of both handlers
sits the slow-client guard, which bounds what a streamed answer may hold for a client that
reads slowly (proxy_site/backpressure.py). Both guards are checked against the installed
Daphne and Twisted once, at import. WebSockets (the staff console's live dashboard) go to
Channels' router, behind the admin session. A new process warms up (proxy_site/warmup.py)
before it reports ready: at the lifespan start-up event, or under Daphne, which sends none,
from its reactor's first tick.
"""

from __future__ import annotations

import os
import sys

from django.conf import settings
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proxy_site.settings")
django_application = get_asgi_application()

from core.logs import route_server_logs  # noqa: E402

# Once, before Daphne builds its server: its access log and Twisted's log through logging,
# so that with LOG_FORMAT=json every line the process writes is one JSON object.
route_server_logs()

from proxy_site.backpressure import (  # noqa: E402
    SlowClientGuard,
    check_support,
    complete_reason_phrases,
)
from proxy_site.framing import install as install_framing_guard  # noqa: E402
from proxy_site.handlers import BodySizeLimit, ProxyAPIHandler, route_by_path  # noqa: E402

# Once, at start-up: a loud warning when the installed Daphne/Twisted do not have what the
# slow-client guard reads (it then cuts no one off).
check_support()
# Once, before Daphne builds its server: refuse oversized bodies and bad framing in the HTTP
# protocol, before any body is read (proxy_site/framing.py); a loud warning when the
# installed Daphne/Twisted do not have what that relies on (then nothing is installed).
install_framing_guard()
# Before anything is served: "429 Too Many Requests", not Twisted's "429 Unknown Status".
complete_reason_phrases()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from console.routing import websocket_urlpatterns  # noqa: E402
from proxy_site import warmup  # noqa: E402
from proxy_site.handlers import lifespan  # noqa: E402

if settings.PROXY_WARMUP and "daphne.server" in sys.modules:
    # Daphne speaks no ASGI lifespan: warm from the first tick of its reactor instead (with
    # uvicorn or granian, the lifespan start-up event does it before they listen).
    from twisted.internet import reactor

    # callWhenRunning fires before the loop runs; callLater(0) runs on its first tick.
    reactor.callWhenRunning(reactor.callLater, 0, warmup.start)

http = BodySizeLimit(
    SlowClientGuard(route_by_path(api=ProxyAPIHandler(), default=django_application))
)
application = ProtocolTypeRouter(
    {
        "http": http,
        "lifespan": lifespan(on_startup=warmup.start if settings.PROXY_WARMUP else None),
        # The staff console's live updates: the admin's session authenticates them, and only
        # pages of this site (ALLOWED_HOSTS) may open one.
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
        ),
    }
)
