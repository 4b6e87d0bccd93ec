"""Spend alerts: a tenant's week reaching its tier's thresholds, told once, delivered at least once.

A tier's ``alert_thresholds`` (50,80,100) are percentages of its weekly token cap and of
its cost cap, each a *kind* of alert. Three steps, each in its own place:

1. **Claim**, after every settlement (:func:`on_bill_settled`, a ``bill_settled``
   receiver, on the request's path): one HMGET of the week's counters (net of resets, as
   the counters hold them) and, only for a threshold newly reached, one script that claims
   it with ``SET NX`` and appends the event to the tenant's outbox stream in the same atomic
   step. The claim is shared by every process, so each threshold of each kind fires once per
   tenant per week however many processes see it reached at once. No HTTP and no database
   here: the tier's thresholds and the tenant's caps come with the settlement (the limits
   it was admitted under, from the tenant's cached context).
2. **Record and deliver**, off the request path (:class:`_Deliveries`, one task per
   process's event loop, started by its first settlement like the ledger drainer): it
   reads the outboxes with a consumer group, writes the :class:`~usage.models.AlertEvent`
   row (idempotent by event id: the dashboard's notice) and, when
   ``PROXY_ALERT_WEBHOOK_URL`` is set, POSTs the event signed per Standard Webhooks
   (usage/webhooks.py). An entry is acknowledged only after a 2xx (or after
   ``MAX_ATTEMPTS``; the row keeps ``last_error``), so delivery is at least once; retries
   back off from 1 s to 10 min; the webhook-id is the event id, the same on every retry and
   in every process.
3. **Read** for the dashboard: :func:`recent_alerts`.

Keys (per tenant, under its hash tag like usage/counters.py's, so the claim script touches
one Redis Cluster slot)::

    lp:{t:7}:alert:<week>:<kind>:<pct>   string  the claim (TTL: a day past the week's end)
    lp:{t:7}:alerts                      stream  the outbox, one entry per claimed crossing

The consumer group is named after the webhook URL ("alerts:<hash>", or "alerts:none"
without one): processes configured alike share the work, and a process configured apart
(no URL, another URL) gets every event for itself instead of taking some of theirs. A row
already delivered is never posted again, whichever group meets it.

A process that dies with entries it read but did not acknowledge leaves them in the group;
the others take them over (XAUTOCLAIM) once they have been idle for a minute: a live owner
touches its own every poll, however long their backoff.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import json
import logging
import os
import random
import socket
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import redis
from channels.db import database_sync_to_async
from django.conf import settings
from django.db.models import F
from django.utils import timezone

from core.redis import RedisFailure, ScriptRegistry
from tenants.limits import Limits
from tenants.models import Tenant, Tier
from usage import counters
from usage.bill import NANOS, Bill, to_nanos
from usage.models import AlertEvent
from usage.webhooks import adeliver
from usage.weeks import week_starting

logger = logging.getLogger(__name__)

EVENT_TYPE = "spend.threshold_crossed"
OUTBOX_PATTERN = "lp:{t:*}:alerts"
MAX_ATTEMPTS = 15  # 1 s, 2 s, 4 s ... then every 10 min: about an hour in all
_FIRST_RETRY_S = 1.0
_LAST_RETRY_S = 600.0
_POLL_S = 0.25
_SCAN_EVERY_S = 30.0  # every outbox, for entries whose claimer died before delivering
_ORPHAN_IDLE_MS = 60_000  # well past a delivery's timeout: its owner is gone
_OUTBOX_MAXLEN = 1000  # per tenant; a week has at most 2 x 100 crossings
_CONCURRENT_DELIVERIES = 8
_UNREACHABLE = RedisFailure


def outbox_key(tenant_id: int) -> str:
    return f"{counters.tenant_prefix(tenant_id)}alerts"


def claim_key(*, tenant_id: int, week_id: str, kind: str, threshold: int) -> str:
    return f"{counters.tenant_prefix(tenant_id)}alert:{week_id}:{kind}:{threshold}"


def event_id(*, tenant_id: int, week_id: str, kind: str, threshold: int) -> str:
    """The webhook-id: one per tenant, week, kind and threshold, so even a crossing claimed
    twice (Redis lost the claim mid-week) is one event to the database and the receiver."""
    return f"spend_{tenant_id}_{week_id}_{kind}_{threshold}"


@dataclass(frozen=True, slots=True)
class Plan:
    """What the alerts of one tenant need: its tier's thresholds and its effective caps."""

    thresholds: tuple[int, ...]
    token_cap: int | None
    cost_cap_nanos: int | None

    @classmethod
    def of(cls, limits: Limits) -> Plan:
        """From the limits a request was admitted under (the tenant's cached context, kept
        current across processes as the proxy's own limits are)."""
        cost_cap = limits.weekly_cost_cap_usd
        return cls(
            thresholds=limits.alert_thresholds,
            token_cap=limits.weekly_token_cap,
            cost_cap_nanos=None if cost_cap is None else to_nanos(cost_cap),
        )

    def caps(self) -> list[tuple[str, int]]:
        # A cap of 0 refuses everything: every threshold of it would be "reached" at once.
        found = [(AlertEvent.Kind.TOKENS.value, self.token_cap)]
        found.append((AlertEvent.Kind.COST.value, self.cost_cap_nanos))
        return [(kind, cap) for kind, cap in found if cap]


