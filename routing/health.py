"""Which pooled keys may be used right now: the key pool heals itself.

A key the provider answers 429 rests for the provider's ``retry-after`` (or
PROXY_KEY_COOLDOWN); a key it refuses (401/403) is switched off, in the database too, with the
reason for staff to see. Both are shared with every proxy process through Redis, which each
process reads at most every PROXY_CONTEXT_POLL seconds (and at once in the process that saw
the error).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Sequence

from channels.db import database_sync_to_async
from django.conf import settings

from core import metrics
from core.redis import RedisFailure, async_client, sync_client
from routing.context import PooledKey

logger = logging.getLogger(__name__)

# pooled key id -> "cool:<until ms>" or "off", shared by every process. One key for the whole
# pool, so on a Redis Cluster it sits on one master: each process reads it at most every
# PROXY_CONTEXT_POLL, and it is never in a script with a tenant's keys (another slot). That
# master down, a process learns of a key's trouble only from its own requests with it; a
# refused key still leaves every process's contexts through the database.
KEY_HEALTH_KEY = "lp:keyhealth"


def _decoded(raw: dict[bytes | str, bytes | str]) -> dict[int, str]:
    return {int(k): v.decode() if isinstance(v, bytes) else v for k, v in raw.items()}


async def akey_health() -> dict[int, str]:
    """Every process's shared view of resting and refused pooled keys ({} if unreachable)."""
    try:
        return _decoded(await async_client().hgetall(KEY_HEALTH_KEY))
    except RedisFailure:
        return {}


async def akey_cool(key_id: int, until_ms: int) -> None:
    try:
        await async_client().hset(KEY_HEALTH_KEY, str(key_id), f"cool:{until_ms}")
    except RedisFailure:
        pass  # this process still rests the key; the others learn of it by their own 429


async def akey_off(key_id: int) -> None:
    try:
        await async_client().hset(KEY_HEALTH_KEY, str(key_id), "off")
    except RedisFailure:
        pass  # the database flag (written next) still reaches every process


def key_health_clear(key_id: int) -> None:
    """Staff re-enabled or replaced a key: forget what the proxy concluded about it."""
    try:
        sync_client().hdel(KEY_HEALTH_KEY, str(key_id))
    except RedisFailure:
        pass


def key_health_get() -> dict[int, str]:
    """The shared key states, for the admin ({} if Redis cannot say)."""
    try:
        return _decoded(sync_client().hgetall(KEY_HEALTH_KEY))
    except RedisFailure:
        return {}


class KeyHealth:
    def __init__(self) -> None:
        self._resting_until: dict[int, float] = {}  # key id -> epoch seconds
        self._off: set[int] = set()
        self._polled_at = 0.0
        self._tasks: set[asyncio.Task[None]] = set()

    async def arefresh(self) -> None:
        now = time.monotonic()
        if now - self._polled_at < settings.PROXY_CONTEXT_POLL:
            return
        self._polled_at = now
        shared = await akey_health()
        resting: dict[int, float] = {}
        off: set[int] = set()
        for key_id, state in shared.items():
            if state == "off":
                off.add(key_id)
            elif state.startswith("cool:"):
                resting[key_id] = int(state[5:]) / 1000
        self._resting_until, self._off = resting, off

    def usable(self, key: PooledKey, now: float) -> bool:
        return key.id not in self._off and self._resting_until.get(key.id, 0) <= now

    def choose(self, keys: Sequence[PooledKey], *, exclude: set[int]) -> PooledKey | None:
        """A usable key by weight, or None when every key is resting, off or already tried."""
        now = time.time()
        candidates = [k for k in keys if k.id not in exclude and self.usable(k, now)]
        if not candidates:
            return None
        if len(candidates) == 1:
            return candidates[0]
        return random.choices(candidates, weights=[k.weight for k in candidates])[0]

    def seconds_until_usable(self, keys: Sequence[PooledKey]) -> int | None:
        now = time.time()
        waits = [self._resting_until[k.id] - now for k in keys if k.id in self._resting_until]
        return max(1, int(min(waits) + 0.999)) if waits else None

    async def arest(
        self, key: PooledKey, *, seconds: float, error: str, provider: str = ""
    ) -> None:
        until = time.time() + seconds
        metrics.key_rested(provider=provider, key=key.label)
        self._resting_until[key.id] = until
        logger.warning("pooled key %s rests %.0fs: %s", key.label, seconds, error)
        await akey_cool(key.id, int(until * 1000))
        self._persist(key.id, error=error, disable=False)

    async def aswitch_off(self, key: PooledKey, *, error: str, provider: str = "") -> None:
        self._off.add(key.id)
        metrics.key_switched_off(provider=provider, key=key.label)
        logger.error("pooled key %s switched off: %s", key.label, error)
        await akey_off(key.id)
        self._persist(key.id, error=error, disable=True)

    def _persist(self, key_id: int, *, error: str, disable: bool) -> None:
        # Off the request's path: staff see it in the admin a moment later.
        task = asyncio.get_running_loop().create_task(
            database_sync_to_async(_record_key_error, thread_sensitive=False)(
                key_id, error, disable
            )
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _record_key_error(key_id: int, error: str, disable: bool) -> None:
    # Imported here: the key services clear key health, so they import this module.
    from routing import services
    from routing.models import ProviderKey

    services.provider_key_note_error(key_id=key_id, error=error)
    if not disable:
        return  # a resting key changes no tenant context: no cache is dropped
    key = ProviderKey.objects.filter(pk=key_id, enabled=True).first()
    if key is not None:
        # Announced by the service: every process's contexts then leave the key out.
        services.provider_key_disable(key=key, reason=error)


key_health = KeyHealth()
