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
from django.utils import timezone

from routing.context import PooledKey
from usage import counters

logger = logging.getLogger(__name__)


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
        shared = await counters.akey_health()
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

    async def arest(self, key: PooledKey, *, seconds: float, error: str) -> None:
        until = time.time() + seconds
        self._resting_until[key.id] = until
        logger.warning("pooled key %s rests %.0fs: %s", key.label, seconds, error)
        await counters.akey_cool(key.id, int(until * 1000))
        self._persist(key.id, error=error, disable=False)

    async def aswitch_off(self, key: PooledKey, *, error: str) -> None:
        self._off.add(key.id)
        logger.error("pooled key %s switched off: %s", key.label, error)
        await counters.akey_off(key.id)
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
    from routing.models import ProviderKey

    if not disable:
        # A plain update: a resting key changes no tenant context, so no cache is dropped.
        ProviderKey.objects.filter(pk=key_id).update(
            last_error=error[:300], last_error_at=timezone.now()
        )
        return
    key = ProviderKey.objects.filter(pk=key_id).first()
    if key is None:
        return
    key.enabled, key.disabled_reason = False, error[:200]
    key.last_error, key.last_error_at = error[:300], timezone.now()
    # save(): the signal drops every process's cached contexts, which then leave the key out.
    key.save(
        update_fields=["enabled", "disabled_reason", "last_error", "last_error_at", "updated_at"]
    )


key_health = KeyHealth()
