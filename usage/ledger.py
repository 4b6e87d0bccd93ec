"""The durable ledger: settled usage moves from Redis streams into UsageRecord rows.

Settlement appends each request's record to its tenant's Redis stream in the same atomic
step that updates the counters (usage/counters.py). This module moves those entries into
the database in batches, idempotently (the request id is unique, inserts ignore conflicts,
and entries leave the stream only after their rows are committed), rebuilds a week's
counters from the database when Redis has lost them, and adds rows that had to be written
straight to the database (Redis unreachable at settlement) to the counters afterwards.

Everything that moves usage between the stream and the database, or reads the database to
rebuild a counter, holds the tenant's lock, so no entry is ever counted twice.

The sweep bills requests whose worker died (their lease ran out) by their pending records:
see usage/counters.py (SWEEP) and usage/limits.py (the lost-request policy).
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson
from django.db import DataError, IntegrityError, models, transaction
from django.db.models import Sum
from django.db.models.functions import Coalesce

from core.redis import SyncClient
from usage import counters
from usage.bill import NANOS
from usage.models import UsageRecord, WeekReset
from usage.weeks import Week

logger = logging.getLogger(__name__)

_BATCH = 500
_LOCK_MS = 30_000


class LockBusy(Exception):
    pass


def record_to_json(record: dict[str, Any]) -> str:
    # orjson: one per request on the hot path (the pending record), and one parse per row in
    # the drain; a record holds only strings, integers, booleans and None.
    return orjson.dumps(record).decode()


# The record's counts and the largest value each column holds. A record past them is refused
# here (ValueError: the drain keeps it in the dead-letter stream) rather than by the
# database: SQLite's INSERT OR IGNORE, which bulk_create(ignore_conflicts=True) issues, skips a
# row that fails a CHECK as silently as a duplicate, and the row would be lost.
_BIG, _INT, _SMALL = 2**63 - 1, 2**31 - 1, 2**15 - 1
_COUNTS = {
    "input_tokens": _BIG,
    "output_tokens": _BIG,
    "cache_read_tokens": _BIG,
    "cache_write_tokens": _BIG,
    "reasoning_tokens": _BIG,
    "cost_nanos": 10**20 - 1,  # cost_usd: 20 digits, 9 of them decimals
    "latency_ms": _INT,
    "http_status": _SMALL,
    "attempts": _SMALL,
}


# The text columns and their lengths, for the same reason: PostgreSQL refuses a longer value
# (DataError), which would stop the drain for every tenant behind it.
_LENGTHS = {
    field.attname: field.max_length
    for field in UsageRecord._meta.concrete_fields
    if isinstance(field, models.CharField) and field.max_length
}


def record_row(record: dict[str, Any]) -> UsageRecord:
    """The UsageRecord for a settled request's record (as the meter builds it)."""
    data = dict(record)
    for name, largest in _COUNTS.items():
        value = data.get(name, 0)
        if type(value) is not int or not 0 <= value <= largest:
            raise ValueError(f"ledger record {data.get('request_id')!r}: {name} is {value!r}")
    ttft = data.get("ttft_ms")
    if ttft is not None and (type(ttft) is not int or not 0 <= ttft <= _INT):
        raise ValueError(f"ledger record {data.get('request_id')!r}: ttft_ms is {ttft!r}")
    for name, longest in _LENGTHS.items():
        text = data.get(name)
        if isinstance(text, str) and len(text) > longest:
            raise ValueError(f"ledger record {data.get('request_id')!r}: {name} is too long")
    data["created_at"] = datetime.fromisoformat(data["created_at"])
    data["cost_usd"] = Decimal(data.pop("cost_nanos")) / NANOS
    return UsageRecord(**data)


def _record_of(row: UsageRecord) -> dict[str, Any]:
    """A row back into the record it was read from (for the dead-letter stream)."""
    fields = [f.attname for f in UsageRecord._meta.concrete_fields if f.attname != "id"]
    record = {name: getattr(row, name) for name in fields}
    record["created_at"] = row.created_at.isoformat()
    record["cost_nanos"] = int(record.pop("cost_usd") * NANOS)
    return record


def _row(payload: bytes | str) -> UsageRecord:
    return record_row(orjson.loads(payload))


def sweep_tenant(client: SyncClient, tenant_id: int, *, now_ms: int | None = None) -> int:
    """Bill a tenant's requests whose lease ran out as lost; returns how many.

    Their entries join the ledger stream (drained as any other). No lock: the script is one
    atomic step, like a settlement.
    """
    now = int(time.time() * 1000) if now_ms is None else now_ms
    call = counters.sweep_call(tenant_id=tenant_id, now_ms=now)
    return int(counters.sync_scripts(client).sweep(**call))


