"""Probes outside the API: the base URL, liveness, readiness and the Prometheus metrics.

Clients such as Claude Code probe the base URL (`HEAD /`) before every session, and
orchestrators poll `/healthz`. Both answer from the process alone, touching neither the
database nor Redis: `/healthz` says the process serves requests (liveness), not that its
dependencies are up (readiness). `/readyz` is readiness: the database answers a
``SELECT 1``, Redis a PING, and the ledger drain keeps up (its oldest waiting entry is
younger than PROXY_READYZ_LEDGER_MAX_AGE), each checked at once within PROXY_READYZ_TIMEOUT;
503 names the parts that failed, and "warm-up" while a new process is still warming up
(proxy_site/warmup.py). `/metrics` is the Prometheus exposition of every process of
this host (core/metrics.py), for a bearer token when PROXY_METRICS_TOKEN is set, else for
clients in PROXY_METRICS_NETWORKS (by the connection's address: an X-Forwarded-For header
proves nothing).

They are served by the full Django stack like the admin, so ALLOWED_HOSTS still applies;
they take GET and HEAD only, need no session, and are exempt from CSRF so that any other
method is a plain 405.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
from collections.abc import Awaitable, Callable
from functools import cache

from channels.db import database_sync_to_async
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_safe

from core import metrics
from core.redis import RedisFailure, async_client, embedded
from proxy_site import warmup
from usage.metrics import BacklogCollector, abacklog

logger = logging.getLogger(__name__)

# Not settings of their own yet (read with these defaults): each check's time limit, and
# how old the oldest entry waiting for the ledger drain may be before it counts as stuck.
_READYZ_TIMEOUT = 0.5
_LEDGER_MAX_AGE = 120.0


def _probe(request: HttpRequest, body: dict[str, str]) -> HttpResponse:
    if request.method == "HEAD":
        return HttpResponse(content_type="application/json")
    return JsonResponse(body)


@csrf_exempt
@require_safe
def root(request: HttpRequest) -> HttpResponse:
    return _probe(request, {"service": "llm-proxy", "status": "ok"})


@csrf_exempt
@require_safe
def healthz(request: HttpRequest) -> HttpResponse:
    return _probe(request, {"status": "ok"})


# --- /readyz --------------------------------------------------------------------------------


def _select_one() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


class _Check:
    """One check at a time per process: a database that hangs ties up one thread, not one
    per probe (a probe that finds the last check still running waits on that one)."""

    def __init__(self, run: Callable[[], Awaitable[None]]) -> None:
        self._run = run
        self._running: asyncio.Future[None] | None = None

    async def __call__(self) -> None:
        if self._running is None or self._running.done():
            self._running = asyncio.ensure_future(self._run())
        await asyncio.shield(self._running)


async def _adatabase() -> None:
    await database_sync_to_async(_select_one, thread_sensitive=False)()


async def _aredis() -> None:
    if not embedded():  # the embedded store lives in this process: always there
        await async_client().ping()


async def _aledger() -> None:
    backlog = await abacklog(max_age=1.0)  # a scrape's reading, if it is that fresh
    limit = getattr(settings, "PROXY_READYZ_LEDGER_MAX_AGE", _LEDGER_MAX_AGE)
    if backlog.oldest_age is not None and backlog.oldest_age > limit:
        raise RuntimeError(f"oldest entry waits {backlog.oldest_age:.0f}s")


_CHECKS = {
    "database": _Check(_adatabase),
    "redis": _Check(_aredis),
    "ledger": _Check(_aledger),
}


async def _outcome(name: str, *, seconds: float) -> str:
    try:
        async with asyncio.timeout(seconds):
            await _CHECKS[name]()
    except TimeoutError:
        return f"timed out after {seconds}s"
    except Exception as exc:  # any failure means not ready; its words are logged, not shown
        logger.warning("readiness check %s failed: %s: %s", name, type(exc).__name__, exc)
        return "failed"
    return "ok"


@csrf_exempt
@require_safe
async def readyz(request: HttpRequest) -> HttpResponse:
    timeout = float(getattr(settings, "PROXY_READYZ_TIMEOUT", _READYZ_TIMEOUT))
    names = list(_CHECKS)
    outcomes = await asyncio.gather(*(_outcome(name, seconds=timeout) for name in names))
    checks = dict(zip(names, outcomes, strict=True))
    if warmup.warming():  # not ready until its first request costs what the next ones do
        checks["warm-up"] = "warming"
    failing = [name for name, outcome in checks.items() if outcome != "ok"]
    body: dict[str, object] = {"status": "not ready" if failing else "ready", "checks": checks}
    if failing:
        body["failing"] = failing
    status = 503 if failing else 200
    if request.method == "HEAD":
        return HttpResponse(content_type="application/json", status=status)
    return JsonResponse(body, status=status)


# --- /metrics -------------------------------------------------------------------------------


@cache
def _networks() -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    try:
        return tuple(
            ipaddress.ip_network(entry, strict=False) for entry in settings.PROXY_METRICS_NETWORKS
        )
    except ValueError as exc:
        raise ImproperlyConfigured(f"PROXY_METRICS_NETWORKS: {exc}") from None


def _from_network(request: HttpRequest) -> bool:
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in _networks())


def _metrics_refusal(request: HttpRequest) -> HttpResponse | None:
    """None when the caller may read the metrics, else the answer it gets."""
    token = settings.PROXY_METRICS_TOKEN
    if token:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode(), token.encode()
        ):
            return None
        response = JsonResponse({"error": "A valid metrics bearer token is needed."}, status=401)
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    if _from_network(request):
        return None
    return JsonResponse({"error": "Metrics are not served to this address."}, status=403)


@csrf_exempt
@require_safe
async def metrics_view(request: HttpRequest) -> HttpResponse:
    refusal = _metrics_refusal(request)
    if refusal is not None:
        return refusal
    try:
        backlog = await asyncio.wait_for(abacklog(), _READYZ_TIMEOUT)
    except (TimeoutError, *RedisFailure):
        backlog = None  # the scrape goes on without it
    # Reading every process's files is disk work: off the event loop.
    body = await asyncio.to_thread(metrics.exposition, [BacklogCollector(backlog)])
    if request.method == "HEAD":
        body = b""
    return HttpResponse(body, content_type=metrics.CONTENT_TYPE)
