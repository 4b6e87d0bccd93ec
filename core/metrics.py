"""Prometheus metrics: every metric the proxy exports, and the small helpers that record them.

prometheus_client runs in its multiprocess mode: each process writes its samples to memory-
mapped files in PROMETHEUS_MULTIPROC_DIR (settings set it before anything imports the
library, and this module makes sure the directory exists), and ``/metrics``, served by any
one of a host's processes, reads them all (:func:`exposition`). So every Daphne process of a
host reports one set:

- counters and histograms of a process that died stay in the sum (a counter never goes
  back), until the directory is emptied: do that when the host's proxy starts as a whole
  (a fresh directory per deployment), never while processes of it are running;
- the two gauges (requests in flight, open streams) count only live processes
  ("livesum"): a process removes its gauge files at exit (:func:`mark_process_dead`, at
  exit), and a scrape removes those of processes that no longer exist (a kill -9).

Names follow the OpenTelemetry GenAI semantic conventions where one exists
(``gen_ai_client_token_usage``, ``gen_ai_server_time_to_first_token``, and their
``gen_ai_*`` attribute names as labels), ``llm_proxy_*`` otherwise. Label values come from
the configuration only (tier, model and provider slugs, a pooled key's label, wire formats,
statuses, reasons): never a token, a key, a prompt, or a name a client made up. The tenant's
slug is a label of the request, token, cost and refusal counters only when
PROXY_METRICS_TENANT_LABEL is on (one series per tenant).

The pipeline tells the recorders who a request is for through :data:`scope` (a context
variable, like core.logs.request_id): usage records its refusals and bills without knowing
of tiers' slugs or routing.
"""

from __future__ import annotations

import atexit
import contextvars
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings

logger = logging.getLogger(__name__)

# Before prometheus_client makes its first file (a metric without labels makes one at once).
MULTIPROC_DIR = Path(settings.PROMETHEUS_MULTIPROC_DIR)
MULTIPROC_DIR.mkdir(parents=True, exist_ok=True)