def sweep_all(client: SyncClient, *, now_ms: int | None = None) -> int:
    """Sweep every tenant that holds reservations (SCAN: for the worker, not the hot path)."""
    tenants = {
        counters.tenant_id_of_ledger(key.decode() if isinstance(key, bytes) else key)
        for key in client.scan_iter(match=counters.RESERVATIONS_PATTERN, count=1000)
    }
    return sum(sweep_tenant(client, tenant_id, now_ms=now_ms) for tenant_id in sorted(tenants))


def _settled_already(
    client: SyncClient, tenant_id: int, parsed: list[tuple[bytes, dict[bytes, bytes], UsageRecord]]
) -> set[bytes]:
    """Lost entries whose request has a row already; returns their entry ids.

    Such a row is the request's real bill, written straight to the database while Redis was
    down (its lease ran out meanwhile, so it was billed as lost too), or this very entry,
    stored before a crash kept it from leaving the stream. The row stands: the entry leaves
    the stream and its week's counter takes the difference, in one step (ADJUST).
    """
    lost = {row.request_id: (entry_id, fields, row) for entry_id, fields, row in parsed}
    lost = {rid: item for rid, item in lost.items() if item[2].status == UsageRecord.Status.LOST}
    if not lost:
        return set()
    existing = UsageRecord.objects.filter(request_id__in=lost).values_list(
        "request_id", "input_tokens", "output_tokens", "cost_usd"
    )
    adjust = counters.sync_scripts(client).adjust
    done = set()
    for request_id, input_tokens, output_tokens, cost_usd in existing:
        entry_id, fields, row = lost[request_id]
        keys = counters.keys_for(tenant_id, fields[b"w"].decode())
        tokens = input_tokens + output_tokens - row.total_tokens
        nanos = int(cost_usd * NANOS) - int(row.cost_usd * NANOS)
        adjust(keys=[keys.ledger, keys.week], args=[entry_id, tokens, nanos])
        done.add(entry_id)
    return done


@contextmanager
def tenant_lock(client: SyncClient, tenant_id: int, *, wait: float = 5.0) -> Iterator[None]:
    key = counters.keys_for(tenant_id, "-").lock
    token = secrets.token_hex(8)
    deadline = time.monotonic() + wait
    while not client.set(key, token, nx=True, px=_LOCK_MS):
        if time.monotonic() > deadline:
            raise LockBusy(f"tenant {tenant_id} ledger lock is busy")
        time.sleep(0.01)
    try:
        yield
    finally:
        counters.sync_scripts(client).unlock(keys=[key], args=[token])


def _drain_locked(client: SyncClient, tenant_id: int) -> int:
    stream = counters.keys_for(tenant_id, "-").ledger
    moved = 0
    while True:
        entries: list[tuple[bytes, dict[bytes, bytes]]] = client.xrange(  # type: ignore[assignment]
            stream, "-", "+", count=_BATCH
        )
        if not entries:
            return moved
        parsed = []
        for entry_id, fields in entries:
            try:
                parsed.append((entry_id, fields, _row(fields[b"r"])))
            except (KeyError, ValueError, TypeError):
                # Unreadable (a record from another version of the proxy, say): kept aside,
                # loudly, rather than blocking the tenant's ledger and its counters.
                dead = counters.keys_for(tenant_id, "-").dead_letter
                kept: dict[Any, Any] = {**fields, b"id": entry_id}
                client.xadd(dead, kept)
                logger.error(
                    "unreadable ledger entry %s of tenant %s moved to %s", entry_id, tenant_id, dead
                )
        skip = _settled_already(client, tenant_id, parsed)
        rows = [row for entry_id, _, row in parsed if entry_id not in skip]
        try:
            with transaction.atomic():
                UsageRecord.objects.bulk_create(rows, ignore_conflicts=True)
        except (IntegrityError, DataError):
            _insert_one_by_one(client, tenant_id, rows)
        # Only once the rows are committed do the entries leave the stream; a crash in
        # between re-inserts them next time, and the unique request id ignores them.
        client.xdel(stream, *[entry_id for entry_id, _ in entries])
        moved += len(entries)


def _existing(model: type[models.Model], field: str, ids: set[int | None]) -> set[int]:
    """Which of ``ids`` still exist in the model ``field`` points at."""
    related = model._meta.get_field(field).related_model
    assert isinstance(related, type) and issubclass(related, models.Model)
    return set(related._default_manager.filter(pk__in=ids).values_list("pk", flat=True))


