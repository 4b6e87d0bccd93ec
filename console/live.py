"""Every settled request, announced to the open dashboards.

Connected to usage.signals.bill_settled (ConsoleConfig.ready). It runs on the request's own
path in the process that served it, and only queues: no database, no Redis, never raises.
Each process publishes what it queued as one ``usage.batch`` group message every
FLUSH_SECONDS, which the dashboard's consumer hands to the browser event by event. One
publish per request cost a Redis round trip on every settlement, and channels_redis sends
one publish at a time per connection, so at 64 concurrent requests they queued behind each
other past SEND_TIMEOUT and were dropped (bench/, issue 12). A send that fails or times out
drops its batch: a dashboard that misses an update catches up on its next snapshot.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import weakref
from typing import Any

from channels.layers import get_channel_layer

from console.consumers import GROUP
from usage.bill import Bill

logger = logging.getLogger(__name__)

# A slow or unreachable Redis must not hold the publisher: the batch is given up.
SEND_TIMEOUT = 0.5
# How often a process publishes what settled since (the dashboard's update delay), how many
# events go in one message, and how many may wait while Redis is slow.
FLUSH_SECONDS = 0.1
BATCH_EVENTS = 500
MAX_QUEUED = 10_000


def settled_message(bill: Bill, *, settled: bool) -> dict[str, Any]:
    """The ``usage.settled`` event: small, and plain types only (the Redis layer packs it
    with msgpack). The tenant is named by id: its slug would need the database."""
    return {
        "type": "usage.settled",
        "request_id": bill.request_id,
        "tenant_id": bill.tenant_id,
        "model": bill.model,
        "provider": bill.provider_slug,
        "stream": bill.stream,
        "input_tokens": bill.tokens.input,
        "output_tokens": bill.tokens.output,
        "tokens": bill.tokens.total,
        "cost_nanos": bill.cost_nanos,
        "status": bill.status,
        "http_status": bill.http_status,
        "error_code": bill.error_code,
        "latency_ms": bill.latency_ms,
        "ttft_ms": bill.ttft_ms,
        "downgraded_from": bill.downgraded_from,
        "created_at": bill.created_at.isoformat(),
        # False: it came after its lease ran out and was billed as lost before; the counters
        # did not move now, so the page must not add it again.
        "settled": settled,
    }


class _Announcer:
    """One event loop's queue of settled events and the task that publishes it."""

    def __init__(self) -> None:
        self.queue: list[dict[str, Any]] = []
        self.dropped = 0
        self.task: asyncio.Task[None] | None = None

    def add(self, message: dict[str, Any]) -> None:
        if len(self.queue) >= MAX_QUEUED:
            self.dropped += 1  # Redis is too slow or gone: the page catches up on a snapshot
        else:
            self.queue.append(message)
        if self.task is None or self.task.done():
            # A fresh context: it outlives the request that started it.
            self.task = asyncio.get_running_loop().create_task(
                self._run(), name="console-live", context=contextvars.Context()
            )

    async def _run(self) -> None:
        while self.queue or self.dropped:
            await asyncio.sleep(FLUSH_SECONDS)
            batch, self.queue = self.queue, []
            dropped, self.dropped = self.dropped, 0
            if dropped:
                logger.warning("the dashboard was not told of %d requests (queue full)", dropped)
            for start in range(0, len(batch), BATCH_EVENTS):
                await _publish(batch[start : start + BATCH_EVENTS])


async def _publish(events: list[dict[str, Any]]) -> None:
    try:
        layer = get_channel_layer()
        if layer is None:
            return
        message = {"type": "usage.batch", "events": events}
        await asyncio.wait_for(layer.group_send(GROUP, message), timeout=SEND_TIMEOUT)
    except Exception:
        logger.warning("the dashboard was not told of %d requests", len(events), exc_info=True)


_announcers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Announcer] = (
    weakref.WeakKeyDictionary()
)


async def on_bill_settled(sender: Any, *, bill: Bill, settled: bool, **kwargs: Any) -> None:
    try:
        loop = asyncio.get_running_loop()
        announcer = _announcers.get(loop)
        if announcer is None:
            announcer = _announcers[loop] = _Announcer()
        announcer.add(settled_message(bill, settled=settled))
    except Exception:
        logger.warning(
            "%s: the dashboard was not told of this request", bill.request_id, exc_info=True
        )
