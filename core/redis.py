"""The one place that builds Redis clients, and the registry of Lua scripts run on them.

The async hot path uses redis.asyncio (one client per event loop); admin pages and commands
use the sync client (django-redis's connection when REDIS_URL is set). Without REDIS_URL both
talk to one in-process fakeredis server that runs the same Lua scripts: the zero-setup mode,
for one process only (`embedded()` tells callers that must refuse to run on it).

Which keys and scripts exist is the business of their owners (usage/counters.py for caps
and the ledger, routing/health.py for key health, routing/generation.py for the
configuration generation); this module only hands out connections and script handles.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Mapping
from functools import cache
from typing import Any

import redis
import redis.asyncio as aredis
from django.conf import settings
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff

# What a Redis call raises when the server cannot be reached or answers an error.
RedisFailure = (redis.RedisError, OSError)


def embedded() -> bool:
    """True when there is no Redis server: counters live in this process only."""
    return not settings.REDIS_URL


@cache
def _fake_server() -> Any:
    import fakeredis

    return fakeredis.FakeServer()


_async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aredis.Redis] = (
    weakref.WeakKeyDictionary()
)


def async_client() -> aredis.Redis:
    """The event loop's Redis client (redis.asyncio, or the embedded fakeredis)."""
    loop = asyncio.get_running_loop()
    client = _async_clients.get(loop)
    if client is None:
        if settings.REDIS_URL:
            client = aredis.Redis.from_url(
                settings.REDIS_URL,
                socket_timeout=settings.REDIS_SOCKET_TIMEOUT,
                socket_connect_timeout=settings.REDIS_SOCKET_TIMEOUT,
                max_connections=settings.REDIS_MAX_CONNECTIONS,
                health_check_interval=30,
                # One immediate retry: a pooled connection that died with a Redis restart is
                # replaced at once, and a Redis that is really down still fails well within
                # a second (two short timeouts at most), never after exponential backoff.
                retry=AsyncRetry(NoBackoff(), 1),
            )
        else:
            import fakeredis

            client = fakeredis.FakeAsyncRedis(server=_fake_server())
        _async_clients[loop] = client
    return client


def sync_client() -> redis.Redis:
    """Redis for sync code (admin, commands): django-redis's connection, or the embedded one."""
    if settings.REDIS_URL:
        from django_redis import get_redis_connection

        connection: redis.Redis = get_redis_connection("default")
        return connection
    import fakeredis

    fake: redis.Redis = fakeredis.FakeRedis(server=_fake_server())
    return fake


class ScriptRegistry:
    """A set of Lua scripts, registered once per client and run with EVALSHA.

    ``scripts.on(client)["settle"]`` is the handle of the SETTLE script on that client;
    handles are made once per async client (they live as long as it does) and per call for
    the sync client (django-redis may hand out a new connection object each time).
    """

    def __init__(self, sources: Mapping[str, str]) -> None:
        self._sources = dict(sources)
        self._async: weakref.WeakKeyDictionary[aredis.Redis, dict[str, Any]] = (
            weakref.WeakKeyDictionary()
        )

    def on(self, client: aredis.Redis) -> dict[str, Any]:
        handles = self._async.get(client)
        if handles is None:
            handles = self._async[client] = self._register(client)
        return handles

    def on_sync(self, client: redis.Redis) -> dict[str, Any]:
        return self._register(client)

    def _register(self, client: Any) -> dict[str, Any]:
        return {name: client.register_script(source) for name, source in self._sources.items()}
