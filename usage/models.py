from __future__ import annotations

from django.conf import settings
from django.db import models

from tenants.models import Tenant, Tier


class UsageRecord(models.Model):
    """The ledger: one row per request that reached the proxy's forwarding step."""

    class Status(models.TextChoices):
        OK = "ok", "Completed"
        CLIENT_DISCONNECTED = "client_disconnected", "Client disconnected"
        UPSTREAM_ERROR = "upstream_error", "Upstream error"
        UPSTREAM_TIMEOUT = "upstream_timeout", "Upstream timeout"
        # Its worker died before settling: billed by the lost-request policy (usage/limits.py).
        LOST = "lost", "Worker lost"

    request_id = models.CharField(max_length=64, unique=True)
    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="usage_records")
    tier = models.ForeignKey(Tier, on_delete=models.PROTECT, related_name="+")
    route = models.ForeignKey(
        "routing.ModelRoute", on_delete=models.SET_NULL, null=True, related_name="+"
    )
    provider_key = models.ForeignKey(
        "routing.ProviderKey", on_delete=models.SET_NULL, null=True, related_name="usage_records"
    )
    model = models.CharField(max_length=200, help_text="The public model name requested.")
    provider_slug = models.CharField(max_length=50)
    upstream_model = models.CharField(max_length=200)
    stream = models.BooleanField()
    input_tokens = models.PositiveBigIntegerField(default=0)
    output_tokens = models.PositiveBigIntegerField(default=0)
    # Parts of the counts above, by kind: cached prompt tokens read and written (within
    # input_tokens, which counts every prompt token), reasoning tokens (within output_tokens).
    cache_read_tokens = models.PositiveBigIntegerField(default=0)
    cache_write_tokens = models.PositiveBigIntegerField(default=0)
    reasoning_tokens = models.PositiveBigIntegerField(default=0)
    wire_format = models.CharField(
        max_length=32,
        default="openai-chat",
        help_text="The API the client spoke: openai-chat or anthropic-messages.",
    )
    usage_reported = models.BooleanField(
        default=True, help_text="False when the counts are the proxy's own (stream cut short)."
    )
    usage_invalid = models.BooleanField(
        default=False,
        help_text="The provider's usage figures were impossible (negative, huge, not integers, "
        "missing); the proxy's estimate was billed.",
    )
    cost_usd = models.DecimalField(max_digits=20, decimal_places=9, default=0)
    status = models.CharField(max_length=32, choices=Status.choices)
    http_status = models.PositiveSmallIntegerField()
    attempts = models.PositiveSmallIntegerField(default=1)
    latency_ms = models.PositiveIntegerField()
    ttft_ms = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Time to the first byte of the answer sent to the client (a stream's first "
        "content event; a whole answer's body); empty when none was sent.",
    )
    error_code = models.CharField(max_length=64, blank=True, default="")
    error_message = models.CharField(
        max_length=500, blank=True, default="", help_text="What the client was told (redacted)."
    )
    downgraded_from = models.CharField(
        max_length=200,
        blank=True,
        default="",
        help_text="The model asked for, when the tier's soft cap sent it to its downgrade model.",
    )
    created_at = models.DateTimeField(db_index=True)
    week = models.CharField(max_length=10, help_text="The usage week (its start date).")
    counted = models.BooleanField(
        default=True,
        help_text="False while a row written straight to the database (Redis unreachable) "
        "has not been added to the live counters yet.",
    )

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["tenant", "created_at"], name="usage_tenant_time"),
            models.Index(fields=["tenant", "week"], name="usage_tenant_week"),
            models.Index(
                fields=["counted"], condition=models.Q(counted=False), name="usage_uncounted"
            ),
        ]

    def __str__(self) -> str:
        return self.request_id

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


class WeekReset(models.Model):
    """Staff forgave a tenant's usage so far this week (the ledger itself stays untouched)."""

    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="week_resets")
    week = models.CharField(max_length=10)
    tokens = models.PositiveBigIntegerField()
    cost_usd = models.DecimalField(max_digits=20, decimal_places=9)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.tenant} {self.week}"
