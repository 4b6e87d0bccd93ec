"""Reading the audit log: a target's history, and the rows of a CSV export."""

from __future__ import annotations

import csv
import json
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.db.models import QuerySet

from audit.models import AuditEntry

CSV_COLUMNS = (
    "at",
    "actor",
    "actor_user_id",
    "action",
    "target_type",
    "target_id",
    "target_repr",
    "changes",
    "note",
)
# A cell a spreadsheet would run as a formula (a tenant named "=HYPERLINK(...)").
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def audit_entries(
    *,
    target: models.Model | None = None,
    actor: str | None = None,
    action: str | None = None,
) -> QuerySet[AuditEntry]:
    """Newest first; ``target``: the rows about that object (also once it is deleted)."""
    entries = AuditEntry.objects.all()
    if target is not None:
        entries = entries.filter(target_type=target._meta.label, target_id=str(target.pk))
    if actor is not None:
        entries = entries.filter(actor=actor)
    if action is not None:
        entries = entries.filter(action=action)
    return entries.order_by("-at", "-id")


class _Line:
    """csv.writer writes into this and gets the line back: one line at a time, no buffer."""

    def write(self, value: str) -> str:
        return value


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return f"'{text}" if text.startswith(_FORMULA_START) else text


def csv_line(entry: AuditEntry) -> str:
    writer = csv.writer(_Line())
    row = [
        entry.at.isoformat(),
        entry.actor,
        entry.actor_user_id,
        entry.action,
        entry.target_type,
        entry.target_id,
        entry.target_repr,
        json.dumps(entry.changes, cls=DjangoJSONEncoder, ensure_ascii=False, sort_keys=True),
        entry.note,
    ]
    line: str = writer.writerow([_cell(value) for value in row])
    return line


def csv_header() -> str:
    line: str = csv.writer(_Line()).writerow(CSV_COLUMNS)
    return line


def csv_lines(entries: QuerySet[AuditEntry]) -> Iterator[str]:
    """The header, then a line per row, read in chunks (a sync server)."""
    yield csv_header()
    for entry in entries.iterator(chunk_size=1000):
        yield csv_line(entry)


async def acsv_lines(entries: QuerySet[AuditEntry]) -> AsyncIterator[str]:
    """The same, for an ASGI server: each chunk is read off the event loop by Django."""
    yield csv_header()
    async for entry in entries.aiterator(chunk_size=1000):
        yield csv_line(entry)


def changes_text(changes: Iterable[tuple[str, list[Any]]]) -> str:
    """``field: before → after; ...``, for the admin's list."""
    return "; ".join(f"{name}: {_short(pair[0])} → {_short(pair[1])}" for name, pair in changes)


def _short(value: Any) -> str:
    text = "—" if value is None else json.dumps(value, cls=DjangoJSONEncoder, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "…"
