"""The one signal that crosses the layers: "what a tenant context is built from changed".

Services of any app (tenants, routing) announce a change with `announce_config_change()`;
routing, which owns the cached contexts and the shared generation value, listens. This way
the bottom layer never imports the layers above it, and a change made with
``QuerySet.update()`` (which sends no model signal) still reaches every process, because
announcing is an explicit step of the service, not a side effect of ``save()``.
"""

from __future__ import annotations

from django.db import transaction
from django.dispatch import Signal

config_changed = Signal()


def announce_config_change() -> None:
    # After commit, or another process could reload the old rows and cache them again.
    transaction.on_commit(lambda: config_changed.send(sender=None))