def reached(*, plan: Plan, used_tokens: int, used_nanos: int) -> list[tuple[str, int, int, int]]:
    """The thresholds the week's usage has reached: (kind, threshold, used, cap), compared
    in whole numbers (used * 100 >= cap * threshold), exact for any amount."""
    used = {AlertEvent.Kind.TOKENS.value: used_tokens, AlertEvent.Kind.COST.value: used_nanos}
    return [
        (kind, pct, used[kind], cap)
        for kind, cap in plan.caps()
        for pct in plan.thresholds
        if used[kind] * 100 >= cap * pct
    ]


@dataclass(frozen=True, slots=True)
class Crossing:
    """One claimed threshold, as the outbox carries it."""

    event_id: str
    tenant_id: int
    tier_id: int
    week: str
    kind: str
    threshold: int
    used: int
    cap: int
    at: str  # ISO 8601: when it was claimed

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: bytes | str) -> Crossing:
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("not an object")
        return cls(**data)


# KEYS[1] the outbox, KEYS[2..] the claims; ARGV: claim TTL (ms), outbox TTL (ms), the
# outbox's length bound, then one event per claim. A claim taken and its event appended in
# one step: no claim without its event, whatever dies when.
CLAIM = """
local claimed = {}
for i = 2, #KEYS do
  if redis.call('SET', KEYS[i], '1', 'NX', 'PX', ARGV[1]) then
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', 'e', ARGV[i + 2])
    claimed[#claimed + 1] = i - 1
  end
end
if #claimed > 0 and redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return claimed
"""

_SCRIPTS = ScriptRegistry({"claim": CLAIM})


# The crossings this process knows are claimed (by it or another), per tenant-week: a
# tenant past its thresholds costs one HMGET per settlement, never a script call.
_known: dict[tuple[int, str], set[tuple[str, int]]] = {}


# --- 1. the claim --------------------------------------------------------------------------


async def acheck(*, plan: Plan, tenant_id: int, tier_id: int, week_id: str) -> list[Crossing]:
    """Claim the thresholds the tenant's week has newly reached; returns those this call
    claimed (their events are in the outbox). Raises only for Redis."""
    if not plan.thresholds or not plan.caps():
        return []
    known = _known.get((tenant_id, week_id))
    if known is None:
        # A new week for this tenant: what the process knew of its earlier weeks goes (the
        # memory stays bounded by the tenants it serves, not by the weeks it has run).
        for stale in [key for key in _known if key[0] == tenant_id]:
            del _known[stale]
        known = _known[(tenant_id, week_id)] = set()
    if len(known) == len(plan.thresholds) * len(plan.caps()):
        return []  # every one claimed already
    week_key = counters.keys_for(tenant_id, week_id).week
    tokens, nanos = await counters.async_client().hmget(week_key, "used_tokens", "used_nanos")
    due = [
        found
        for found in reached(plan=plan, used_tokens=int(tokens or 0), used_nanos=int(nanos or 0))
        if (found[0], found[1]) not in known
    ]
    if not due:
        return []
    at = timezone.now()
    events = [
        Crossing(
            event_id=event_id(tenant_id=tenant_id, week_id=week_id, kind=kind, threshold=pct),
            tenant_id=tenant_id,
            tier_id=tier_id,
            week=week_id,
            kind=kind,
            threshold=pct,
            used=used,
            cap=cap,
            at=at.isoformat(),
        )
        for kind, pct, used, cap in due
    ]
    week_end = week_starting(date.fromisoformat(week_id)).end
    claim_ms = max(0, int((week_end - at).total_seconds() * 1000)) + 86_400_000
    claimed = await _SCRIPTS.on(counters.async_client())["claim"](
        keys=[
            outbox_key(tenant_id),
            *(
                claim_key(tenant_id=tenant_id, week_id=week_id, kind=e.kind, threshold=e.threshold)
                for e in events
            ),
        ],
        args=[claim_ms, claim_ms + 7 * 86_400_000, _OUTBOX_MAXLEN, *(e.to_json() for e in events)],
    )
    known.update((e.kind, e.threshold) for e in events)
    if len(_known) > 10_000:  # old weeks and gone tenants: forgetting costs one HMGET
        _known.clear()
    mine = [events[int(index) - 1] for index in claimed]
    if mine:
        deliveries.note(tenant_id)
    return mine


