"""/readyz: the database, Redis and the ledger drain, each named when it fails.

Redis is stopped and restarted here, so these tests run their own redis-server on a free
port (never the shared one), and a proxy of their own pointing at it.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.conftest import JwtKeys, LiveProxy, free_port, start_proxy, stop_proxy

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="no redis-server")


class RedisServer:
    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_timeout=0.2)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return
            except redis.RedisError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=1)


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.stop()


def proxy_with(tmp_path: Path, jwt_keys: JwtKeys, **env: str) -> LiveProxy:
    return start_proxy(
        tmp_dir=tmp_path,
        jwt_keys=jwt_keys,
        extra_env={"PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prometheus"), **env},
    )


@pytest.fixture
def redis_proxy(
    transactional_db: None, tmp_path: Path, jwt_keys: JwtKeys, own_redis: RedisServer
) -> Iterator[LiveProxy]:
    proxy = proxy_with(tmp_path, jwt_keys, REDIS_URL=own_redis.url)
    yield proxy
    stop_proxy(proxy)


def readyz(proxy: LiveProxy) -> tuple[int, dict[str, Any]]:
    response = httpx.get(f"{proxy.url}/readyz", timeout=5)
    body: dict[str, Any] = response.json()
    return response.status_code, body


def wait_for(proxy: LiveProxy, status: int, *, within: float) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while True:
        code, body = readyz(proxy)
        if code == status:
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.02)


def test_it_is_ready_when_everything_answers(redis_proxy: LiveProxy) -> None:
    code, body = readyz(redis_proxy)
    assert code == 200
    assert body == {
        "status": "ready",
        "checks": {"database": "ok", "redis": "ok", "ledger": "ok"},
    }
    head = httpx.head(f"{redis_proxy.url}/readyz")
    assert head.status_code == 200
    assert httpx.post(f"{redis_proxy.url}/readyz").status_code == 405


def test_it_turns_unready_within_a_second_of_redis_stopping_and_back(
    redis_proxy: LiveProxy, own_redis: RedisServer
) -> None:
    assert readyz(redis_proxy)[0] == 200
    own_redis.stop()
    stopped = time.monotonic()
    body = wait_for(redis_proxy, 503, within=1.0)
    assert time.monotonic() - stopped < 1.0
    assert body["status"] == "not ready"
    assert "redis" in body["failing"]
    assert body["checks"]["redis"] != "ok"
    assert body["checks"]["database"] == "ok"
    own_redis.start()  # the same port, empty
    body = wait_for(redis_proxy, 200, within=5.0)
    assert body["checks"] == {"database": "ok", "redis": "ok", "ledger": "ok"}


def test_it_names_a_stuck_ledger_drain(redis_proxy: LiveProxy, own_redis: RedisServer) -> None:
    # An entry settled an hour ago and still waiting: nothing drains this proxy's ledger.
    stream = "lp:{t:999999}:ledger"
    own_redis.client().xadd(stream, {"r": "{}"}, id=f"{int(time.time() * 1000) - 3_600_000}-0")
    body = wait_for(redis_proxy, 503, within=3.0)
    assert body["failing"] == ["ledger"]
    assert body["checks"]["redis"] == "ok"
    own_redis.client().delete(stream)
    wait_for(redis_proxy, 200, within=3.0)


def test_it_names_the_database_when_it_cannot_be_reached(
    transactional_db: None, tmp_path: Path, jwt_keys: JwtKeys
) -> None:
    proxy = proxy_with(
        tmp_path, jwt_keys, DATABASE_URL=f"postgres://postgres@127.0.0.1:{free_port()}/nowhere"
    )
    try:
        started = time.monotonic()
        code, body = readyz(proxy)
        assert time.monotonic() - started < 2.0
        assert code == 503
        assert body["failing"] == ["database"]
        assert body["checks"]["database"] != "ok"
        # Liveness is the process's alone.
        assert httpx.get(f"{proxy.url}/healthz").status_code == 200
    finally:
        stop_proxy(proxy)


def test_it_counts_the_embedded_store_as_always_ready(
    transactional_db: None, tmp_path: Path, jwt_keys: JwtKeys
) -> None:
    proxy = proxy_with(tmp_path, jwt_keys, REDIS_URL="")
    try:
        code, body = readyz(proxy)
        assert code == 200, body
        assert body["checks"]["redis"] == "ok"
    finally:
        stop_proxy(proxy)


def test_it_drains_what_a_stopped_process_left_before_it_serves_a_request(
    transactional_db: None, tmp_path: Path, jwt_keys: JwtKeys, own_redis: RedisServer
) -> None:
    # A process that stopped left an entry an hour old; the new one gets no traffic until
    # it is ready, so its drainer must not wait for a first request to start.
    stream = "lp:{t:999999}:ledger"
    own_redis.client().xadd(stream, {"r": "{}"}, id=f"{int(time.time() * 1000) - 3_600_000}-0")
    proxy = proxy_with(tmp_path, jwt_keys, REDIS_URL=own_redis.url)
    try:
        body = wait_for(proxy, 200, within=10.0)
        assert body["checks"]["ledger"] == "ok"
        assert own_redis.client().xlen(stream) == 0
    finally:
        stop_proxy(proxy)
