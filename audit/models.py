from __future__ import annotations

from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.utils import timezone


class AuditEntry(models.Model):
    """One staff change or action: who, when, what, before -> after. Append-only.

    ``changes`` maps a field to ``[before, after]`` (``None`` on the missing side of a create
    or delete). It never holds a secret: a secret field is recorded only as having changed.
    The target is named by label and id, not a foreign key, so an entry outlives what it
    describes (a deleted tenant's history stays) and the audit app depends on no other app.
    """

    at = models.DateTimeField(default=timezone.now, db_index=True)
    actor = models.CharField(
        max_length=200,
        db_index=True,
        help_text="A staff username, command:<name>, api:<credential> or system.",
    )
    actor_user_id = models.BigIntegerField(
        null=True, blank=True, help_text="The staff user's id, when a user acted."
    )
    action = models.CharField(
        max_length=64,
        db_index=True,
        help_text="created, updated, deleted, or a named action (tenant.suspended).",
    )
    target_type = models.CharField(
        max_length=100, blank=True, help_text="app_label.Model, as tenants.Tenant."
    )
    target_id = models.CharField(max_length=64, blank=True)
    target_repr = models.CharField(max_length=200, blank=True)
    changes = models.JSONField(default=dict, blank=True, encoder=DjangoJSONEncoder)
    note = models.TextField(blank=True)

    class Meta:
        ordering = ["-at", "-id"]
        verbose_name = "audit entry"
        verbose_name_plural = "audit log"
        indexes = [models.Index(fields=["target_type", "target_id"], name="audit_target")]

    def __str__(self) -> str:
        target = f" {self.target_type} {self.target_repr}" if self.target_type else ""
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.actor}: {self.action}{target}"