async def on_bill_settled(
    sender: Any, *, bill: Bill, settled: bool, limits: Limits | None = None, **kwargs: Any
) -> None:
    """The ``bill_settled`` receiver: quick (one HMGET, rarely a script call), never raises.

    A check that fails (Redis unreachable) is not retried: the next settlement of the
    tenant checks again, and a threshold reached stays reached.
    """
    # Before the claim, and whether or not this settlement claims anything: a process that
    # died may have claimed crossings its courier never delivered (nor recorded), and only a
    # running courier finds them (its first poll scans every outbox). A restarted process
    # takes them over at its first settlement, not at its first claim of its own.
    deliveries.start()
    if not settled or limits is None:
        return  # a late settlement adds nothing to the week
    try:
        await acheck(
            plan=Plan.of(limits), tenant_id=bill.tenant_id, tier_id=bill.tier_id, week_id=bill.week
        )
    except _UNREACHABLE as exc:
        logger.warning("%s: spend alerts not checked (%r)", bill.request_id, exc)
    except Exception:
        logger.exception("%s: spend alerts not checked", bill.request_id)


# --- 2. record and deliver -----------------------------------------------------------------


def group_name() -> str:
    """This process's consumer group: one per webhook destination (see the module docs)."""
    url = settings.PROXY_ALERT_WEBHOOK_URL
    return "alerts:" + (hashlib.sha256(url.encode()).hexdigest()[:12] if url else "none")


def retry_delay(attempts: int) -> float:
    """Seconds before the next delivery after ``attempts`` failed ones: doubling from 1 s
    to 10 min, with a little jitter so that processes do not retry in step."""
    base: float = min(_LAST_RETRY_S, _FIRST_RETRY_S * 2.0 ** max(0, attempts - 1))
    return base * random.uniform(1.0, 1.1)


@dataclass(frozen=True, slots=True)
class _Recorded:
    tenant_slug: str
    tier_slug: str
    delivered: bool


def _record(crossing: Crossing) -> _Recorded | None:
    """The event's row, written once (None: its tenant is gone, nothing to tell)."""
    tenant = Tenant.objects.filter(pk=crossing.tenant_id).only("slug").first()
    if tenant is None:
        return None
    tier = Tier.objects.filter(pk=crossing.tier_id).only("slug").first()
    row, _ = AlertEvent.objects.get_or_create(
        event_id=crossing.event_id,
        defaults={
            "tenant": tenant,
            "tier": tier,
            "week": crossing.week,
            "threshold": crossing.threshold,
            "kind": crossing.kind,
            "used": crossing.used,
            "cap": crossing.cap,
            "created_at": datetime.fromisoformat(crossing.at),
        },
    )
    return _Recorded(
        tenant_slug=tenant.slug,
        tier_slug=tier.slug if tier is not None else "",
        delivered=row.delivered_at is not None,
    )


def _attempted(event: str, error: str) -> int:
    """Count one delivery attempt (delivered if no error); returns the attempts so far. A
    success keeps the last error: the row tells how hard it was."""
    changes: dict[str, Any] = {"attempts": F("attempts") + 1}
    if error:
        changes["last_error"] = error[:500]
    else:
        changes["delivered_at"] = timezone.now()
    rows = AlertEvent.objects.filter(event_id=event)
    rows.update(**changes)
    return rows.values_list("attempts", flat=True).first() or 0


