"""The model signals that record every write to what staff configure, however it is made.

Connected in ``AuditConfig.ready()`` to the real model classes looked up by label (the audit
app is below tenants and routing and imports neither). Being bound to those classes, they
stay silent for the historical models of data migrations, which run before this app's table
may exist. Signals fire in the thread of the save, so nothing here runs on an event loop.
``QuerySet.update()`` and ``bulk_create`` send no signal: a service that changes an audited
row that way records it itself (``audit_action``/``audit_record``).
"""

from __future__ import annotations

from typing import Any

from django.apps import apps
from django.db import models
from django.db.models.signals import post_delete, post_save, pre_save

from audit.changes import diff, instance_row, stored_row
from audit.services import record_model_change

# Staff-configured models: tiers, tenants, providers, pooled keys, routes and model aliases.
AUDITED_MODELS = (
    "tenants.Tier",
    "tenants.Tenant",
    "routing.Provider",
    "routing.ProviderKey",
    "routing.ModelRoute",
    "routing.ModelAlias",
)

_BEFORE = "_audit_stored_row"


def _before_save(
    sender: type[models.Model], instance: models.Model, using: str, **kwargs: Any
) -> None:
    # The stored row, read before it is overwritten: the admin and the services have already
    # set the new values on the instance, so the instance cannot say what was there before.
    before = None if instance._state.adding else stored_row(sender, instance.pk, using=using)
    setattr(instance, _BEFORE, before)


def _after_save(
    sender: type[models.Model],
    instance: models.Model,
    created: bool,
    using: str,
    update_fields: frozenset[str] | None = None,
    **kwargs: Any,
) -> None:
    before = instance.__dict__.pop(_BEFORE, None)
    if created:
        before = None
    only = None if created else update_fields
    changes = diff(sender, before, instance_row(instance), only=only, instance=instance)
    action = "created" if before is None else "updated"
    record_model_change(action=action, instance=instance, changes=changes, using=using)


def _after_delete(
    sender: type[models.Model], instance: models.Model, using: str, **kwargs: Any
) -> None:
    changes = diff(sender, instance_row(instance), None, instance=instance)
    record_model_change(action="deleted", instance=instance, changes=changes, using=using)


def connect() -> None:
    for label in AUDITED_MODELS:
        try:
            model = apps.get_model(label)
        except LookupError:
            continue  # an app left out of INSTALLED_APPS (a trimmed test setting)
        uid = f"audit:{label}"
        pre_save.connect(_before_save, sender=model, dispatch_uid=uid)
        post_save.connect(_after_save, sender=model, dispatch_uid=uid)
        post_delete.connect(_after_delete, sender=model, dispatch_uid=uid)
