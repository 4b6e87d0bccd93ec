"""Writing the audit log: named actions, and the rows model signals write (receivers.py).

A staff action that also saves a model (suspending a tenant saves its status) must leave
exactly one row, named for the action, not the action's row plus the signal's "updated" row:
``audit_action`` holds back the automatic rows of its target while it runs and writes one row
with the target's whole change, read from the database before and after (so a change made
with ``QuerySet.update()``, which sends no signal, such as revoking a tenant's tokens, is
recorded too).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from django.db import models

from audit.changes import CHANGED, HIDDEN, Changes, diff, is_secret, plain, repr_of, stored_row
from audit.context import current_actor
from audit.models import AuditEntry


@dataclass
class OpenAction:
    """A named action under way; add to ``changes`` (``[before, after]``, or a bare value
    for the after side) or set ``note`` before it ends."""

    action: str
    target: models.Model | None
    changes: dict[str, Any] = field(default_factory=dict)
    note: str = ""
    entry: AuditEntry | None = None
    before: dict[str, Any] | None = None

    def covers(self, instance: models.Model) -> bool:
        target = self.target
        if target is None:
            return False
        if instance is target:
            return True
        return (
            target.pk is not None
            and instance._meta.label == target._meta.label
            and instance.pk == target.pk
        )


_open: ContextVar[tuple[OpenAction, ...]] = ContextVar("audit_open_actions", default=())


def held_back(instance: models.Model) -> bool:
    """True while an ``audit_action`` on this row runs: it records the change itself."""
    return any(action.covers(instance) for action in _open.get())


def _hidden(value: Any) -> str | None:
    if value is None:
        return None
    return value if value in (HIDDEN, CHANGED) else HIDDEN


def _safe_changes(changes: dict[str, Any] | None) -> Changes:
    # A caller's own changes go through the same rule as a model's fields: a key whose name
    # says secret keeps no value.
    safe: Changes = {}
    for name, value in (changes or {}).items():
        pair = list(value) if isinstance(value, list | tuple) else [None, value]
        if len(pair) != 2:
            raise ValueError(f"changes[{name!r}] must be [before, after].")
        if is_secret(name):
            pair = [_hidden(pair[0]), _hidden(pair[1])]
        safe[name] = [plain(pair[0]), plain(pair[1])]
    return safe


def audit_record(
    *,
    action: str,
    target: models.Model | None,
    changes: dict[str, Any] | None = None,
    note: str = "",
    using: str | None = None,
) -> AuditEntry:
    """Write one row now, as the current actor (``audit.context``).

    ``changes``: ``{field: [before, after]}`` (a bare value is taken as the after side);
    a field whose name contains secret/ciphertext/password is kept without its values.
    ``note``: free text for staff; never put a token or key in it.
    """
    if not action:
        raise ValueError("An audit row needs an action.")
    actor = current_actor()
    entry = AuditEntry(
        actor=actor.name[:200],
        actor_user_id=actor.user_id,
        action=action[:64],
        changes=_safe_changes(changes),
        note=note,
    )
    if target is not None:
        entry.target_type = target._meta.label
        entry.target_id = "" if target.pk is None else str(target.pk)[:64]
        entry.target_repr = repr_of(target)
    entry.save(using=using)
    return entry


@contextmanager
def audit_action(
    action: str, *, target: models.Model | None, note: str = ""
) -> Iterator[OpenAction]:
    """One row named ``action`` for whatever the block does to ``target``.

    ``with audit_action("tenant.suspended", target=tenant): tenant_suspend(tenant=tenant)``
    writes one row with the status change and no "updated" row. Rows for other objects the
    block saves are written as usual. The block may add to the yielded object's ``changes``
    (a token's expiry) and ``note``. Nothing is written if the block raises. Nested in an
    action on the same target (a service that names its action, called by the console), it
    adds to that one: still one row, the outer name. Sync code only (it reads the database).
    """
    for outer in _open.get():
        if target is not None and outer.covers(target):
            yield outer
            return
    current = OpenAction(action=action, target=target, note=note)
    if target is not None:
        current.before = stored_row(type(target), target.pk)
    token = _open.set((*_open.get(), current))
    try:
        yield current
    finally:
        _open.reset(token)
    changes: Changes = {}
    if target is not None and (current.before is not None or target.pk is not None):
        after = stored_row(type(target), target.pk)
        changes = diff(type(target), current.before, after, instance=target)
    changes.update(_safe_changes(current.changes))
    current.entry = audit_record(
        action=current.action, target=target, changes=changes, note=current.note
    )


def record_model_change(
    *,
    action: str,
    instance: models.Model,
    changes: Changes,
    using: str | None = None,
) -> AuditEntry | None:
    """The row a model signal writes (created/updated/deleted); none for a no-op save or
    while an ``audit_action`` on the same row records it."""
    if held_back(instance):
        return None
    if action == "updated" and not changes:
        return None
    return audit_record(action=action, target=instance, changes=changes, using=using)