def payload(crossing: Crossing, recorded: _Recorded) -> bytes:
    """The webhook body (the same on every retry of an event)."""
    data: dict[str, Any] = {
        "tenant": recorded.tenant_slug,
        "tenant_id": crossing.tenant_id,
        "tier": recorded.tier_slug,
        "week": crossing.week,
        "threshold": crossing.threshold,
        "kind": crossing.kind,
        "used": crossing.used,
        "cap": crossing.cap,
        "unit": "tokens" if crossing.kind == AlertEvent.Kind.TOKENS else "nano_usd",
    }
    if crossing.kind == AlertEvent.Kind.COST:
        data["used_usd"] = str(Decimal(crossing.used) / NANOS)
        data["cap_usd"] = str(Decimal(crossing.cap) / NANOS)
    body = {"type": EVENT_TYPE, "timestamp": crossing.at, "data": data}
    return json.dumps(body, separators=(",", ":")).encode()


def _entries(reply: Any) -> list[tuple[str, dict[bytes, bytes] | None]]:
    """(entry id, fields) of an XREADGROUP or XAUTOCLAIM reply (fields None: trimmed)."""
    found = []
    for entry_id, fields in reply:
        found.append((entry_id.decode() if isinstance(entry_id, bytes) else entry_id, fields))
    return found


class _Courier:
    """One event loop's consumer: reads the outboxes, records and delivers their events."""

    def __init__(self) -> None:
        self.group = group_name()
        self.consumer = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.streams: set[str] = set()
        self.grouped: set[str] = set()
        self.retry_at: dict[tuple[str, str], float] = {}
        self.last_scan = 0.0
        self.slots = asyncio.Semaphore(_CONCURRENT_DELIVERIES)

    async def run_once(self, tenants: set[int]) -> None:
        client = counters.async_client()
        self.streams.update(outbox_key(tenant_id) for tenant_id in tenants)
        full = time.monotonic() - self.last_scan > _SCAN_EVERY_S
        if full:
            async for key in client.scan_iter(match=OUTBOX_PATTERN, count=500):
                self.streams.add(key.decode() if isinstance(key, bytes) else key)
            self.last_scan = time.monotonic()
        now = time.monotonic()
        due = []
        for stream in list(self.streams):
            pending = await self._pending(client, stream, orphans=full)
            if not pending:
                self.streams.discard(stream)
            due += [
                (stream, entry_id, fields)
                for entry_id, fields in pending
                if self.retry_at.get((stream, entry_id), 0.0) <= now
            ]
        await asyncio.gather(*(self._handle(client, *entry) for entry in due))

    async def _pending(
        self, client: Any, stream: str, *, orphans: bool
    ) -> list[tuple[str, dict[bytes, bytes] | None]]:
        """This consumer's entries of ``stream``: new ones taken, orphans adopted, all read
        back (which also tells Redis this consumer is alive and holds them)."""
        try:
            if stream not in self.grouped:
                try:
                    await client.xgroup_create(stream, self.group, id="0")
                except redis.ResponseError as exc:
                    if "BUSYGROUP" not in str(exc):
                        return []  # no such stream (expired): nothing to do
                self.grouped.add(stream)
            await client.xreadgroup(self.group, self.consumer, {stream: ">"}, count=100)
            if orphans:
                await client.xautoclaim(
                    stream, self.group, self.consumer, _ORPHAN_IDLE_MS, "0-0", count=100
                )
            reply = await client.xreadgroup(self.group, self.consumer, {stream: "0"}, count=500)
        except redis.ResponseError as exc:
            # NOGROUP (the embedded store: "requires the key to exist"): the stream expired,
            # or Redis was flushed. Its group is made again if it comes back.
            self.grouped.discard(stream)
            if "NOGROUP" not in str(exc) and "key to exist" not in str(exc):
                logger.warning("spend alerts: cannot read %s (%s)", stream, exc)
            return []
        pending = _entries(reply[0][1]) if reply else []
        held = {entry_id for entry_id, _ in pending}
        for key in [k for k in self.retry_at if k[0] == stream and k[1] not in held]:
            del self.retry_at[key]  # acknowledged meanwhile, taken over, or trimmed
        return pending

    async def _ack(self, client: Any, stream: str, entry_id: str) -> None:
        await client.xack(stream, self.group, entry_id)
        self.retry_at.pop((stream, entry_id), None)

    async def _handle(
        self, client: Any, stream: str, entry_id: str, fields: dict[bytes, bytes] | None
    ) -> None:
        async with self.slots:
            try:
                await self._deliver(client, stream, entry_id, fields)
            except Exception:
                logger.exception("spend alert %s in %s: will retry", entry_id, stream)
                self.retry_at[(stream, entry_id)] = time.monotonic() + 5.0

    async def _deliver(
        self, client: Any, stream: str, entry_id: str, fields: dict[bytes, bytes] | None
    ) -> None:
        raw = (fields or {}).get(b"e")
        if raw is None:
            await self._ack(client, stream, entry_id)  # trimmed away: nothing left to send
            return
        try:
            crossing = Crossing.from_json(raw)
        except (ValueError, TypeError):
            logger.error("spend alert %s in %s is not an event: dropped", entry_id, stream)
            await self._ack(client, stream, entry_id)
            return
        recorded = await database_sync_to_async(_record, thread_sensitive=False)(crossing)
        url, secret = settings.PROXY_ALERT_WEBHOOK_URL, settings.PROXY_ALERT_WEBHOOK_SECRET
        if recorded is None or recorded.delivered or not url:
            await self._ack(client, stream, entry_id)
            return
        error = await adeliver(
            url=url, secret=secret, msg_id=crossing.event_id, body=payload(crossing, recorded)
        )
        attempts = await database_sync_to_async(_attempted, thread_sensitive=False)(
            crossing.event_id, error
        )
        if not error:
            await self._ack(client, stream, entry_id)
        elif attempts >= MAX_ATTEMPTS:
            logger.error(
                "spend alert %s: webhook gave up after %d attempts (%s)",
                crossing.event_id,
                attempts,
                error,
            )
            await self._ack(client, stream, entry_id)
        else:
            delay = retry_delay(attempts)
            logger.warning(
                "spend alert %s: webhook attempt %d failed (%s); retrying in %.0f s",
                crossing.event_id,
                attempts,
                error,
                delay,
            )
            self.retry_at[(stream, entry_id)] = time.monotonic() + delay


