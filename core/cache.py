"""Django's cache on a Redis Cluster (REDIS_CLUSTER): Django's own Redis backend, on the
cluster client core/redis.py builds.

django-redis has no cluster client, and Django's backend reaches one server (or shards by
hand): this one keeps Django's serialization and key handling and takes its connection from
core.redis, so there is one owner of Redis clients. The commands that name several keys go
slot by slot: MGET and MSET cannot span slots, and cache keys carry no hash tag (the login
lockout and the console's nonces, what the cache holds here, are one key each anyway).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import Any

from django.core.cache.backends.redis import RedisCache, RedisCacheClient

from core import redis as core_redis


class _ClusterCacheClient(RedisCacheClient):
    def get_client(self, key: Any = None, *, write: bool = False) -> Any:
        return core_redis.sync_client()

    def _loads(self, value: bytes) -> Any:
        return self._serializer.loads(value)  # type: ignore[attr-defined]  # not in the stubs

    def _dumps(self, value: Any) -> Any:
        return self._serializer.dumps(value)  # type: ignore[attr-defined]  # not in the stubs

    def get_many(self, keys: Iterable[Any]) -> dict[Any, Any]:
        keys = list(keys)
        values = self.get_client().mget_nonatomic(keys)
        return {k: self._loads(v) for k, v in zip(keys, values, strict=True) if v is not None}

    def set_many(self, data: Mapping[Any, Any], timeout: int | timedelta) -> None:
        if timeout == 0:  # Django's meaning: gone at once
            self.delete_many(list(data))
            return
        pipeline = self.get_client(write=True).pipeline(transaction=False)
        for key, value in data.items():
            pipeline.set(key, self._dumps(value), ex=timeout)
        pipeline.execute()


class ClusterRedisCache(RedisCache):
    def __init__(self, server: str, params: dict[str, Any]) -> None:
        super().__init__(server, params)
        self._class = _ClusterCacheClient
