"""Warm at start: what a process's first request would otherwise pay for, done before it
reports ready.

Measured before this existed (bench/, PostgreSQL + Redis), the first request after a start
took about 170 ms more than the next ones: importing the channel layer's Redis backend (the
dashboard's live feed, on the first settlement), building the upstream client's TLS context,
opening the database and Redis connections, loading the Lua scripts, the tenant's context
and the verification keys. `awarm` does each of those once, in order, then freezes what
start-up allocated out of the garbage collector's view and says so;
`/readyz` answers 503 "warming" until then, so a load balancer that waits for ready sends
the first request to a process that is already warm.

A step that fails (the database is down, say) is logged and skipped: warming is an
optimisation, never a reason not to serve. What is still down, readiness reports.

It starts when the server's event loop does: with a server that speaks the ASGI lifespan
protocol (uvicorn, granian) at its start-up event, and under Daphne, which has none, from
the first tick of its reactor's loop (proxy_site/asgi.py).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import connection
from django.utils import timezone

from core.http import upstream_client
from core.redis import async_client, embedded
from routing.context import context_cache
from routing.generation import aconfig_generation
from routing.health import key_health
from tenants.auth import trusted_keys
from usage import counters
from usage.limits import start_ledger_drain
from usage.selectors import busiest_tenant_slugs

logger = logging.getLogger(__name__)

# The tenants loaded ahead: the busiest of the past week, as many as this.
WARM_TENANTS = 200

_started: asyncio.Task[None] | None = None
_done = False


def warming() -> bool:
    """True from the start of warming until it is over (never, when nothing started it:
    a test's in-process app, a management command)."""
    return _started is not None and not _done


def _open_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


async def _adatabase() -> None:
    # The threads the API's database calls run on (thread_sensitive=False: a pool) each open
    # their own connection; this opens one, and with it the driver's lazy imports.
    await database_sync_to_async(_open_database, thread_sensitive=False)()


async def _aredis() -> None:
    client = async_client()
    if not embedded():
        await client.ping()
    # EVALSHA of a script the server has not seen costs a NOSCRIPT round trip and a load.
    for handle in vars(counters.async_scripts(client)).values():
        await client.script_load(handle.script)
    await key_health.arefresh()
    await aconfig_generation()


def _open_sync_redis() -> None:
    if not embedded():
        counters.sync_client().ping()


async def _aledger() -> None:
    # The ledger drain's own client (sync, on a thread): the first drain, a second after the
    # first request, would otherwise import and connect it while requests are served. Then
    # the drainer itself: entries a stopped process left would otherwise wait for this one's
    # first request, and /readyz (whose ledger check they fail) would keep traffic away.
    await database_sync_to_async(_open_sync_redis, thread_sensitive=False)()
    start_ledger_drain()


async def _atenants() -> None:
    trusted_keys()  # the verification keys, parsed once
    since = timezone.now() - timedelta(days=7)
    slugs = await database_sync_to_async(busiest_tenant_slugs, thread_sensitive=False)(
        since=since, limit=WARM_TENANTS
    )
    for slug in slugs:
        await context_cache.aget(slug)  # the tenant's routes, keys opened, limits


async def _aupstream() -> None:
    upstream_client()  # its TLS context (certificates read and parsed) and its pool


async def _achannel_layer() -> None:
    from channels.layers import get_channel_layer

    get_channel_layer()  # imports the layer's backend (channels_redis) and builds it


STEPS: tuple[tuple[str, Callable[[], Awaitable[None]]], ...] = (
    ("database", _adatabase),
    ("redis", _aredis),
    ("ledger drain", _aledger),
    ("tenants", _atenants),
    ("upstream", _aupstream),
    ("channel layer", _achannel_layer),
)


async def awarm() -> None:
    """Every step once, each within PROXY_WARMUP_TIMEOUT; then `warming()` is False."""
    global _done
    started = time.monotonic()
    took: list[str] = []
    try:
        for name, step in STEPS:
            began = time.monotonic()
            try:
                async with asyncio.timeout(settings.PROXY_WARMUP_TIMEOUT):
                    await step()
            except Exception as exc:  # any failure: serve anyway, readiness tells what is down
                logger.warning("warm-up: %s failed: %s: %s", name, type(exc).__name__, exc)
            took.append(f"{name} {1000 * (time.monotonic() - began):.0f} ms")
        _settle_the_heap()
    finally:
        _done = True  # whatever happened, never "warming" for ever
    logger.info("warmed up in %.0f ms (%s)", 1000 * (time.monotonic() - started), ", ".join(took))


# The collector's first generation is collected after this many more allocations than
# frees (CPython's default is 700). A request allocates thousands of short-lived objects that
# reference counting frees anyway; at 700 the collector ran several times per request.
GC_THRESHOLD = (20_000, 20, 50)


def _settle_the_heap() -> None:
    """Everything start-up made (modules, settings, the warmed contexts) leaves the
    collector's view for good: a full collection then walks only what requests made, not
    the whole process (those were 60-70 ms pauses every few seconds under load)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)


def start() -> asyncio.Task[None]:
    """Start warming on the running loop, once per process."""
    global _started
    if _started is None:
        _started = asyncio.get_running_loop().create_task(awarm(), name="warm-up")
    return _started
