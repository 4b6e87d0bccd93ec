"""The ledger through a Redis crash: with AOF nothing Redis acknowledged is lost; without
persistence, exactly the entries not yet moved to the database are.

Each test runs a redis-server of its own (a free port, a temporary directory) under a proxy
whose drainer never runs (PROXY_LEDGER_DRAIN_INTERVAL 3600), so every ledger entry is still
in Redis when it is killed with SIGKILL and started again on the same directory.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis

from tests.conftest import JwtKeys, LiveProxy, World, eventually, free_port, start_proxy, stop_proxy
from tests.support.mockserver import MockServer
from usage import counters
from usage.ledger import drain_all, sweep_all
from usage.models import UsageRecord
from usage.weeks import week_of

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")

ACKNOWLEDGED = 12  # requests answered, their ledger entries in Redis
IN_FLIGHT = 3  # streams admitted and running when the worker dies too
LEASE_TTL = 2.0


@dataclass
class RedisServer:
    directory: Path
    persist: bool
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.port = self.port or free_port()
        persistence = ["--appendonly", "yes", "--appendfsync", "everysec"]
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--dir", str(self.directory), "--save", ""]
        command += persistence if self.persist else ["--appendonly", "no"]
        log = (self.directory / "redis.log").open("ab")
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        client = redis.Redis.from_url(self.url)

        def answers() -> None:
            try:
                assert client.ping()
            except redis.ConnectionError:
                raise AssertionError("not up yet") from None

        eventually(answers, timeout=10)

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()  # SIGKILL: no shutdown, no last write
        self.process.wait()

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)


@pytest.fixture
def redis_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "redis"
    directory.mkdir()
    return directory


def serve(server: RedisServer, tmp_path: Path, jwt_keys: JwtKeys) -> LiveProxy:
    return start_proxy(
        tmp_dir=tmp_path,
        jwt_keys=jwt_keys,
        extra_env={
            "REDIS_URL": server.url,
            "PROXY_LEDGER_DRAIN_INTERVAL": "3600",
            "PROXY_LEASE_TTL": str(LEASE_TTL),
        },
    )


def answered(worker: LiveProxy, token: str, count: int) -> None:
    """``count`` requests answered in full, streamed and not, alternately."""
    with httpx.Client(base_url=worker.openai_base_url, timeout=30) as client:
        for index in range(count):
            body = {"model": "auto", "messages": [{"role": "user", "content": f"hi {index}"}]}
            reply = client.post(
                "/chat/completions",
                json={**body, "stream": index % 2 == 0},
                headers={"Authorization": f"Bearer {token}"},
            )
            assert reply.status_code == 200 and reply.text


def undrained(client: redis.Redis, world: World) -> int:
    return int(client.xlen(counters.keys_for(world.alice.pk, "-").ledger))


@pytest.fixture
def servers() -> Iterator[list[RedisServer]]:
    started: list[RedisServer] = []
    yield started
    for server in started:
        if server.process is not None and server.process.poll() is None:
            server.kill()


def test_it_loses_no_acknowledged_ledger_entry_when_redis_crashes_with_aof(
    proxy: LiveProxy,
    world: World,
    mock: MockServer,
    jwt_keys: JwtKeys,
    tmp_path: Path,
    redis_dir: Path,
    servers: list[RedisServer],
) -> None:
    server = RedisServer(redis_dir, persist=True)
    servers.append(server)
    server.start()
    worker = serve(server, tmp_path, jwt_keys)
    token = world.token(world.alice)
    try:
        answered(worker, token, ACKNOWLEDGED)
        client = server.client()
        # Acknowledged: each request's SETTLE (which appends its entry) has had Redis' reply.
        eventually(lambda: assert_equal(undrained(client, world), ACKNOWLEDGED))
        # And streams in flight, admitted (their pending records stored) but not settled.
        mock.configure(chunks=400, chunk_delay=0.1)
        with httpx.Client(base_url=worker.openai_base_url, timeout=30) as http:
            streams = []
            for _ in range(IN_FLIGHT):
                request = http.build_request(
                    "POST",
                    "/chat/completions",
                    json={"model": "auto", "messages": [{"role": "user", "content": "go"}]}
                    | {"stream": True},
                    headers={"Authorization": f"Bearer {token}"},
                )
                response = http.send(request, stream=True)
                lines = response.iter_lines()
                while not next(lines).startswith("data: {"):
                    pass
                streams.append((response, lines))
            server.kill()  # Redis crashes...
            server.start()  # ...and comes back on its append-only file
            worker.process.kill()  # the worker dies too, its streams with it
            worker.process.wait()
            for response, _ in streams:
                response.close()
    finally:
        stop_proxy(worker)
    assert UsageRecord.objects.filter(tenant=world.alice).count() == 0  # nothing drained yet
    client = server.client()
    assert undrained(client, world) == ACKNOWLEDGED
    time.sleep(LEASE_TTL + 0.5)  # the dead worker's leases run out
    assert sweep_all(client) == IN_FLIGHT
    drain_all(client)
    rows = list(UsageRecord.objects.filter(tenant=world.alice))
    statuses = sorted(row.status for row in rows)
    assert statuses == ["lost"] * IN_FLIGHT + ["ok"] * ACKNOWLEDGED
    week = counters.keys_for(world.alice.pk, week_of(rows[0].created_at).id).week
    assert int(client.hget(week, "used_tokens") or 0) == sum(row.total_tokens for row in rows)


def test_it_loses_exactly_the_undrained_entries_when_redis_without_persistence_crashes(
    proxy: LiveProxy,
    world: World,
    jwt_keys: JwtKeys,
    tmp_path: Path,
    redis_dir: Path,
    servers: list[RedisServer],
) -> None:
    server = RedisServer(redis_dir, persist=False)
    servers.append(server)
    server.start()
    worker = serve(server, tmp_path, jwt_keys)
    try:
        answered(worker, world.token(world.alice), ACKNOWLEDGED)
        client = server.client()
        eventually(lambda: assert_equal(undrained(client, world), ACKNOWLEDGED))
        server.kill()
        server.start()
    finally:
        stop_proxy(worker)
    client = server.client()
    assert undrained(client, world) == 0
    assert drain_all(client) == 0
    # Every entry not yet drained is gone: the bound is what settled within one drain
    # interval (PROXY_LEDGER_DRAIN_INTERVAL, plus the drain's own time).
    assert UsageRecord.objects.filter(tenant=world.alice).count() == 0


def assert_equal(actual: int, expected: int) -> None:
    assert actual == expected
