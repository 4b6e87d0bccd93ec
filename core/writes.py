"""The two steps every service that changes what a tenant context is built from takes."""

from __future__ import annotations

from typing import Any

from django.db import models

from core.signals import announce_config_change


def save_and_announce(obj: models.Model, update_fields: list[str] | None = None) -> None:
    """Validate and save ``obj``, and announce that tenant contexts changed."""
    obj.full_clean()
    obj.save(update_fields=update_fields)
    announce_config_change()


def apply_changes(obj: models.Model, changes: dict[str, Any]) -> bool:
    """Apply ``changes`` to ``obj`` and save only those fields; False when there were none."""
    if not changes:
        return False
    for name, value in changes.items():
        setattr(obj, name, value)
    save_and_announce(obj, update_fields=[*changes, "updated_at"])
    return True
