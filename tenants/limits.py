"""A tenant's effective limits: its tier's, with the tenant's overrides applied."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Limits:
    weekly_token_cap: int | None
    weekly_cost_cap_usd: Decimal | None
    requests_per_minute: int
    max_concurrent_requests: int
    default_max_tokens: int
    rate_limits_fail_open: bool
    # Spend alerts and the soft cap (the tier's; see tenants.models.Tier).
    alert_thresholds: tuple[int, ...] = ()
    downgrade_model: str = ""
    downgrade_at_percent: int | None = None


class Account(Protocol):
    """Who a request is admitted for: what admission and settlement need of a tenant."""

    @property
    def tenant_id(self) -> int: ...
    @property
    def slug(self) -> str: ...
    @property
    def limits(self) -> Limits: ...
