from __future__ import annotations

import secrets
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models


class Tier(models.Model):
    """A plan: which models a tenant may call, and how much of them per week."""

    slug = models.SlugField(unique=True)
    name = models.CharField(max_length=100)
    weekly_token_cap = models.PositiveBigIntegerField(
        null=True, blank=True, help_text="Input + output tokens per week. Empty: no cap."
    )
    weekly_cost_cap_usd = models.DecimalField(
        max_digits=14,
        decimal_places=4,
        null=True,
        blank=True,
        validators=[MinValueValidator(Decimal(0))],
        help_text="USD per week at the routes' prices. Empty: no cap.",
    )
    requests_per_minute = models.PositiveIntegerField(
        default=60, help_text="0: no limit (to stop a tenant, suspend it)."
    )
    max_concurrent_requests = models.PositiveIntegerField(
        default=4, help_text="0: no limit (to stop a tenant, suspend it)."
    )
    default_max_tokens = models.PositiveIntegerField(
        default=4096,
        help_text="Completion allowance reserved (and sent) when a request names no max_tokens.",
    )
    rate_limits_fail_open = models.BooleanField(
        default=False,
        help_text=(
            "When Redis is unreachable, serve without requests-per-minute and concurrency "
            "limits (caps are then checked against the database ledger) instead of refusing "
            "with 503. Logged as an error on every such request."
        ),
    )
    alert_thresholds = models.CharField(
        max_length=64,
        blank=True,
        default="",
        help_text="Percentages of the weekly token or cost cap that raise a spend alert, "
        "comma-separated (50,80,100); each fires once per tenant per week. Empty: no alerts.",
    )
    downgrade_model = models.CharField(
        max_length=200,
        blank=True,
        default="",
        help_text="One of the tier's models that serves every request once a tenant is past "
        "the downgrade percentage (a soft cap), until the hard cap. Empty: no downgrade.",
    )
    downgrade_at_percent = models.PositiveSmallIntegerField(
        null=True,
        blank=True,
        help_text="The soft cap, as a percentage of the weekly token or cost cap.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug

    @property
    def thresholds(self) -> tuple[int, ...]:
        """The alert percentages, in order (validated by clean())."""
        return tuple(sorted({int(p) for p in self.alert_thresholds.split(",") if p.strip()}))

    def clean(self) -> None:
        parts = [p.strip() for p in self.alert_thresholds.split(",") if p.strip()]
        if not all(p.isdigit() and 1 <= int(p) <= 100 for p in parts):
            raise ValidationError(
                {"alert_thresholds": "Whole percentages from 1 to 100, comma-separated."}
            )
        if (self.downgrade_at_percent is None) != (not self.downgrade_model):
            raise ValidationError(
                {"downgrade_model": "Give both a downgrade model and its percentage, or neither."}
            )
        if self.downgrade_at_percent is not None and not 1 <= self.downgrade_at_percent <= 99:
            raise ValidationError({"downgrade_at_percent": "From 1 to 99 (100 is the hard cap)."})


def initial_token_version() -> int:
    # Random, not 1: tokens name a tenant by its slug, and a tenant deleted or renamed and
    # another created under the old slug must not inherit the old tenant's tokens.
    return secrets.randbelow(2**31 - 1) + 1


class Tenant(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        SUSPENDED = "suspended", "Suspended"

    slug = models.SlugField(unique=True, help_text="The JWT `sub` claim.")
    name = models.CharField(max_length=200)
    tier = models.ForeignKey(Tier, on_delete=models.PROTECT, related_name="tenants")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    weekly_token_cap_override = models.PositiveBigIntegerField(null=True, blank=True)
    weekly_cost_cap_usd_override = models.DecimalField(
        max_digits=14,
        decimal_places=4,
        null=True,
        blank=True,
        validators=[MinValueValidator(Decimal(0))],
    )
    requests_per_minute_override = models.PositiveIntegerField(null=True, blank=True)
    max_concurrent_requests_override = models.PositiveIntegerField(null=True, blank=True)
    token_version = models.PositiveIntegerField(
        default=initial_token_version,
        help_text="Tokens carry this as `ver`; bumping it revokes every older token.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug

    @property
    def is_active(self) -> bool:
        return self.status == self.Status.ACTIVE

    # The effective limits: the tenant's override where set, else the tier's.

    @property
    def weekly_token_cap(self) -> int | None:
        override = self.weekly_token_cap_override
        return self.tier.weekly_token_cap if override is None else override

    @property
    def weekly_cost_cap_usd(self) -> Decimal | None:
        override = self.weekly_cost_cap_usd_override
        return self.tier.weekly_cost_cap_usd if override is None else override

    @property
    def requests_per_minute(self) -> int:
        override = self.requests_per_minute_override
        return self.tier.requests_per_minute if override is None else override

    @property
    def max_concurrent_requests(self) -> int:
        override = self.max_concurrent_requests_override
        return self.tier.max_concurrent_requests if override is None else override
