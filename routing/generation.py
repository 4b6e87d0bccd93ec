"""The configuration generation: how a change made in one process reaches all the others.

Each process caches tenant contexts (routing/context.py); whoever changes what they are built
from sets ``lp:config:generation`` to a fresh random value, and every process compares it
with the value it last saw at most every PROXY_CONTEXT_POLL seconds.
"""

from __future__ import annotations

import uuid

from core.redis import RedisFailure, async_client, sync_client

# One key, so on a Redis Cluster one master holds it; that master down, changes reach the
# other processes within PROXY_CONTEXT_TTL instead (the reads below answer None).
CONFIG_GENERATION_KEY = "lp:config:generation"


def bump_config_generation() -> None:
    """Tell every proxy process that tenants, tiers or routes changed (best effort)."""
    try:
        # A fresh random value, not INCR: a counter restarted by a flush could repeat a
        # value a process has already seen, and the change would go unnoticed.
        sync_client().set(CONFIG_GENERATION_KEY, uuid.uuid4().hex)
    except RedisFailure:
        pass  # the context TTL still bounds how long a process serves the old view


async def aconfig_generation() -> bytes | None:
    """The current generation; b"" when none was ever set (or Redis lost it), None when Redis
    cannot be asked."""
    try:
        value = await async_client().get(CONFIG_GENERATION_KEY)
    except RedisFailure:
        return None
    return value if isinstance(value, bytes) else b""