from prometheus_client import (  # noqa: E402
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.registry import Collector  # noqa: E402

MULTIPROCESS = values.ValueClass is not values.MutexValue
if not MULTIPROCESS:  # pragma: no cover - prometheus_client was imported before settings
    logger.warning(
        "prometheus_client is not in multiprocess mode: /metrics reports this process only"
    )

TENANT_LABEL = bool(settings.PROXY_METRICS_TENANT_LABEL)
_TENANT: tuple[str, ...] = ("tenant",) if TENANT_LABEL else ()

# The OpenTelemetry operation of each wire format (a custom one where the conventions have
# none: counting tokens is no inference).
OPERATIONS = {
    "openai-chat": "chat",
    "anthropic-messages": "chat",
    "openai-responses": "chat",
    "anthropic-count-tokens": "count_tokens",
}

# Seconds. The TTFT buckets are the conventions' advice; latency reaches minutes (streams).
_TTFT_BUCKETS: tuple[float, ...] = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25)
_TTFT_BUCKETS += (0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
_LATENCY_BUCKETS: tuple[float, ...] = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_LATENCY_BUCKETS += (30.0, 60.0, 120.0, 300.0, 600.0)
_OVERHEAD_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
_TOKEN_BUCKETS = tuple(float(4**n) for n in range(14))  # 1 .. 67M, the conventions' advice

_REQUEST = ("tier", "model", "provider", "wire_format")

REQUESTS = Counter(
    "llm_proxy_requests",
    "Requests answered, by how they ended: status is the ledger's (ok, upstream_error, "
    "upstream_timeout, client_disconnected) for admitted requests, refused or error for those "
    "answered before admission; code is the HTTP status the client got.",
    (*_REQUEST, "status", "code", *_TENANT),
)
DURATION = Histogram(
    "llm_proxy_request_duration_seconds",
    "Admitted requests, from reaching the proxy to their settlement (a stream's last event).",
    _REQUEST,
    buckets=_LATENCY_BUCKETS,
)
OVERHEAD = Histogram(
    "llm_proxy_overhead_seconds",
    "Admitted requests: their duration less the time spent waiting on the provider (opening "
    "every attempt, reading its answer or its stream) and on the client (taking a stream's "
    "events).",
    _REQUEST,
    buckets=_OVERHEAD_BUCKETS,
)
TIME_TO_FIRST_TOKEN = Histogram(
    "gen_ai_server_time_to_first_token",
    "Seconds from reaching the proxy to the first content sent to the client (a whole "
    "answer's body), for successful requests.",
    ("gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model", "tier", "model"),
    buckets=_TTFT_BUCKETS,
)
TOKENS = Histogram(
    "gen_ai_client_token_usage",
    "Tokens billed per request, by kind: input counts every prompt token (cache_read and "
    "cache_write are parts of it), reasoning is part of output; input and output are observed "
    "for every settled request, the other kinds when not zero.",
    (
        "gen_ai_operation_name",
        "gen_ai_provider_name",
        "gen_ai_request_model",
        "gen_ai_token_type",
        "tier",
        "model",
        *_TENANT,
    ),
    buckets=_TOKEN_BUCKETS,
)
COST = Counter(
    "llm_proxy_cost_usd",
    "US dollars billed (the ledger's cost).",
    ("tier", "model", "provider", *_TENANT),
)
REFUSALS = Counter(
    "llm_proxy_refusals",
    "Requests refused at admission, by reason: weekly_token_cap, weekly_cost_cap, "
    "requests_per_minute, concurrency, limits_unavailable.",
    ("tier", "reason", *_TENANT),
)
UPSTREAM_ATTEMPTS = Counter(
    "llm_proxy_upstream_attempts",
    "Requests sent to a provider (failover makes several per request), by pooled key label.",
    ("provider", "key"),
)
UPSTREAM_ERRORS = Counter(
    "llm_proxy_upstream_errors",
    "Attempts that failed before an answer opened, by the proxy's error code.",
    ("provider", "key", "error"),
)
KEY_RESTS = Counter(
    "llm_proxy_key_rests",
    "Times a pooled key was rested (a 429 or 403 from its provider).",
    ("provider", "key"),
)
KEY_SWITCH_OFFS = Counter(
    "llm_proxy_key_switch_offs",
    "Times a pooled key was switched off (a 401 from its provider).",
    ("provider", "key"),
)
IN_FLIGHT = Gauge(
    "llm_proxy_requests_in_flight",
    "Admitted requests not settled yet, in live processes.",
    multiprocess_mode="livesum",
)
OPEN_STREAMS = Gauge(
    "llm_proxy_streams_open",
    "Streamed answers open to a client, in live processes.",
    multiprocess_mode="livesum",
)


@dataclass(slots=True)
class RequestScope:
    """What the metrics know of the request this task serves, filled in as it goes.

    ``model`` is a name from the configuration (a route's, an exact alias, or the route a
    pattern led to), never the client's text as such.
    """

    request_id: str
    wire_format: str
    started: float = field(default_factory=time.monotonic)
    tier: str = ""
    tenant: str = ""
    model: str = ""
    admitted: bool = False


scope: contextvars.ContextVar[RequestScope | None] = contextvars.ContextVar(
    "metrics_scope", default=None
)


def current(request_id: str | None = None) -> RequestScope | None:
    """This task's request scope (the one of ``request_id`` when given), or None."""
    found = scope.get()
    if found is None or (request_id is not None and found.request_id != request_id):
        return None
    return found


def _tenant(found: RequestScope | None) -> tuple[str, ...]:
    return ((found.tenant if found else ""),) if TENANT_LABEL else ()


def count_request(
    *, tier: str, model: str, provider: str, wire_format: str, status: str, code: int, tenant: str
) -> None:
    extra = (tenant,) if TENANT_LABEL else ()
    REQUESTS.labels(tier, model, provider, wire_format, status, str(code), *extra).inc()


def count_unadmitted(found: RequestScope, *, code: int) -> None:
    """A request answered before admission: refused (or a bug), or answered by the proxy
    alone (an estimate of tokens)."""
    status = "ok" if code < 400 else "error" if code == 500 else "refused"
    count_request(
        tier=found.tier,
        model=found.model,
        provider="",
        wire_format=found.wire_format,
        status=status,
        code=code,
        tenant=found.tenant,
    )


def refused(reason: str) -> None:
    """A refusal at admission, for the tenant of this task's request."""
    found = current()
    REFUSALS.labels(found.tier if found else "", reason, *_tenant(found)).inc()


def upstream_attempt(*, provider: str, key: str) -> None:
    UPSTREAM_ATTEMPTS.labels(provider, key).inc()


def upstream_error(*, provider: str, key: str, error: str) -> None:
    UPSTREAM_ERRORS.labels(provider, key, error or "unknown").inc()


def key_rested(*, provider: str, key: str) -> None:
    KEY_RESTS.labels(provider, key).inc()


def key_switched_off(*, provider: str, key: str) -> None:
    KEY_SWITCH_OFFS.labels(provider, key).inc()


def observe_timings(
    found: RequestScope,
    *,
    provider: str,
    operation: str,
    upstream_model: str,
    waited: float,
    first_byte_at: float | None,
    ok: bool,
) -> None:
    """An admitted request's duration, overhead and (successful ones) time to first token,
    all from the moment it reached the proxy (``found.started``); ``waited`` is the time
    spent waiting on the provider and the client."""
    elapsed = time.monotonic() - found.started
    labels = (found.tier, found.model, provider, found.wire_format)
    DURATION.labels(*labels).observe(elapsed)
    OVERHEAD.labels(*labels).observe(max(0.0, elapsed - waited))
    if ok and first_byte_at is not None:
        TIME_TO_FIRST_TOKEN.labels(
            operation, provider, upstream_model, found.tier, found.model
        ).observe(max(0.0, first_byte_at - found.started))


# --- exposition ----------------------------------------------------------------------------


def _sweep_dead_processes() -> None:
    """Drop the live-gauge files of processes that are gone without saying so (kill -9)."""
    for path in MULTIPROC_DIR.glob("gauge_live*_*.db"):
        try:
            pid = int(path.stem.rsplit("_", 1)[1])
        except ValueError:
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            multiprocess.mark_process_dead(pid, str(MULTIPROC_DIR))  # type: ignore[no-untyped-call]
        except PermissionError:
            pass  # alive, another user's


def exposition(extra: Iterable[Collector] = ()) -> bytes:
    """Every process's samples (this host's), and ``extra`` collectors, as Prometheus text.

    Reads files: call it off the event loop.
    """
    registry = CollectorRegistry()
    for collector in extra:
        registry.register(collector)
    if not MULTIPROCESS:  # pragma: no cover
        from prometheus_client import REGISTRY

        return generate_latest(REGISTRY) + generate_latest(registry)
    _sweep_dead_processes()
    multiprocess.MultiProcessCollector(registry, path=str(MULTIPROC_DIR))  # type: ignore[no-untyped-call]
    return generate_latest(registry)


CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _at_exit(pid: int) -> None:
    try:
        multiprocess.mark_process_dead(pid, str(MULTIPROC_DIR))  # type: ignore[no-untyped-call]
    except OSError:
        pass


if MULTIPROCESS:
    # A process that exits (Daphne stopped by SIGTERM) takes its live gauges with it.
    atexit.register(_at_exit, os.getpid())
