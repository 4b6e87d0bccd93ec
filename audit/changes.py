"""What changed in a row, as ``{field: [before, after]}``, with secrets left out.

Values are read as the database stores them (``attname``: a foreign key's id) so that a
stored row and an instance compare alike; a changed foreign key is then shown by what it
points at (``"tier": ["free", "pro"]``), which is what staff recognise.
"""

from __future__ import annotations

import datetime
import decimal
import enum
import uuid
from typing import Any

from django.db import models

# A field whose name holds one of these is never recorded, only noted as set or changed.
SECRET_MARKERS = ("secret", "ciphertext", "password")
# Bookkeeping the database does on every save, not a change anyone made.
NOT_CHANGES = frozenset({"created_at", "updated_at"})
HIDDEN = "(hidden)"
CHANGED = "(changed)"

Row = dict[str, Any]
Changes = dict[str, list[Any]]


def is_secret(name: str) -> bool:
    lowered = name.lower()
    return any(marker in lowered for marker in SECRET_MARKERS)


def audited_fields(model: type[models.Model]) -> list[models.Field[Any, Any]]:
    return [
        field
        for field in model._meta.concrete_fields
        if not field.primary_key and field.name not in NOT_CHANGES
    ]


def stored_row(model: type[models.Model], pk: Any, *, using: str | None = None) -> Row | None:
    """The row as stored now (None: there is none), by attname."""
    if pk is None:
        return None
    names = [field.attname for field in audited_fields(model)]
    manager = model._base_manager.db_manager(using)
    row: Row | None = manager.filter(pk=pk).values(*names).first()
    return row


def instance_row(instance: models.Model) -> Row:
    fields = audited_fields(type(instance))
    return {field.attname: getattr(instance, field.attname) for field in fields}


def diff(
    model: type[models.Model],
    before: Row | None,
    after: Row | None,
    *,
    only: frozenset[str] | None = None,
    instance: models.Model | None = None,
) -> Changes:
    """``{field: [before, after]}`` for each field that differs; a side given as None is a
    row that does not exist (a create or a delete). ``only``: field names or attnames to look
    at (a save's update_fields). ``instance`` lends its cached related objects."""
    changes: Changes = {}
    for field in audited_fields(model):
        if only is not None and field.name not in only and field.attname not in only:
            continue
        old = None if before is None else before.get(field.attname)
        new = None if after is None else after.get(field.attname)
        if before is not None and after is not None and old == new:
            continue
        if (before is None and new in (None, "")) or (after is None and old in (None, "")):
            continue  # a create or delete: a field left empty says nothing
        if is_secret(field.name):
            name = field.name.removesuffix("_ciphertext")
            # Only that it was set, changed or removed: not even a ciphertext is recorded.
            changes[name] = [
                None if old is None else HIDDEN,
                None if new is None else (HIDDEN if before is None else CHANGED),
            ]
            continue
        changes[field.name] = [
            _shown(field, old, instance),
            _shown(field, new, instance),
        ]
    return changes


def _shown(field: models.Field[Any, Any], value: Any, instance: models.Model | None) -> Any:
    if value is None:
        return None
    if field.is_relation and field.related_model is not None:
        return _related_repr(field, value, instance)
    return plain(value)


def _related_repr(field: models.Field[Any, Any], pk: Any, instance: models.Model | None) -> str:
    # The instance's cached object when it is the one meant (the new side, usually), else a
    # lookup; a row already gone (a cascade) is named by its id.
    if instance is not None and isinstance(field, models.ForeignKey) and field.is_cached(instance):
        cached = field.get_cached_value(instance)
        if cached is not None and cached.pk == pk:
            return repr_of(cached)
    related = field.related_model
    assert isinstance(related, type) and issubclass(related, models.Model)
    obj = related._base_manager.filter(pk=pk).first()
    return repr_of(obj) if obj is not None else f"#{pk}"


def repr_of(obj: models.Model) -> str:
    try:
        text = str(obj)
    except Exception:  # a half-deleted row whose __str__ follows a relation that is gone
        text = f"{obj._meta.label} #{obj.pk}"
    return text[:200]


def plain(value: Any) -> Any:
    """A JSON value for any field value (decimals as strings: exact, as stored)."""
    if isinstance(value, enum.Enum):
        value = value.value
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, decimal.Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    if isinstance(value, dict):
        return {str(key): plain(item) for key, item in value.items()}
    return str(value)
