"""Usage's metrics: what each settled bill adds, and the ledger's backlog in Redis.

:func:`on_bill_settled` (a ``bill_settled`` receiver) counts the request by how it ended and,
when its bill counted, observes its tokens by kind and adds its cost. The labels a bill does
not carry (the tier's slug, the configured model name, the tenant's slug) come from the
pipeline's :data:`core.metrics.scope`; a bill settled outside a request (a test, a command)
is counted with those left empty.

:func:`abacklog` says how many settled entries wait in the tenants' ledger streams for the
drain, and how old the oldest is: read at scrape time and by ``/readyz``, cached a few
seconds, and bounded (at most :data:`MAX_STREAMS` streams are looked at).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from core import metrics
from usage import counters
from usage.bill import NANOS, Bill

# Streams looked at by one reading of the backlog: a tenant's stream exists only while it
# holds entries, so this many at once means the drain is far behind anyway.
MAX_STREAMS = 10_000
BACKLOG_CACHE_SECONDS = 5.0


async def on_bill_settled(sender: Any, *, bill: Bill, settled: bool, **kwargs: Any) -> None:
    """Quick and local (memory-mapped counters, no I/O); never raises for a bad value."""
    found = metrics.current(bill.request_id)
    tier = found.tier if found else ""
    model = found.model if found else ""
    tenant = found.tenant if found else ""
    metrics.count_request(
        tier=tier,
        model=model,
        provider=bill.provider_slug,
        wire_format=bill.wire_format,
        status=bill.status,
        code=bill.http_status,
        tenant=tenant,
    )
    if not settled:
        return  # came too late: the request was billed as lost already, not by this bill
    operation = metrics.OPERATIONS.get(bill.wire_format, "chat")
    extra = (tenant,) if metrics.TENANT_LABEL else ()
    tokens = bill.tokens
    kinds = {
        "input": tokens.input,
        "output": tokens.output,
        "cache_read": tokens.cache_read,
        "cache_write": tokens.cache_write,
        "reasoning": tokens.reasoning,
    }
    for kind, count in kinds.items():
        if count or kind in ("input", "output"):
            metrics.TOKENS.labels(
                operation, bill.provider_slug, bill.upstream_model, kind, tier, model, *extra
            ).observe(count)
    cost = float(Decimal(bill.cost_nanos) / NANOS)
    metrics.COST.labels(tier, model, bill.provider_slug, *extra).inc(cost)


@dataclass(frozen=True, slots=True)
class Backlog:
    entries: int  # settled entries not yet in the database
    oldest_age: float | None  # seconds since the oldest of them was settled, None if none
    streams: int  # tenants' streams that hold entries (at most MAX_STREAMS are read)


_cached: tuple[float, Backlog] | None = None


async def abacklog(*, max_age: float = BACKLOG_CACHE_SECONDS) -> Backlog:
    """The ledger's backlog, read at most every ``max_age`` seconds; raises RedisFailure."""
    global _cached
    now = time.monotonic()
    if _cached is not None and now - _cached[0] < max_age:
        return _cached[1]
    client = counters.async_client()
    streams: list[Any] = []
    async for key in client.scan_iter(match=counters.LEDGER_PATTERN, count=1000):
        streams.append(key)
        if len(streams) >= MAX_STREAMS:
            break
    entries, oldest_ms = 0, None
    for start in range(0, len(streams), 500):
        pipe = client.pipeline(transaction=False)
        for key in streams[start : start + 500]:
            pipe.xlen(key)
            pipe.xrange(key, "-", "+", count=1)
        replies = await pipe.execute()
        for length, first in zip(replies[::2], replies[1::2], strict=True):
            entries += int(length)
            if first:
                entry_id = first[0][0]
                entry_id = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
                ms = int(str(entry_id).split("-", 1)[0])
                oldest_ms = ms if oldest_ms is None else min(oldest_ms, ms)
    age = None if oldest_ms is None else max(0.0, time.time() - oldest_ms / 1000)
    backlog = Backlog(entries=entries, oldest_age=age, streams=len(streams))
    _cached = (time.monotonic(), backlog)
    return backlog


class BacklogCollector(Collector):
    """The backlog as gauges of a scrape (nothing when Redis could not say)."""

    def __init__(self, backlog: Backlog | None) -> None:
        self.backlog = backlog

    def collect(self) -> Iterator[Metric]:
        if self.backlog is None:
            return
        yield GaugeMetricFamily(
            "llm_proxy_ledger_backlog_entries",
            "Settled requests waiting in Redis for the ledger drain to store them.",
            value=self.backlog.entries,
        )
        yield GaugeMetricFamily(
            "llm_proxy_ledger_oldest_entry_age_seconds",
            "Age of the oldest entry waiting for the ledger drain (0 when none waits).",
            value=self.backlog.oldest_age or 0.0,
        )
