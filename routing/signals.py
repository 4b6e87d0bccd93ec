"""Any change to what a tenant context is built from drops the cached contexts.

The services that write tiers, tenants, providers, keys and routes announce each change
(``core.signals.announce_config_change``, sent once the transaction commits); this receiver
drops this process's contexts at once and tells every other process through the shared
generation value. There are no model-signal receivers: a write that bypasses the services
(``QuerySet.update()``, a shell ``save()``) is not announced, so nothing may bypass them.
"""

from __future__ import annotations

from typing import Any

from core.signals import config_changed
from routing.context import context_cache
from routing.generation import bump_config_generation


def _on_config_changed(**kwargs: Any) -> None:
    context_cache.invalidate()  # this process: at once
    bump_config_generation()  # every other process: at its next generation check


config_changed.connect(_on_config_changed, dispatch_uid="ctx-config-changed")
