"""The bill of one request, as usage receives it: neutral, typed, and priced once.

Whoever serves a request (routing/pipeline.py) fills a :class:`Bill` and hands it to
``usage.limits.asettle``; usage knows nothing of providers, codecs or streams. Money is
counted in nano-dollars, exactly as the counters and the ledger hold it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal
from typing import Any

NANOS = Decimal(1_000_000_000)
_MTOK = Decimal(1_000_000)


def to_nanos(usd: Decimal, *, ceiling: bool = False) -> int:
    return int((usd * NANOS).to_integral_value(ROUND_CEILING if ceiling else ROUND_HALF_UP))


@dataclass(frozen=True, slots=True)
class Price:
    """A route's prices, in US dollars per million tokens."""

    input_usd_per_mtok: Decimal
    output_usd_per_mtok: Decimal
    # Cached prompt tokens read and written, when they are priced apart from other input.
    cache_read_usd_per_mtok: Decimal | None = None
    cache_write_usd_per_mtok: Decimal | None = None

    @property
    def dearest_input(self) -> Decimal:
        """The most a prompt token may cost (a reservation cannot know which get cached)."""
        prices = (self.cache_read_usd_per_mtok, self.cache_write_usd_per_mtok)
        return max([self.input_usd_per_mtok, *(p for p in prices if p is not None)])

    def cost(
        self,
        *,
        input_tokens: int,
        output_tokens: int,
        cache_read_tokens: int = 0,
        cache_write_tokens: int = 0,
    ) -> Decimal:
        """``input_tokens`` counts every prompt token, cached reads and writes included."""
        read = self.cache_read_usd_per_mtok
        write = self.cache_write_usd_per_mtok
        read_tokens = cache_read_tokens if read is not None else 0
        write_tokens = cache_write_tokens if write is not None else 0
        plain = max(input_tokens - read_tokens - write_tokens, 0)
        total = plain * self.input_usd_per_mtok + output_tokens * self.output_usd_per_mtok
        if read is not None:
            total += read_tokens * read
        if write is not None:
            total += write_tokens * write
        return total / _MTOK


@dataclass(frozen=True, slots=True)
class Tokens:
    """Tokens by kind. ``input`` counts every prompt token (cached ones too): it is billed."""

    input: int = 0
    output: int = 0
    cache_read: int = 0
    cache_write: int = 0
    reasoning: int = 0
    reported: bool = False  # the provider's own count, not the proxy's estimate
    invalid: bool = False  # the provider's count was impossible; the estimate was billed

    @property
    def total(self) -> int:
        return self.input + self.output


@dataclass(frozen=True, slots=True)
class Bill:
    """One admitted request: who, what it went to, what it used, how it ended."""

    request_id: str
    tenant_id: int
    tier_id: int
    route_id: int
    provider_key_id: int
    model: str  # the public name the tenant asked for
    provider_slug: str
    upstream_model: str
    stream: bool
    tokens: Tokens
    price: Price
    status: str
    http_status: int
    attempts: int
    latency_ms: int
    created_at: datetime
    week: str
    wire_format: str = "openai-chat"  # the API the client spoke
    ttft_ms: int | None = None  # to the first byte sent to the client, if any was
    error_code: str = ""  # how it failed, as the client was told (redacted)
    error_message: str = ""
    downgraded_from: str = ""  # the model asked for, when a soft cap downgraded it

    @property
    def cost_nanos(self) -> int:
        tokens = self.tokens
        cost = self.price.cost(
            input_tokens=tokens.input,
            output_tokens=tokens.output,
            cache_read_tokens=tokens.cache_read,
            cache_write_tokens=tokens.cache_write,
        )
        return to_nanos(cost)

    def record(self) -> dict[str, Any]:
        """The ledger entry: the UsageRecord's fields, JSON-ready."""
        return {
            "request_id": self.request_id,
            "tenant_id": self.tenant_id,
            "tier_id": self.tier_id,
            "route_id": self.route_id,
            "provider_key_id": self.provider_key_id,
            "model": self.model,
            "provider_slug": self.provider_slug,
            "upstream_model": self.upstream_model,
            "stream": self.stream,
            "input_tokens": self.tokens.input,
            "output_tokens": self.tokens.output,
            "cache_read_tokens": self.tokens.cache_read,
            "cache_write_tokens": self.tokens.cache_write,
            "reasoning_tokens": self.tokens.reasoning,
            "wire_format": self.wire_format,
            "ttft_ms": self.ttft_ms,
            "error_code": self.error_code,
            "error_message": self.error_message,
            "downgraded_from": self.downgraded_from,
            "usage_reported": self.tokens.reported,
            "usage_invalid": self.tokens.invalid,
            "cost_nanos": self.cost_nanos,
            "status": self.status,
            "http_status": self.http_status,
            "attempts": self.attempts,
            "latency_ms": self.latency_ms,
            "created_at": self.created_at.isoformat(),
            "week": self.week,
        }
