from __future__ import annotations

from decimal import Decimal

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


_NANOS = Decimal(1_000_000_000)


class AlertEvent(models.Model):
    """A spend alert: a tenant's usage this week reached one of its tier's thresholds.

    Written by the alert delivery worker (usage/alerts.py) from the Redis outbox, once per
    event id (one per tenant, week, kind and threshold); the webhook delivery's progress is
    kept on the row (``attempts``, ``delivered_at``, ``last_error``).
    """

    class Kind(models.TextChoices):
        TOKENS = "tokens", "Tokens"
        COST = "cost", "Cost"

    event_id = models.CharField(
        max_length=100, unique=True, help_text="The webhook-id: stable across retries."
    )
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="alert_events")
    tier = models.ForeignKey(Tier, on_delete=models.SET_NULL, null=True, related_name="+")
    week = models.CharField(max_length=10, help_text="The usage week (its start date).")
    threshold = models.PositiveSmallIntegerField(help_text="Percent of the weekly cap.")
    kind = models.CharField(max_length=10, choices=Kind.choices)
    used = models.PositiveBigIntegerField(
        help_text="The week's usage when the threshold was reached: tokens, or nano-dollars."
    )
    cap = models.PositiveBigIntegerField(help_text="The weekly cap: tokens, or nano-dollars.")
    created_at = models.DateTimeField(db_index=True, help_text="When it was reached.")
    delivered_at = models.DateTimeField(
        null=True, blank=True, help_text="When the webhook answered 2xx; empty: not (yet)."
    )
    attempts = models.PositiveIntegerField(default=0, help_text="Webhook deliveries tried.")
    last_error = models.CharField(max_length=500, blank=True, default="")

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["tenant", "week"], name="alert_tenant_week")]

    def __str__(self) -> str:
        return self.event_id

    @property
    def percent_used(self) -> float:
        return 100 * self.used / self.cap if self.cap else 0.0

    @property
    def summary(self) -> str:
        """One line for a notice: what was reached, in the kind's unit."""
        if self.kind == self.Kind.COST:
            # Exact: nano-dollars as decimals, to the cent's hundredth (the caps' precision).
            used = f"${Decimal(self.used) / _NANOS:,.4f}"
            cap = f"${Decimal(self.cap) / _NANOS:,.4f}"
            what = "cost"
        else:
            used, cap, what = f"{self.used:,}", f"{self.cap:,} tokens", "token"
        return f"{self.threshold}% of the weekly {what} cap reached ({used} of {cap})"
