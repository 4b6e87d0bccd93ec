"""The one place that builds Redis clients, and the registry of Lua scripts run on them.

The async hot path uses redis.asyncio (one client per event loop); admin pages and commands
use the sync client (django-redis's connection when REDIS_URL is set). Without REDIS_URL both
talk to one in-process fakeredis server that runs the same Lua scripts: the zero-setup mode,
for one process only (`embedded()` tells callers that must refuse to run on it).

With REDIS_CLUSTER on, REDIS_URL names seed nodes of a Redis Cluster and both clients are
redis-py's cluster clients, built here (django-redis has none): the sync one is shared by
the process's threads, as django-redis's connection pool is. What the keys need for a
cluster (one hash tag per tenant, so that each script, pipeline or stream read touches one
slot) is their owners' business; ``key_slot`` says where a key lands, for their tests.

Which keys and scripts exist is the business of their owners (usage/counters.py for caps
and the ledger, routing/health.py for key health, routing/generation.py for the
configuration generation); this module only hands out connections and script handles.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Mapping
from functools import cache
from typing import Any, TypeAlias
from urllib.parse import urlsplit

import redis
import redis.asyncio as aredis
from django.conf import settings
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.crc import key_slot as _key_slot
from redis.retry import Retry

# What a Redis call raises when the server cannot be reached or answers an error. A cluster
# client that reaches no node, or finds a slot no node serves, raises RedisClusterException,
# which is no RedisError.
RedisFailure = (redis.RedisError, OSError, redis.RedisClusterException)

# A client as callers hold it: one server (or the embedded store), or a cluster.
AsyncClient: TypeAlias = aredis.Redis | aredis.RedisCluster
SyncClient: TypeAlias = redis.Redis | redis.RedisCluster


def embedded() -> bool:
    """True when there is no Redis server: counters live in this process only."""
    return not settings.REDIS_URL


def clustered() -> bool:
    """True when REDIS_URL names the seed nodes of a Redis Cluster (REDIS_CLUSTER)."""
    return bool(settings.REDIS_URL) and bool(settings.REDIS_CLUSTER)


def seed_urls(value: str) -> list[str]:
    """The URLs of a REDIS_URL: one, or (a cluster's seed nodes) several, comma-separated."""
    return [url.strip() for url in value.split(",") if url.strip()]


def key_slot(key: str) -> int:
    """The Redis Cluster slot of ``key`` (its hash tag's, when it has one)."""
    return int(_key_slot(key.encode()))


@cache
def _fake_server() -> Any:
    import fakeredis

    return fakeredis.FakeServer()


# Seconds a call waits for a free pooled connection when all REDIS_MAX_CONNECTIONS are busy.
POOL_WAIT = 1.0


def _common_options() -> dict[str, Any]:
    return {
        "socket_timeout": settings.REDIS_SOCKET_TIMEOUT,
        "socket_connect_timeout": settings.REDIS_SOCKET_TIMEOUT,
        "max_connections": settings.REDIS_MAX_CONNECTIONS,
    }


def _seed_nodes(urls: list[str]) -> list[tuple[str, int]]:
    """(host, port) of the seeds after the first: the first URL also carries the options
    (credentials, TLS) every node is reached with."""
    nodes = []
    for url in urls[1:]:
        parts = urlsplit(url)
        nodes.append((parts.hostname or "127.0.0.1", parts.port or 6379))
    return nodes


# Per event loop, per REDIS_URL: a test may point a block of code at another Redis.
_async_clients: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[tuple[str, bool], AsyncClient]
] = weakref.WeakKeyDictionary()


def _async_cluster(urls: list[str]) -> aredis.RedisCluster:
    from redis.asyncio.cluster import ClusterNode

    return aredis.RedisCluster.from_url(
        urls[0],
        startup_nodes=[ClusterNode(host, port) for host, port in _seed_nodes(urls)],
        health_check_interval=30,
        # As for one server (below); a node that stopped answering also makes the client
        # read the cluster's topology again before that retry, so a failover is followed.
        retry=AsyncRetry(NoBackoff(), 1),
        **_common_options(),
    )


def async_client() -> AsyncClient:
    """The event loop's Redis client (redis.asyncio, its cluster client, or the embedded
    fakeredis)."""
    loop = asyncio.get_running_loop()
    mine = _async_clients.get(loop)
    if mine is None:
        mine = _async_clients[loop] = {}
    which = (settings.REDIS_URL, clustered())
    client = mine.get(which)
    if client is None:
        if clustered():
            client = _async_cluster(seed_urls(settings.REDIS_URL))
        elif settings.REDIS_URL:
            pool = aredis.BlockingConnectionPool.from_url(
                settings.REDIS_URL,
                # With every connection busy (a thousand streams settling at once), a call
                # waits this long for one to come free; redis-py's default pool refuses it at
                # once (MaxConnectionsError), and the settlement took its slow path.
                timeout=POOL_WAIT,
                health_check_interval=30,
                # One immediate retry: a pooled connection that died with a Redis restart is
                # replaced at once, and a Redis that is really down still fails well within
                # a second (two short timeouts at most), never after exponential backoff.
                retry=AsyncRetry(NoBackoff(), 1),
                **_common_options(),
            )
            client = aredis.Redis(connection_pool=pool)
        else:
            import fakeredis

            client = fakeredis.FakeAsyncRedis(server=_fake_server())
        mine[which] = client
    return client


# One sync cluster client per REDIS_URL (a test may point a block of code at another).
_sync_clusters: dict[str, redis.RedisCluster] = {}
_sync_clusters_lock = threading.Lock()


def _sync_cluster(value: str) -> redis.RedisCluster:
    with _sync_clusters_lock:
        client = _sync_clusters.get(value)
        if client is None:
            urls = seed_urls(value)
            client = _sync_clusters[value] = redis.RedisCluster.from_url(
                urls[0],
                startup_nodes=[
                    redis.cluster.ClusterNode(host, port)  # type: ignore[no-untyped-call]
                    for host, port in _seed_nodes(urls)
                ],
                retry=Retry(NoBackoff(), 1),
                **_common_options(),
            )
        return client


def sync_client() -> SyncClient:
    """Redis for sync code (admin, commands): django-redis's connection, the cluster client,
    or the embedded one."""
    if clustered():
        return _sync_cluster(settings.REDIS_URL)
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
        self._async: weakref.WeakKeyDictionary[AsyncClient, dict[str, Any]] = (
            weakref.WeakKeyDictionary()
        )

    def on(self, client: AsyncClient) -> dict[str, Any]:
        handles = self._async.get(client)
        if handles is None:
            handles = self._async[client] = self._register(client)
        return handles

    def on_sync(self, client: SyncClient) -> dict[str, Any]:
        return self._register(client)

    def _register(self, client: Any) -> dict[str, Any]:
        return {name: client.register_script(source) for name, source in self._sources.items()}
