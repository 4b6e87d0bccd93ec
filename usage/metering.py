"""The bill of one forwarded request: opened when it is admitted, settled exactly once."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.utils import timezone

from routing.adapters.base import StreamTranslator, Usage
from routing.context import TenantContext
from routing.upstream import Attempt
from usage.limits import Admission, asettle, to_nanos
from usage.models import UsageRecord


@dataclass
class Meter:
    admission: Admission
    context: TenantContext
    attempt: Attempt  # the route and key of the last attempt, and how many there were
    stream: bool
    prompt_estimate: int
    usage: Usage = field(default_factory=Usage)
    status: str = UsageRecord.Status.OK
    http_status: int = 200
    created_at: datetime = field(default_factory=timezone.now)
    started: float = field(default_factory=time.monotonic)
    settled: bool = False

    def failed(self, *, status: str, http_status: int) -> None:
        self.status, self.http_status = status, http_status

    def take_stream_usage(self, translator: StreamTranslator) -> None:
        """The stream's usage; where the provider never reported it, the proxy's own count."""
        usage = translator.usage
        if not usage.reported:
            # Cut short: providers stream about one token per content delta, and the
            # prompt estimate stands in where the provider never said (OpenAI-style APIs
            # report usage only at the end).
            usage.output_tokens = max(usage.output_tokens, translator.content_deltas)
            if usage.input_tokens == 0 and translator.content_deltas:
                usage.input_tokens = self.prompt_estimate
        self.usage = usage

    def record(self) -> dict[str, Any]:
        usage = self.usage
        route, key = self.attempt.route, self.attempt.key
        cost = route.cost(input_tokens=usage.input_tokens, output_tokens=usage.output_tokens)
        return {
            "request_id": self.admission.request_id,
            "tenant_id": self.context.tenant_id,
            "tier_id": self.context.tier_id,
            "route_id": route.id,
            "provider_key_id": key.id,
            "model": route.model,
            "provider_slug": route.provider.slug,
            "upstream_model": route.upstream_model,
            "stream": self.stream,
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
            "usage_reported": usage.reported,
            "cost_nanos": to_nanos(cost),
            "status": self.status,
            "http_status": self.http_status,
            "attempts": self.attempt.count,
            "latency_ms": int((time.monotonic() - self.started) * 1000),
            "created_at": self.created_at.isoformat(),
            "week": self.admission.week.id,
        }

    async def asettle(self) -> None:
        """Bill the request: once; a second call is a no-op."""
        if self.settled:
            return
        self.settled = True
        await asettle(self.admission, self.record())
