"""The one place that builds the upstream HTTP client.

One pooled ``httpx.AsyncClient`` per event loop (Daphne runs one), shared by every request:
connections to a provider are kept alive and reused instead of paying a TCP and TLS
handshake per request. Timeouts are set per request, from the provider's settings
(routing/upstream.py).
"""

from __future__ import annotations

import asyncio
import weakref

import httpx
from django.conf import settings

from core.decoding import ACCEPT_ENCODING

_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = (
    weakref.WeakKeyDictionary()
)


def upstream_client() -> httpx.AsyncClient:
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None or client.is_closed:
        client = httpx.AsyncClient(
            limits=httpx.Limits(
                max_connections=settings.PROXY_UPSTREAM_MAX_CONNECTIONS,
                max_keepalive_connections=settings.PROXY_UPSTREAM_MAX_CONNECTIONS,
                keepalive_expiry=30.0,
            ),
            # Redirects from a provider API are never expected; following one could send
            # the pooled key to another host.
            follow_redirects=False,
            # Proxies from the environment are an operator's choice, not a default.
            trust_env=False,
            # Only the encodings core/decoding.py inflates within bounds (why: see there).
            headers={"user-agent": "llm-proxy", "accept-encoding": ACCEPT_ENCODING},
        )
        _clients[loop] = client
    return client
