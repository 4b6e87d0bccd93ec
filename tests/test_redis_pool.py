"""The async Redis client under a burst: more calls at once than REDIS_MAX_CONNECTIONS wait
for a connection instead of failing (a thousand streams may settle in the same moment)."""

from __future__ import annotations

import asyncio

import pytest
from django.conf import settings
from django.test import override_settings

from core.redis import async_client

pytestmark = pytest.mark.skipif(not settings.REDIS_URL, reason="needs a Redis server")


@override_settings(REDIS_MAX_CONNECTIONS=4)
async def test_it_queues_a_burst_larger_than_its_pool_rather_than_failing_it() -> None:
    client = async_client()  # this test's event loop's own client, with a pool of 4
    key = "lp:test:pool-burst"
    try:
        # Eight calls hold their connections for 50 ms each (a blocking pop that times out),
        # while 64 more want one: 72 calls at once through 4 connections.
        replies = await asyncio.gather(
            *(client.blpop([f"{key}:nothing"], timeout=0.05) for _ in range(8)),
            *(client.eval("redis.call('INCR', KEYS[1]) return 1", 1, key) for _ in range(64)),
        )
        assert replies == [None] * 8 + [1] * 64
        assert int(await client.get(key) or 0) == 64
    finally:
        await client.delete(key)
        await client.aclose()
