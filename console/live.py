"""Every settled request, announced to the open dashboards.

Connected to usage.signals.bill_settled (ConsoleConfig.ready). It runs on the request's own
path in the process that served it: no database, one channel-layer send bounded in time, and
it never raises (a dashboard that misses an update catches up on its next snapshot).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from channels.layers import get_channel_layer

from console.consumers import GROUP
from usage.bill import Bill

logger = logging.getLogger(__name__)

# A slow or unreachable Redis must not hold a request's worker: the update is given up.
SEND_TIMEOUT = 0.5


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


async def on_bill_settled(sender: Any, *, bill: Bill, settled: bool, **kwargs: Any) -> None:
    try:
        layer = get_channel_layer()
        if layer is None:
            return
        message = settled_message(bill, settled=settled)
        await asyncio.wait_for(layer.group_send(GROUP, message), timeout=SEND_TIMEOUT)
    except Exception:
        logger.warning(
            "%s: the dashboard was not told of this request", bill.request_id, exc_info=True
        )