def _insert_one_by_one(client: SyncClient, tenant_id: int, rows: list[UsageRecord]) -> None:
    """A batch that broke a constraint: keep every row that can be kept.

    A route or pooled key deleted while its usage was still in Redis leaves the row without
    that link (as deleting it later would). A row whose tenant or tier is gone cannot be
    stored: it goes to a dead-letter stream, loudly, instead of blocking the tenant's ledger.
    """
    # The models the ledger's own foreign keys point at: usage does not import routing.
    routes = _existing(UsageRecord, "route", {r.route_id for r in rows})
    keys = _existing(UsageRecord, "provider_key", {r.provider_key_id for r in rows})
    for row in rows:
        if row.route_id not in routes:
            row.route_id = None
        if row.provider_key_id not in keys:
            row.provider_key_id = None
        try:
            with transaction.atomic():
                UsageRecord.objects.bulk_create([row], ignore_conflicts=True)
        except (IntegrityError, DataError):
            dead = counters.keys_for(tenant_id, "-").dead_letter
            client.xadd(dead, {b"r": record_to_json(_record_of(row))})
            logger.error(
                "usage of %s cannot be stored (tenant or tier gone, or a value no column "
                "holds); kept in %s",
                row.request_id,
                dead,
            )


def drain_tenant(client: SyncClient, tenant_id: int) -> int:
    """Move a tenant's settled entries into the database; returns how many."""
    with tenant_lock(client, tenant_id):
        return _drain_locked(client, tenant_id)


def ledger_tenants(client: SyncClient) -> list[int]:
    """Tenants whose ledger stream holds entries (SCAN: for the worker, not the hot path)."""
    return sorted(
        counters.tenant_id_of_ledger(key.decode() if isinstance(key, bytes) else key)
        for key in client.scan_iter(match=counters.LEDGER_PATTERN, count=1000)
    )


def drain_all(client: SyncClient) -> int:
    moved = 0
    for tenant_id in ledger_tenants(client):
        try:
            moved += drain_tenant(client, tenant_id)
        except LockBusy:
            continue  # someone else is on it
    return moved


def week_usage(*, tenant_id: int, week: Week, include_uncounted: bool = False) -> tuple[int, int]:
    """(tokens, nanos) the database holds for a tenant-week, net of staff resets.

    Rows written straight to the database and not yet added to the counters are left out
    unless asked for: reconciliation adds those to the counters (see reconcile).
    """
    rows = UsageRecord.objects.filter(tenant_id=tenant_id, week=week.id)
    if not include_uncounted:
        rows = rows.filter(counted=True)
    totals = rows.aggregate(
        input=Coalesce(Sum("input_tokens"), 0),
        output=Coalesce(Sum("output_tokens"), 0),
        cost=Coalesce(Sum("cost_usd"), Decimal(0)),
    )
    resets = WeekReset.objects.filter(tenant_id=tenant_id, week=week.id).aggregate(
        tokens=Coalesce(Sum("tokens"), 0), cost=Coalesce(Sum("cost_usd"), Decimal(0))
    )
    tokens = totals["input"] + totals["output"] - resets["tokens"]
    nanos = int((totals["cost"] - resets["cost"]) * NANOS)
    return tokens, nanos


def week_ttl(week: Week) -> int:
    # Counters outlive their week by two more, for reports and late settlements.
    return int((week.end - week.start).total_seconds()) + 14 * 86400


def seed_week(
    client: SyncClient, *, tenant_id: int, week: Week, force: bool = False, lock_wait: float = 5.0
) -> bool:
    """Build a tenant-week's counters from the ledger (drained rows + entries still in Redis).

    Without ``force`` this is a no-op when the week is live already (another process won);
    ``force`` rebuilds it regardless (rebuild_counters, a staff reset).
    """
    keys = counters.keys_for(tenant_id, week.id)
    with tenant_lock(client, tenant_id, wait=lock_wait):
        _drain_locked(client, tenant_id)
        tokens, nanos = week_usage(tenant_id=tenant_id, week=week)
        done = counters.sync_scripts(client).seed(
            keys=[keys.week, keys.ledger],
            args=[tokens, nanos, week.id, week_ttl(week), "1" if force else "0"],
        )
    return bool(done)


def reconcile(client: SyncClient) -> int:
    """Add rows written straight to the database (Redis was down) to the live counters."""
    from usage.weeks import week_starting

    done = 0
    pending = UsageRecord.objects.filter(counted=False).order_by("pk")[:_BATCH]
    scripts = counters.sync_scripts(client)
    for row in pending:
        week = week_starting(datetime.fromisoformat(row.week).date())
        with tenant_lock(client, row.tenant_id):
            call = counters.settle_call(
                tenant_id=row.tenant_id,
                week_id=week.id,
                request_id=row.request_id,
                tokens=row.total_tokens,
                nanos=int(row.cost_usd * NANOS),
                record_json="",  # no ledger entry: the row is the ledger
                now_ms=int(time.time() * 1000),
            )
            scripts.settle(**call)
            UsageRecord.objects.filter(pk=row.pk).update(counted=True)
        done += 1
    return done
