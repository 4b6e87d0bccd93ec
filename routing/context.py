"""What the proxy needs to know about a tenant, loaded once and cached in process.

A :class:`TenantContext` is an immutable snapshot of the tenant, its tier's limits and the
tier's routes with their providers and (sealed) keys. Building it takes one thread hop and
four queries; the cache keeps it for ``PROXY_CONTEXT_TTL`` seconds so authenticating a
request touches no database. The services that write the models it is built from clear the
cache (they announce the change; routing/signals.py listens).
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field, replace
from decimal import Decimal

from channels.db import database_sync_to_async
from django.conf import settings
from django.http import HttpRequest

from core.errors import ProxyError
from core.singleflight import SingleFlight
from routing.generation import aconfig_generation
from routing.keyring import KeyringError, ProviderKeyAuth
from routing.models import ModelAlias, ModelRoute, Provider, ProviderKey
from tenants.auth import reject, token_from, verify_token
from tenants.limits import Limits
from tenants.models import Tenant
from usage.bill import Price

_AUTH_HEADER: dict[str, str] = {
    Provider.Kind.OPENAI: "authorization",
    Provider.Kind.ANTHROPIC: "x-api-key",
}


@dataclass(frozen=True, slots=True)
class PooledKey:
    id: int
    label: str
    last4: str
    weight: int
    auth: ProviderKeyAuth = field(repr=False)


@dataclass(frozen=True, slots=True)
class Upstream:
    id: int
    slug: str
    kind: str
    base_url: str
    connect_timeout: float
    first_byte_timeout: float
    idle_timeout: float
    total_timeout: float
    keys: tuple[PooledKey, ...]
    responses_api: bool = False  # an OpenAI-kind provider serving /responses itself


@dataclass(frozen=True, slots=True)
class Route:
    id: int
    model: str
    upstream_model: str
    priority: int
    provider: Upstream
    input_usd_per_mtok: Decimal
    output_usd_per_mtok: Decimal
    cache_read_usd_per_mtok: Decimal | None = None
    cache_write_usd_per_mtok: Decimal | None = None

    @property
    def price(self) -> Price:
        return Price(
            self.input_usd_per_mtok,
            self.output_usd_per_mtok,
            cache_read_usd_per_mtok=self.cache_read_usd_per_mtok,
            cache_write_usd_per_mtok=self.cache_write_usd_per_mtok,
        )


@dataclass(frozen=True, slots=True)
class TenantContext:
    tenant_id: int
    slug: str
    active: bool
    token_version: int
    tier_id: int
    tier_slug: str
    limits: Limits
    routes: dict[str, tuple[Route, ...]]  # public model name -> routes by priority
    # The tier's other names for its models: exact ones, and prefix patterns (the part before
    # the "*") longest first, so the most specific wins.
    aliases: dict[str, str] = field(default_factory=dict)
    patterns: tuple[tuple[str, str], ...] = ()

    def routes_for(self, model: str) -> tuple[Route, ...]:
        """The routes serving ``model`` by priority, under the name the tenant used for it.

        A route's own name wins, then an exact alias, then the longest matching pattern. An
        alias's routes carry the name asked for: the answer names the model the client asked
        for, and so does the ledger (the route it went to is recorded beside it).
        """
        found = self.routes.get(model)
        if found is not None:
            return found
        target = self.aliases.get(model)
        if target is None:
            target = next((t for prefix, t in self.patterns if model.startswith(prefix)), None)
        routes = self.routes.get(target, ()) if target is not None else ()
        return tuple(replace(route, model=model) for route in routes)

    @property
    def models(self) -> list[str]:
        """Every name the tenant may ask for by itself (patterns match more than they list)."""
        exact = [name for name, target in self.aliases.items() if target in self.routes]
        return sorted({*self.routes, *exact})


def load_context(slug: str) -> TenantContext | None:
    tenant = Tenant.objects.select_related("tier").filter(slug=slug).first()
    if tenant is None:
        return None
    tier = tenant.tier
    route_rows = list(
        ModelRoute.objects.filter(tier=tier, enabled=True, provider__enabled=True)
        .select_related("provider")
        .order_by("model", "priority", "id")
    )
    keys_by_provider: dict[int, list[PooledKey]] = defaultdict(list)
    header_by_provider = {row.provider_id: _AUTH_HEADER[row.provider.kind] for row in route_rows}
    for key in ProviderKey.objects.filter(provider_id__in=header_by_provider, enabled=True):
        try:
            auth = ProviderKeyAuth(
                key.secret_ciphertext, header=header_by_provider[key.provider_id]
            )
        except KeyringError:
            continue  # an undecryptable key is unusable; the others still serve
        keys_by_provider[key.provider_id].append(
            PooledKey(id=key.id, label=key.label, last4=key.last4, weight=key.weight, auth=auth)
        )
    routes: dict[str, list[Route]] = defaultdict(list)
    for row in route_rows:
        p = row.provider
        keys = tuple(keys_by_provider.get(p.id, ()))
        if not keys:
            continue  # a route whose provider has no usable key cannot serve
        upstream = Upstream(
            id=p.id,
            slug=p.slug,
            kind=p.kind,
            base_url=p.base_url.rstrip("/"),
            connect_timeout=p.connect_timeout,
            first_byte_timeout=p.first_byte_timeout,
            idle_timeout=p.idle_timeout,
            total_timeout=p.total_timeout,
            keys=keys,
            responses_api=p.responses_api,
        )
        routes[row.model].append(
            Route(
                id=row.id,
                model=row.model,
                upstream_model=row.upstream_model,
                priority=row.priority,
                provider=upstream,
                input_usd_per_mtok=row.input_usd_per_mtok,
                output_usd_per_mtok=row.output_usd_per_mtok,
                cache_read_usd_per_mtok=row.cache_read_usd_per_mtok,
                cache_write_usd_per_mtok=row.cache_write_usd_per_mtok,
            )
        )
    aliases: dict[str, str] = {}
    patterns: list[tuple[str, str]] = []
    for alias in ModelAlias.objects.filter(tier=tier):
        if alias.is_pattern:
            patterns.append((alias.name[:-1], alias.model))
        else:
            aliases[alias.name] = alias.model
    patterns.sort(key=lambda pattern: len(pattern[0]), reverse=True)

    limits = Limits(
        weekly_token_cap=tenant.weekly_token_cap,
        weekly_cost_cap_usd=tenant.weekly_cost_cap_usd,
        requests_per_minute=tenant.requests_per_minute,
        max_concurrent_requests=tenant.max_concurrent_requests,
        default_max_tokens=tier.default_max_tokens,
        rate_limits_fail_open=tier.rate_limits_fail_open,
        alert_thresholds=tier.thresholds,
        downgrade_model=tier.downgrade_model,
        downgrade_at_percent=tier.downgrade_at_percent,
    )
    return TenantContext(
        tenant_id=tenant.id,
        slug=tenant.slug,
        active=tenant.is_active,
        token_version=tenant.token_version,
        tier_id=tier.id,
        tier_slug=tier.slug,
        limits=limits,
        routes={model: tuple(rs) for model, rs in routes.items()},
        aliases=aliases,
        patterns=tuple(patterns),
    )


class ContextCache:
    """Per-process TTL cache of tenant contexts, with one in-flight load per tenant.

    Changes made in another process reach this one through a generation counter in Redis,
    read at most every PROXY_CONTEXT_POLL seconds (not per request); the TTL bounds
    staleness when Redis cannot say.
    """

    def __init__(self) -> None:
        self._entries: dict[str, tuple[float, TenantContext]] = {}
        self._loads: SingleFlight[str, TenantContext | None] = SingleFlight()
        self._generation = 0
        self._remote_generation: bytes | None = None
        self._polled_at = 0.0

    def invalidate(self) -> None:
        self._entries.clear()
        self._generation += 1

    @property
    def generation(self) -> int:
        """How many times this process's cache was invalidated (for tests and diagnostics)."""
        return self._generation

    async def _poll(self, now: float) -> None:
        self._polled_at = now
        remote = await aconfig_generation()
        if remote is not None and remote != self._remote_generation:
            if self._remote_generation is not None:
                self.invalidate()
            self._remote_generation = remote

    async def aget(self, slug: str) -> TenantContext | None:
        now = time.monotonic()
        if now - self._polled_at >= settings.PROXY_CONTEXT_POLL:
            await self._poll(now)
        hit = self._entries.get(slug)
        if hit is not None and hit[0] > now:
            return hit[1]
        return await self._loads.run(slug, lambda: self._aload(slug, now))

    async def _aload(self, slug: str, now: float) -> TenantContext | None:
        generation = self._generation
        context: TenantContext | None = await database_sync_to_async(load_context)(slug)
        ttl: float = settings.PROXY_CONTEXT_TTL
        # Unknown tenants are not cached, and neither is a load that raced an invalidation.
        if context is not None and ttl > 0 and generation == self._generation:
            self._entries[slug] = (now + ttl, context)
        return context


context_cache = ContextCache()


def model_not_found(model: str) -> ProxyError:
    # The same answer whether the model exists in another tier or nowhere.
    return ProxyError(
        404,
        f"The model `{model}` does not exist or you do not have access to it.",
        code="model_not_found",
        param="model",
    )


async def aauthenticate(request: HttpRequest) -> TenantContext:
    """The calling tenant's context, or ProxyError (401 bad token, 403 suspended/revoked)."""
    token = token_from(request)
    if not token:
        raise reject("no token")
    claims = verify_token(token)
    context = await context_cache.aget(claims["sub"])
    if context is None:
        raise reject("unknown tenant")
    if not context.active:
        raise ProxyError(403, "This tenant is suspended.", code="tenant_suspended")
    if claims["ver"] != context.token_version:
        raise ProxyError(403, "This token has been revoked.", code="token_revoked")
    return context
