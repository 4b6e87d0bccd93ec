from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models

from tenants.models import Tier


class Provider(models.Model):
    class Kind(models.TextChoices):
        OPENAI = "openai", "OpenAI-compatible (chat completions)"
        ANTHROPIC = "anthropic", "Anthropic (Messages API)"

    slug = models.SlugField(unique=True)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    base_url = models.URLField(
        help_text="As each SDK expects it: https://api.moonshot.ai/v1, https://api.anthropic.com"
    )
    connect_timeout = models.FloatField(
        default=5.0, validators=[MinValueValidator(0.1)], help_text="Seconds to connect."
    )
    first_byte_timeout = models.FloatField(
        default=60.0,
        validators=[MinValueValidator(0.1)],
        help_text="Seconds from sending the request to the provider's answer starting.",
    )
    idle_timeout = models.FloatField(
        default=60.0,
        validators=[MinValueValidator(0.1)],
        help_text="Seconds a started answer may go without new content before it is cut.",
    )
    total_timeout = models.FloatField(
        default=600.0,
        validators=[MinValueValidator(1)],
        help_text="Seconds for the whole request, failover attempts and streaming included.",
    )
    enabled = models.BooleanField(default=True)
    responses_api = models.BooleanField(
        default=False,
        help_text="This OpenAI-kind provider serves the Responses API itself "
        "(POST {base_url}/responses): Responses clients are passed through, not translated "
        "to chat completions.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug

    def clean(self) -> None:
        # A request may live as long as total_timeout; its reservation and concurrency lease
        # must live longer, or they would expire under a request still running.
        if self.total_timeout and self.total_timeout >= settings.PROXY_RESERVATION_TTL:
            raise ValidationError(
                {
                    "total_timeout": f"Must be under PROXY_RESERVATION_TTL "
                    f"({settings.PROXY_RESERVATION_TTL} s)."
                }
            )
        if self.responses_api and self.kind != self.Kind.OPENAI:
            raise ValidationError({"responses_api": "Only OpenAI-kind providers serve it."})


class ProviderKey(models.Model):
    """A pooled provider API key. The secret is stored only as MultiFernet ciphertext."""

    provider = models.ForeignKey(Provider, on_delete=models.CASCADE, related_name="keys")
    label = models.CharField(max_length=100)
    secret_ciphertext = models.TextField(editable=False)
    last4 = models.CharField(max_length=4, editable=False)
    weight = models.PositiveIntegerField(default=1, validators=[MinValueValidator(1)])
    enabled = models.BooleanField(default=True)
    disabled_reason = models.CharField(
        max_length=200,
        blank=True,
        help_text="Set when the proxy disabled the key itself (the provider refused it).",
    )
    last_error = models.CharField(max_length=300, blank=True)
    last_error_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["provider__slug", "label"]
        constraints = [
            models.UniqueConstraint(fields=["provider", "label"], name="providerkey_unique_label")
        ]

    def __str__(self) -> str:
        return f"{self.provider.slug}/{self.label} ••••{self.last4}"

    @property
    def masked(self) -> str:
        return f"••••{self.last4}"


class ModelRoute(models.Model):
    """Maps a public model name within a tier to a provider's model; priority orders fallbacks."""

    tier = models.ForeignKey(Tier, on_delete=models.CASCADE, related_name="routes")
    model = models.CharField(max_length=200, help_text="The model name tenants send.")
    provider = models.ForeignKey(Provider, on_delete=models.PROTECT, related_name="routes")
    upstream_model = models.CharField(max_length=200)
    priority = models.PositiveIntegerField(default=0, help_text="Lower is tried first.")
    input_usd_per_mtok = models.DecimalField(
        max_digits=12, decimal_places=6, default=Decimal(0), validators=[MinValueValidator(0)]
    )
    output_usd_per_mtok = models.DecimalField(
        max_digits=12, decimal_places=6, default=Decimal(0), validators=[MinValueValidator(0)]
    )
    # Prompt-caching prices (Anthropic's cache reads are a tenth of the input price, its
    # writes a quarter more; OpenAI's cached input is half or less). Unset: the input price.
    cache_read_usd_per_mtok = models.DecimalField(
        max_digits=12,
        decimal_places=6,
        null=True,
        blank=True,
        validators=[MinValueValidator(0)],
        help_text="Price of cached prompt tokens read; empty means the input price.",
    )
    cache_write_usd_per_mtok = models.DecimalField(
        max_digits=12,
        decimal_places=6,
        null=True,
        blank=True,
        validators=[MinValueValidator(0)],
        help_text="Price of prompt tokens written to the cache; empty means the input price.",
    )
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["tier__slug", "model", "priority"]
        constraints = [
            models.UniqueConstraint(
                fields=["tier", "model", "provider", "upstream_model"], name="route_unique_target"
            )
        ]

    def __str__(self) -> str:
        return f"{self.tier.slug}:{self.model} → {self.provider.slug}/{self.upstream_model}"


class ModelAlias(models.Model):
    """Another name a tier's tenants may use for one of its models.

    Agents ask for the models they were built for (Claude Code for ``claude-opus-4-8``, a
    framework for its default): an alias maps such a name to a model the tier routes, so an
    agent works without being reconfigured. ``name`` is either exact or a prefix pattern
    ending in ``*`` (``claude-*``); an exact route or alias wins over a pattern, and the
    longest matching pattern over shorter ones.
    """

    tier = models.ForeignKey(Tier, on_delete=models.CASCADE, related_name="aliases")
    name = models.CharField(
        max_length=200,
        help_text="The name tenants send, or a prefix pattern ending in * (claude-*).",
    )
    model = models.CharField(max_length=200, help_text="The tier's model it stands for.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["tier__slug", "name"]
        verbose_name_plural = "model aliases"
        constraints = [models.UniqueConstraint(fields=["tier", "name"], name="alias_unique_name")]

    def __str__(self) -> str:
        return f"{self.tier.slug}:{self.name} → {self.model}"

    def clean(self) -> None:
        # "*" alone is allowed: every name the tier does not know goes to one model.
        if "*" in self.name[:-1]:
            raise ValidationError({"name": "Only a trailing * is allowed (claude-*)."})
        if "*" in self.model:
            raise ValidationError({"model": "The target is one of the tier's model names."})
        # A typo would send every matching name to a 404: the target must be routed already.
        routed = ModelRoute.objects.filter(tier_id=self.tier_id, model=self.model).exists()
        if self.tier_id is not None and not routed:
            raise ValidationError({"model": "The tier has no route for this model."})

    @property
    def is_pattern(self) -> bool:
        return self.name.endswith("*")
