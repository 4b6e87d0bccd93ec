# DRF and drf-spectacular ship no type hints: their base classes are Any to mypy.
# mypy: disallow-subclassing-any=False
"""What the API takes and gives, field by field (the OpenAPI schema is built from these).

Inputs and outputs are separate serializers: an output says exactly what a response holds
(read-only, nullable where it may be null), an input exactly what a request may send.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from api.services import is_deactivated
from routing.models import ModelRoute
from tenants.models import Tenant, Tier
from usage.models import UsageRecord

# The database's bounds for the override fields (PositiveBigIntegerField, PositiveIntegerField,
# DecimalField(14, 4)): a value past them is a 400 here, not an error from the database.
_BIG = 2**63 - 1
_INT = 2**31 - 1

TENANT_STATUSES = ("active", "suspended", "deactivated")


def _cost(**kwargs: Any) -> serializers.DecimalField:
    # USD as a decimal string, exact to the nano-dollar the ledger holds.
    return serializers.DecimalField(max_digits=30, decimal_places=9, read_only=True, **kwargs)


def _cap(**kwargs: Any) -> serializers.DecimalField:
    return serializers.DecimalField(
        max_digits=14, decimal_places=4, read_only=True, allow_null=True, **kwargs
    )


# --- errors -------------------------------------------------------------------------------


class ErrorBodySerializer(serializers.Serializer[Any]):
    code = serializers.CharField(help_text="Stable: what code may branch on.")
    message = serializers.CharField(help_text="For people; its wording may change.")
    detail = serializers.DictField(
        required=False,
        child=serializers.ListField(child=serializers.CharField()),
        help_text="Validation errors only: each field's messages.",
    )


class ErrorSerializer(serializers.Serializer[Any]):
    error = ErrorBodySerializer()


# --- tenants ------------------------------------------------------------------------------


class TenantSerializer(serializers.Serializer[Tenant]):
    slug = serializers.SlugField(read_only=True, help_text="The tenant's id, and its tokens' sub.")
    name = serializers.CharField(read_only=True)
    tier = serializers.SlugField(source="tier.slug", read_only=True)
    status = serializers.SerializerMethodField()
    weekly_token_cap_override = serializers.IntegerField(read_only=True, allow_null=True)
    weekly_cost_cap_usd_override = _cap()
    requests_per_minute_override = serializers.IntegerField(read_only=True, allow_null=True)
    max_concurrent_requests_override = serializers.IntegerField(read_only=True, allow_null=True)
    weekly_token_cap = serializers.IntegerField(
        read_only=True, allow_null=True, help_text="In force: the override, else the tier's."
    )
    weekly_cost_cap_usd = _cap(help_text="In force: the override, else the tier's.")
    requests_per_minute = serializers.IntegerField(read_only=True)
    max_concurrent_requests = serializers.IntegerField(read_only=True)
    created_at = serializers.DateTimeField(read_only=True)
    updated_at = serializers.DateTimeField(read_only=True)

    @extend_schema_field(
        serializers.ChoiceField(
            choices=TENANT_STATUSES,
            help_text="deactivated: deleted through the API (suspended, tokens revoked, kept).",
        )
    )
    def get_status(self, tenant: Tenant) -> str:
        return "deactivated" if is_deactivated(tenant) else tenant.status


class _Overrides(serializers.Serializer[Any]):
    weekly_token_cap_override = serializers.IntegerField(
        required=False, allow_null=True, min_value=0, max_value=_BIG
    )
    weekly_cost_cap_usd_override = serializers.DecimalField(
        required=False, allow_null=True, max_digits=14, decimal_places=4, min_value=0
    )
    requests_per_minute_override = serializers.IntegerField(
        required=False, allow_null=True, min_value=0, max_value=_INT
    )
    max_concurrent_requests_override = serializers.IntegerField(
        required=False, allow_null=True, min_value=0, max_value=_INT
    )


class TenantCreateSerializer(_Overrides):
    slug = serializers.SlugField(max_length=50, help_text="Letters, digits, - and _.")
    name = serializers.CharField(max_length=200)
    tier = serializers.SlugRelatedField(slug_field="slug", queryset=Tier.objects.all())


class TenantUpdateSerializer(_Overrides):
    """Any of these; the slug never changes (tokens name it) and the tier moves with
    POST .../tier/."""

    name = serializers.CharField(max_length=200, required=False)


class TierChangeSerializer(serializers.Serializer[Any]):
    tier = serializers.SlugRelatedField(slug_field="slug", queryset=Tier.objects.all())


class TokenIssueSerializer(serializers.Serializer[Any]):
    ttl_seconds = serializers.IntegerField(
        min_value=1,
        max_value=settings.JWT_MAX_LIFETIME,
        help_text="How long the token lives, at most JWT_MAX_LIFETIME seconds.",
    )


class IssuedTokenSerializer(serializers.Serializer[Any]):
    token = serializers.CharField(read_only=True, help_text="The tenant's JWT, shown once.")
    token_type = serializers.ChoiceField(choices=["Bearer"], read_only=True)
    tenant = serializers.SlugField(read_only=True)
    jti = serializers.CharField(read_only=True, help_text="The token's id (audit rows name it).")
    expires_at = serializers.DateTimeField(read_only=True)


class WeekResetSerializer(serializers.Serializer[Any]):
    tenant = serializers.SlugField(source="tenant.slug", read_only=True)
    week = serializers.CharField(read_only=True, help_text="The usage week's start date.")
    forgiven_tokens = serializers.IntegerField(source="tokens", read_only=True)
    forgiven_cost_usd = _cost(source="cost_usd")
    created_at = serializers.DateTimeField(read_only=True)


# --- tiers and routes ---------------------------------------------------------------------


class TierSerializer(serializers.Serializer[Tier]):
    slug = serializers.SlugField(read_only=True)
    name = serializers.CharField(read_only=True)
    weekly_token_cap = serializers.IntegerField(read_only=True, allow_null=True)
    weekly_cost_cap_usd = _cap()
    requests_per_minute = serializers.IntegerField(read_only=True)
    max_concurrent_requests = serializers.IntegerField(read_only=True)
    default_max_tokens = serializers.IntegerField(read_only=True)
    alert_thresholds = serializers.ListField(
        source="thresholds", child=serializers.IntegerField(), read_only=True
    )
    downgrade_model = serializers.CharField(read_only=True)
    downgrade_at_percent = serializers.IntegerField(read_only=True, allow_null=True)
    created_at = serializers.DateTimeField(read_only=True)
    updated_at = serializers.DateTimeField(read_only=True)


class RouteSerializer(serializers.Serializer[ModelRoute]):
    id = serializers.IntegerField(read_only=True)
    tier = serializers.SlugField(source="tier.slug", read_only=True)
    model = serializers.CharField(read_only=True, help_text="The model name tenants send.")
    provider = serializers.SlugField(source="provider.slug", read_only=True)
    provider_kind = serializers.CharField(source="provider.kind", read_only=True)
    upstream_model = serializers.CharField(read_only=True)
    priority = serializers.IntegerField(read_only=True, help_text="Lower is tried first.")
    input_usd_per_mtok = serializers.DecimalField(max_digits=12, decimal_places=6, read_only=True)
    output_usd_per_mtok = serializers.DecimalField(max_digits=12, decimal_places=6, read_only=True)
    cache_read_usd_per_mtok = serializers.DecimalField(
        max_digits=12, decimal_places=6, read_only=True, allow_null=True
    )
    cache_write_usd_per_mtok = serializers.DecimalField(
        max_digits=12, decimal_places=6, read_only=True, allow_null=True
    )
    enabled = serializers.BooleanField(read_only=True)


# --- usage --------------------------------------------------------------------------------


class TenantWeekSerializer(serializers.Serializer[Any]):
    tenant = serializers.SlugField(read_only=True)
    week = serializers.CharField(read_only=True, help_text="The usage week's start date.")
    starts_at = serializers.DateTimeField(read_only=True)
    ends_at = serializers.DateTimeField(read_only=True, help_text="Exclusive.")
    tokens = serializers.IntegerField(
        read_only=True, help_text="Input + output tokens, net of resets."
    )
    cost_usd = _cost(help_text="Net of resets.")
    reserved_tokens = serializers.IntegerField(
        read_only=True, help_text="Held by requests still running."
    )
    forgiven_tokens = serializers.IntegerField(read_only=True)
    forgiven_cost_usd = _cost()
    weekly_token_cap = serializers.IntegerField(read_only=True, allow_null=True)
    weekly_cost_cap_usd = _cap()
    live = serializers.BooleanField(
        read_only=True, help_text="Read from the live counters (else from the ledger)."
    )


class ModelUsageSerializer(serializers.Serializer[Any]):
    model = serializers.CharField(read_only=True)
    requests = serializers.IntegerField(read_only=True)
    errors = serializers.IntegerField(read_only=True, help_text="Requests that did not end ok.")
    input_tokens = serializers.IntegerField(read_only=True)
    output_tokens = serializers.IntegerField(read_only=True)
    cache_read_tokens = serializers.IntegerField(read_only=True)
    cache_write_tokens = serializers.IntegerField(read_only=True)
    reasoning_tokens = serializers.IntegerField(read_only=True)
    cost_usd = _cost()


class TenantModelsSerializer(serializers.Serializer[Any]):
    tenant = serializers.SlugField(read_only=True)
    week = serializers.CharField(read_only=True)
    models = ModelUsageSerializer(many=True, read_only=True)


class UsageRecordSerializer(serializers.Serializer[UsageRecord]):
    request_id = serializers.CharField(read_only=True)
    created_at = serializers.DateTimeField(read_only=True)
    week = serializers.CharField(read_only=True)
    tenant = serializers.SlugField(source="tenant.slug", read_only=True)
    tier = serializers.SlugField(source="tier.slug", read_only=True)
    model = serializers.CharField(read_only=True)
    downgraded_from = serializers.CharField(read_only=True)
    provider = serializers.CharField(source="provider_slug", read_only=True)
    upstream_model = serializers.CharField(read_only=True)
    wire_format = serializers.CharField(read_only=True)
    stream = serializers.BooleanField(read_only=True)
    status = serializers.ChoiceField(choices=UsageRecord.Status.choices, read_only=True)
    http_status = serializers.IntegerField(read_only=True)
    error_code = serializers.CharField(read_only=True)
    input_tokens = serializers.IntegerField(read_only=True)
    output_tokens = serializers.IntegerField(read_only=True)
    cache_read_tokens = serializers.IntegerField(read_only=True)
    cache_write_tokens = serializers.IntegerField(read_only=True)
    reasoning_tokens = serializers.IntegerField(read_only=True)
    cost_usd = _cost()
    attempts = serializers.IntegerField(read_only=True)
    latency_ms = serializers.IntegerField(read_only=True)
    ttft_ms = serializers.IntegerField(read_only=True, allow_null=True)
    usage_reported = serializers.BooleanField(read_only=True)


# --- query parameters ---------------------------------------------------------------------


class TenantFilterSerializer(serializers.Serializer[Any]):
    status = serializers.ChoiceField(choices=TENANT_STATUSES, required=False)
    tier = serializers.SlugField(required=False)


class RouteFilterSerializer(serializers.Serializer[Any]):
    tier = serializers.SlugField(required=False)
    model = serializers.CharField(required=False, max_length=200)


class WeekQuerySerializer(serializers.Serializer[Any]):
    week = serializers.CharField(
        required=False,
        max_length=10,
        help_text="2026-W48 (ISO week) or a date in the week (2026-11-25); default: this week.",
    )


class RecordFilterSerializer(serializers.Serializer[Any]):
    tenant = serializers.SlugField(required=False)
    model = serializers.CharField(required=False, max_length=200)
    status = serializers.ChoiceField(choices=UsageRecord.Status.choices, required=False)
    week = serializers.CharField(
        required=False, max_length=10, help_text="2026-W48 or a date in the week."
    )
    since = serializers.DateTimeField(required=False, help_text="Inclusive.")
    until = serializers.DateTimeField(required=False, help_text="Exclusive.")