class _Deliveries:
    """Starts and feeds each event loop's courier: a task, started by the first settlement
    (as the ledger drainer is), never run on a request's path."""

    def __init__(self) -> None:
        self.noted: set[int] = set()
        self.tasks: dict[asyncio.AbstractEventLoop, asyncio.Task[None]] = {}

    def note(self, tenant_id: int) -> None:
        self.noted.add(tenant_id)
        self.start()

    def start(self) -> None:
        """This event loop's courier, started if it is not running: a dict lookup when it
        is (every settlement calls this)."""
        loop = asyncio.get_running_loop()
        task = self.tasks.get(loop)
        if task is None or task.done():
            # A fresh context: it outlives the request that started it, whose request id
            # must not label its lines.
            self.tasks[loop] = loop.create_task(
                self._run(), name="usage-alert-deliveries", context=contextvars.Context()
            )

    async def _run(self) -> None:
        courier = _Courier()
        while True:
            await asyncio.sleep(_POLL_S)
            tenants, self.noted = self.noted, set()
            try:
                await courier.run_once(tenants)
            except _UNREACHABLE as exc:
                logger.warning("spend alerts: Redis unreachable (%r); will retry", exc)
                self.noted |= tenants
                await asyncio.sleep(1.0)
            except Exception:
                logger.exception("spend alert deliveries failed; will retry")
                self.noted |= tenants


deliveries = _Deliveries()


# --- 3. the dashboard's read ---------------------------------------------------------------


def recent_alerts(*, limit: int = 50, tenant: Tenant | None = None) -> list[AlertEvent]:
    """The latest spend alerts, newest first (optionally one tenant's): the dashboard's
    notices, with their webhook delivery state."""
    rows = AlertEvent.objects.select_related("tenant", "tier").order_by("-created_at", "-id")
    if tenant is not None:
        rows = rows.filter(tenant=tenant)
    return list(rows[:limit])


def week_alerts(*, week_id: str) -> list[AlertEvent]:
    """Every spend alert of a usage week (a tenant's row can say which thresholds it is past)."""
    rows = AlertEvent.objects.select_related("tenant", "tier").filter(week=week_id)
    return list(rows.order_by("tenant_id", "kind", "threshold"))
