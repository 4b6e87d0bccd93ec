#!/usr/bin/env python
"""A bounded soak test: minutes of mixed load and rotating upstream faults against one proxy.

    .venv/bin/python bench/soak.py             # 3 minutes of load, then the checks
    .venv/bin/python bench/soak.py --quick     # about 45 s of load: a smoke run
    .venv/bin/python bench/soak.py --json      # the same, JSON on stdout

It starts the mock provider and one proxy (Daphne) on loopback, as bench/run.py does, applies
bench/soak.toml, and sends a steady mix (OpenAI and Anthropic routes, streamed or not, some
streams abandoned by the client after the first content chunk, a few requests the proxy must
refuse) from one asyncio process while the mock's injected faults change every few seconds.
Meanwhile it samples the proxy's memory and open file descriptors. After the load it waits
for the usage ledger to drain and checks that the ledger, the weekly counters, the mock's own
usage records and what the client saw all agree. See bench/README.md, section "Soak".
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench.run import (  # noqa: E402
    HOST,
    MESSAGES,
    MOCK_CHUNKS,
    OPENAI_CONTENT,
    BenchError,
    Processes,
    Reply,
    Stores,
    _RawConnection,
    child_env,
    free_port,
    log,
    machine_info,
    redact,
    sigterm_as_interrupt,
)

CONFIG_FILE = REPO_ROOT / "bench" / "soak.toml"
RESULTS_DIR = REPO_ROOT / "bench" / "results"
TENANT = "soak"
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/llm_proxy_soak"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/13"

# Distinct keys per pooled key, so a fault can target exactly one of them on the mock.
OPENAI_KEY_1 = "sk-soak-openai-1"
OPENAI_KEY_2 = "sk-soak-openai-2"
ANTHROPIC_KEY = "sk-soak-anthropic-1"

# Slower than bench/run.py's mock (no delay at all): a stream must last long enough for a
# client to leave in the middle of it and for the proxy to notice, and the load should look
# like many overlapping answers rather than a CPU-bound sprint. 0.02 + 15 x 0.01 s = 0.17 s.
MOCK_TTFT = 0.02
MOCK_CHUNK_DELAY = 0.01

# One request never takes longer than the slowest fault (drip: 4 s) plus the proxy's
# timeouts; past this the client gives up and counts a timeout, which is a finding.
REQUEST_TIMEOUT = 40.0

STREAM_ERROR = re.compile(rb'data: \{"error":\{.*?"code":(?:"([^"]*)"|null)')
FIRST_ID = re.compile(rb'"id":"([^"]+)"')
DONE = b"data: [DONE]"

# Refusals the proxy makes before admission: such a request never reaches the counters and
# must not get a ledger row. Everything past admission (a 502, a 504, a provider's 429 or
# 400, a stream cut short, a client gone) must get exactly one.
PRE_ADMISSION = {
    401: None,  # any token problem
    403: None,  # suspended tenant, revoked token
    404: None,  # unknown model
    405: None,
    413: None,  # body over the limit
    400: {"upstream_invalid_request"},  # a 400 is the proxy's own, unless the provider's
    429: {"upstream_rate_limited"},  # admission refusals: rate_limit_exceeded, insufficient_quota
    503: {"no_provider_key"},  # limits_unavailable is refused at admission
}


# --- the request mix -------------------------------------------------------------------------


@dataclass(frozen=True)
class Kind:
    name: str
    weight: float
    stream: bool
    route: str  # "openai", "anthropic", or "reject"
    raw: bytes  # the whole HTTP request, built once


def _request(port: int, token: str, body: bytes, *, stream: bool) -> bytes:
    lines = [
        "POST /v1/chat/completions HTTP/1.1",
        f"Host: {HOST}:{port}",
        f"Authorization: Bearer {token}",
        "Content-Type: application/json",
        f"Accept: {'text/event-stream' if stream else 'application/json'}",
        f"Content-Length: {len(body)}",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _body(model: str, *, stream: bool, messages: Any = None) -> bytes:
    payload = {"model": model, "messages": MESSAGES if messages is None else messages}
    payload["stream"] = stream
    return json.dumps(payload, separators=(",", ":")).encode()


def request_kinds(port: int, token: str) -> list[Kind]:
    """The mix: weights are shares of all requests."""

    def kind(name: str, weight: float, model: str, route: str, stream: bool) -> Kind:
        raw = _request(port, token, _body(model, stream=stream), stream=stream)
        return Kind(name, weight, stream, route, raw)

    return [
        kind("openai", 0.30, "auto", "openai", False),
        kind("openai stream", 0.30, "auto", "openai", True),
        kind("anthropic", 0.17, "claude-bench", "anthropic", False),
        kind("anthropic stream", 0.20, "claude-bench", "anthropic", True),
        # A few requests the proxy must refuse before admission: they check that refusals
        # leave no ledger row and leak nothing either.
        Kind(
            "reject: bad token",
            0.01,
            False,
            "reject",
            _request(port, "not-a-jwt", _body("auto", stream=False), stream=False),
        ),
        Kind(
            "reject: unknown model",
            0.01,
            False,
            "reject",
            _request(port, token, _body("no-such-model", stream=False), stream=False),
        ),
        Kind(
            "reject: invalid body",
            0.01,
            False,
            "reject",
            _request(port, token, _body("auto", stream=False, messages="hi"), stream=False),
        ),
    ]


# --- injected faults -------------------------------------------------------------------------


@dataclass(frozen=True)
class FaultPhase:
    name: str
    faults: list[dict[str, Any]]
    # Re-posted every second: "times" then means "so many per second", spread over the phase
    # instead of all spent in its first moments.
    per_second: bool = False


FAULT_PHASES = [
    FaultPhase("none", []),
    # The first OpenAI key is rate limited (and rests 2 s each time): the second must serve.
    FaultPhase(
        "429 on key 1",
        [
            {
                "match": {"api_key": OPENAI_KEY_1},
                "times": None,
                "action": {"type": "status", "status": 429, "headers": {"retry-after": "2"}},
            }
        ],
    ),
    # 500s: the OpenAI route retries on its other key; the Anthropic one has none (502).
    FaultPhase(
        "500s", [{"times": 3, "action": {"type": "status", "status": 500}}], per_second=True
    ),
    # The provider dies mid-answer: streams end with an error event, others get a 502.
    FaultPhase(
        "break mid-stream",
        [{"times": 4, "action": {"type": "break_after", "chunks": 3}}],
        per_second=True,
    ),
    # Slow headers, well within first_byte_timeout: these must all succeed.
    FaultPhase(
        "slow headers",
        [{"times": 10, "action": {"type": "delay_headers", "seconds": 0.5}}],
        per_second=True,
    ),
    # Headers, then only SSE comments: a stream is cut after idle_timeout (504 event); a
    # non-streamed call ends after max_seconds with a body that is no JSON (502).
    FaultPhase(
        "drip",
        [{"times": 1, "action": {"type": "drip", "interval": 0.5, "max_seconds": 4}}],
        per_second=True,
    ),
]


class FaultRotator:
    """Switches the mock's faults every `phase_seconds` after the warm-up, through its API."""

    def __init__(self, mock: httpx.AsyncClient, *, warmup: float, phase_seconds: float) -> None:
        self.mock = mock
        self.warmup = warmup
        self.phase_seconds = phase_seconds
        self.current = "warm-up"
        self.timeline: list[tuple[float, str]] = []

    async def post(self, faults: list[dict[str, Any]]) -> None:
        response = await self.mock.post("/_mock/config", json={"faults": faults})
        response.raise_for_status()

    async def run(self, started: float, stop: asyncio.Event) -> None:
        self.timeline.append((0.0, "warm-up"))
        await _sleep_or_stop(stop, self.warmup)
        index = 0
        while not stop.is_set():
            phase = FAULT_PHASES[index % len(FAULT_PHASES)]
            self.current = phase.name
            self.timeline.append((time.monotonic() - started, phase.name))
            phase_end = time.monotonic() + self.phase_seconds
            while not stop.is_set() and time.monotonic() < phase_end:
                await self.post(phase.faults)
                if not phase.per_second:
                    await _sleep_or_stop(stop, phase_end - time.monotonic())
                else:
                    await _sleep_or_stop(stop, min(1.0, phase_end - time.monotonic()))
            index += 1
        self.current = "after"
        await self.post([])


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    if seconds <= 0:
        return
    try:
        async with asyncio.timeout(seconds):
            await stop.wait()
    except TimeoutError:
        pass


# --- the client ------------------------------------------------------------------------------


class SoakConnection(_RawConnection):
    """bench/run.py's raw connection, which also keeps the response head and can hang up.

    With `abort_after_first` set, the connection closes the moment the first content chunk
    has arrived, in the middle of the stream, as a client that gives up would.
    """

    def __init__(self) -> None:
        super().__init__(OPENAI_CONTENT)
        self.head = b""
        self.abort_after_first = False
        self.aborted = False

    def _parse(self) -> bool:
        if not self._head_done:
            end = self._buf.find(b"\r\n\r\n")
            if end >= 0:
                self.head = bytes(self._buf[:end])
        return super()._parse()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        waiter = self._waiter
        # _first is only still set when the response is not complete yet (see _start_response).
        if self.abort_after_first and self._first is not None and waiter and not waiter.done():
            self.aborted = True
            waiter.set_result(Reply(self._status, bytes(self._body), self._first))
            assert self.transport is not None
            self.transport.close()

    def usable(self) -> bool:
        return not (
            self.lost or self.aborted or self.transport is None or self.transport.is_closing()
        )


@dataclass(slots=True)
class Result:
    kind: str
    phase: str
    outcome: str  # "ok", "client disconnected", "stream error: <code>", "HTTP <s> <code>", ...
    status: int  # 0: no response
    request_id: str | None
    admitted: bool | None  # None: unknown (no response)
    upstream_id: str | None  # the mock's record id, from the answer's "id"
    seconds: float  # request sent -> response complete (or given up)
    t: float = 0.0  # when it completed, in seconds since the load started


def _headers(head: bytes) -> dict[str, str]:
    headers = {}
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
    return headers


def _error_code(body: bytes) -> str | None:
    try:
        error = json.loads(body).get("error")
    except (ValueError, AttributeError):
        return None
    return error.get("code") if isinstance(error, dict) else None


def _upstream_id(raw_id: str | None) -> str | None:
    # The OpenAI route passes the mock's id through; the Anthropic one prefixes the
    # message id with "chatcmpl-".
    if raw_id is None:
        return None
    return raw_id.removeprefix("chatcmpl-") if "msg_" in raw_id else raw_id


def is_admitted(status: int, code: str | None, headers: dict[str, str]) -> bool:
    """Whether the proxy got past admission for this response (see PRE_ADMISSION)."""
    if status == 500:
        # A crash: before or after admission? The admission's rate-limit headers ride on
        # every later answer, crashes included, and never on an earlier one.
        return "x-ratelimit-limit-requests" in headers
    if status in PRE_ADMISSION:
        after = PRE_ADMISSION[status]
        return after is not None and code in after
    return True


def classify(
    kind: Kind, phase: str, reply: Reply, head: bytes, aborted: bool, took: float
) -> Result:
    headers = _headers(head)
    body = reply.body
    status = reply.status
    code: str | None = None
    raw_id: str | None = None
    if status == 200:
        found = FIRST_ID.search(body)
        raw_id = found.group(1).decode() if found else None
        if aborted:
            outcome = "client disconnected"
        elif kind.stream:
            error = STREAM_ERROR.search(body)
            if error:
                outcome = f"stream error: {(error.group(1) or b'null').decode()}"
            elif DONE in body and reply.first_content is not None:
                outcome = "ok"
            else:
                outcome = "incomplete stream"
        else:
            outcome = "ok" if b'"usage"' in body else "incomplete body"
    else:
        code = _error_code(body)
        outcome = f"HTTP {status} {code}"
    return Result(
        kind=kind.name,
        phase=phase,
        outcome=outcome,
        status=status,
        request_id=headers.get("x-request-id"),
        admitted=is_admitted(status, code, headers),
        upstream_id=_upstream_id(raw_id),
        seconds=took,
    )


@dataclass
class Load:
    """What the workers share: the results so far and when to stop."""

    kinds: list[Kind]
    port: int
    deadline: float
    max_requests: int
    disconnect_share: float
    seed: int
    rotator: FaultRotator
    stop: asyncio.Event
    started: float = field(default_factory=time.monotonic)
    results: list[Result] = field(default_factory=list)

    async def connect(self) -> SoakConnection:
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_connection(SoakConnection, HOST, self.port)
        return protocol

    async def worker(self, index: int) -> None:
        rng = random.Random(self.seed * 1000 + index)
        weights = [k.weight for k in self.kinds]
        conn: SoakConnection | None = None
        try:
            while (
                not self.stop.is_set()
                and time.monotonic() < self.deadline
                and len(self.results) < self.max_requests
            ):
                kind = rng.choices(self.kinds, weights)[0]
                abort = kind.stream and rng.random() < self.disconnect_share
                phase = self.rotator.current
                started = time.perf_counter()
                try:
                    if conn is None or not conn.usable():
                        conn = await self.connect()
                    conn.abort_after_first = abort
                    async with asyncio.timeout(REQUEST_TIMEOUT):
                        reply = await conn.send(kind.raw)
                except TimeoutError:
                    self._failed(kind, phase, "client timeout", started)
                    _drop(conn)
                    conn = None
                    continue
                except OSError as exc:  # ConnectionError included: refused, reset, lost
                    self._failed(kind, phase, f"transport error: {exc}"[:120], started)
                    _drop(conn)
                    conn = None
                    await asyncio.sleep(0.05)  # a refusing proxy must not become a busy loop
                    continue
                took = time.perf_counter() - started
                result = classify(kind, phase, reply, conn.head, conn.aborted, took)
                result.t = round(time.monotonic() - self.started, 2)
                self.results.append(result)
                if conn.aborted:
                    conn = None  # closed on purpose; the next request opens a new one
        finally:
            _drop(conn)

    def _failed(self, kind: Kind, phase: str, outcome: str, started: float) -> None:
        took = time.perf_counter() - started
        t = round(time.monotonic() - self.started, 2)
        self.results.append(Result(kind.name, phase, outcome, 0, None, None, None, took, t))


def _drop(conn: SoakConnection | None) -> None:
    if conn is not None and conn.transport is not None:
        conn.transport.close()


# --- watching the proxy and the mock ---------------------------------------------------------


@dataclass
class Sample:
    t: float  # seconds since the load started
    requests: int  # responses so far
    rss_mb: float | None
    fds: int | None
    threads: int | None


def proc_sample(pid: int, t: float, requests: int) -> Sample:
    rss: float | None = None
    threads: int | None = None
    fds: int | None = None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = round(int(line.split()[1]) / 1024, 1)
            elif line.startswith("Threads:"):
                threads = int(line.split()[1])
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        pass
    return Sample(round(t, 1), requests, rss, fds, threads)


async def sampler(
    pid: int, load: Load, samples: list[Sample], started: float, every: float
) -> None:
    # Only while the load is at full strength: the workers' wind-down after the deadline
    # (connections closing one by one) would read as a drop in open fds.
    while not load.stop.is_set() and time.monotonic() < load.deadline:
        samples.append(proc_sample(pid, time.monotonic() - started, len(load.results)))
        await _sleep_or_stop(load.stop, min(every, load.deadline - time.monotonic()))


@dataclass
class MockRecords:
    """The mock's per-call records, accumulated: it keeps only its last 1000 itself."""

    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    calls: int = 0
    polls: int = 0

    def absorb(self, stats: dict[str, Any]) -> None:
        self.calls = stats["calls"]
        self.polls += 1
        for record in stats["requests"]:
            # A later snapshot of the same call supersedes an earlier one (it was in flight).
            self.records[record["id"]] = {
                "status": record["status"],
                "fault": record["fault"],
                "usage": record["usage"],
                "disconnected": record["disconnected"],
                "finished": record["finished_at"] is not None,
                "chunks_sent": record["chunks_sent"],
                "api_key": record["api_key"],
            }

    async def poll(self, mock: httpx.AsyncClient) -> None:
        response = await mock.get("/_mock/stats")
        response.raise_for_status()
        self.absorb(response.json())


async def mock_poller(mock: httpx.AsyncClient, records: MockRecords, stop: asyncio.Event) -> None:
    # Every 2 s: at the soak's rate (~100 calls/s) far fewer than 1000 calls happen between
    # two polls, so no record falls out of the mock's window unseen; coverage is reported.
    while not stop.is_set():
        await records.poll(mock)
        await _sleep_or_stop(stop, 2.0)


class RedisWatch:
    """Notices when someone else empties the soak's Redis DB while it runs.

    The Redis server may be shared (the test suite's FLUSHALL empties every DB on it). A
    flush throws away the ledger entries not yet drained, exactly as the README says for an
    unpersisted Redis, so the ledger check would fail for a reason that is not the proxy's.
    A canary key, looked at every second, tells when that happened.
    """

    CANARY = "soak:canary"

    def __init__(self, url: str | None) -> None:
        self.url = url
        self.wipes: list[float] = []  # seconds since the load started
        self.flush_calls_before: dict[str, int] = {}

    async def _flush_calls(self, client: Any) -> dict[str, int]:
        stats = await client.info("commandstats")
        return {
            name: stats.get(f"cmdstat_{name}", {}).get("calls", 0)
            for name in ("flushall", "flushdb")
        }

    async def run(self, started: float, stop: asyncio.Event) -> None:
        if not self.url:
            return
        import redis.asyncio as aredis

        client = aredis.Redis.from_url(self.url, socket_timeout=2)
        try:
            self.flush_calls_before = await self._flush_calls(client)
            await client.set(self.CANARY, "1")
            while not stop.is_set():
                await _sleep_or_stop(stop, 1.0)
                if not await client.exists(self.CANARY):
                    self.wipes.append(round(time.monotonic() - started, 1))
                    log(f"soak: someone else emptied the soak's Redis DB (t={self.wipes[-1]} s)")
                    await client.set(self.CANARY, "1")
        finally:
            await client.aclose()

    async def finish(self) -> dict[str, Any]:
        if not self.url:
            return {"watched": False, "wipes": [], "flush_calls": {}}
        import redis.asyncio as aredis

        client = aredis.Redis.from_url(self.url, socket_timeout=2)
        try:
            after = await self._flush_calls(client)
        finally:
            await client.aclose()
        calls = {k: after[k] - self.flush_calls_before.get(k, 0) for k in after}
        return {"watched": True, "wipes": self.wipes, "flush_calls": calls}


# --- stores ----------------------------------------------------------------------------------


@dataclass
class SoakStores:
    stores: Stores
    created_database: str | None  # a database this run created (and drops at the end)
    redis_url: str | None  # flushed at the start and the end
    flush_at_end: bool = True  # not a private redis-server, which simply stops


def _postgres_admin_url(url: str) -> tuple[str, str]:
    """(URL of the server's maintenance database, the database name) for a postgres URL."""
    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    return urlunsplit(parts._replace(path="/postgres")), name


def _postgres_reachable(url: str) -> bool:
    import psycopg

    admin, _ = _postgres_admin_url(url)
    try:
        with psycopg.connect(admin, connect_timeout=2):
            return True
    except psycopg.Error:
        return False


def _recreate_database(url: str) -> None:
    import psycopg
    from psycopg import sql

    admin, name = _postgres_admin_url(url)
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def _drop_database(url: str) -> None:
    import psycopg
    from psycopg import sql

    admin, name = _postgres_admin_url(url)
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def _redis_reachable(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2).ping())
    except redis.RedisError:
        return False


def _flush_redis(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2)
    client.flushdb()
    client.close()


def choose_stores(args: argparse.Namespace, workdir: Path) -> SoakStores:
    """PostgreSQL + Redis when reachable, else SQLite + the embedded store, each on its own."""
    sqlite = f"sqlite:///{workdir / 'soak.sqlite3'}"
    created: str | None = None
    if args.embedded:
        database_url, database_label = sqlite, "SQLite, temporary file (--embedded)"
    else:
        database_url = args.database_url or DEFAULT_DATABASE_URL
        explicit = args.database_url is not None
        if explicit and not database_url.startswith(("postgres://", "postgresql://")):
            database_label = f"{redact(database_url)} (--database-url; kept)"
        elif not _postgres_reachable(database_url):
            if explicit:
                raise BenchError(f"--database-url {redact(database_url)} is not reachable")
            database_url = sqlite
            database_label = "SQLite, temporary file (PostgreSQL at 127.0.0.1:5432 unreachable)"
        elif explicit:
            database_label = f"{redact(database_url)} (--database-url; kept)"
        else:
            _recreate_database(database_url)
            created = database_url
            database_label = f"PostgreSQL {redact(database_url)} (created for this run, dropped)"
    redis_url: str | None = None
    if args.embedded:
        counters_label = "embedded in-process store (--embedded)"
    else:
        wanted = args.redis_url or DEFAULT_REDIS_URL
        if _redis_reachable(wanted):
            redis_url = wanted
            _flush_redis(redis_url)
            counters_label = f"Redis {redact(redis_url)} (FLUSHDB at start and end)"
        elif args.redis_url:
            raise BenchError(f"--redis-url {redact(wanted)} is not reachable")
        else:
            counters_label = "embedded in-process store (Redis at 127.0.0.1:6379 unreachable)"
    return SoakStores(
        Stores(database_url, redis_url, database_label, counters_label), created, redis_url
    )


def start_private_redis(processes: Processes, *, timeout: float = 10) -> str:
    """A redis-server of the run's own on a free loopback port: nobody else can flush it."""
    import redis

    if shutil.which("redis-server") is None:
        raise BenchError("--private-redis needs redis-server on PATH")
    port = free_port()
    process = processes.spawn(
        "redis",
        [
            "redis-server",
            "--bind",
            HOST,
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(processes.workdir),
        ],
    )
    url = f"redis://{HOST}:{port}/0"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise processes.failed("redis", f"exited with status {process.returncode}")
        try:
            if redis.Redis.from_url(url, socket_timeout=1).ping():
                return url
        except redis.RedisError:
            time.sleep(0.05)
    raise processes.failed("redis", f"did not answer within {timeout}s")


def release_stores(stores: SoakStores) -> None:
    if stores.redis_url and stores.flush_at_end:
        try:
            _flush_redis(stores.redis_url)
        except Exception as exc:  # cleanup must not hide the run's own outcome
            log(f"soak: could not flush {redact(stores.redis_url)}: {exc}")
    if stores.created_database:
        try:
            _drop_database(stores.created_database)
        except Exception as exc:
            log(f"soak: could not drop {redact(stores.created_database)}: {exc}")


# --- the ledger, read in the proxy's own environment ------------------------------------------

# Run with `manage.py shell -c` under the proxy's environment, so it reads the same database
# and Redis through the project's own modules (usage/counters.py owns every key name). It
# waits for the ledger to drain, then prints every row of the soak tenant and its counters.
LEDGER_SNIPPET = r"""
import json, os, time
from django.conf import settings
from django.utils import timezone
from tenants.models import Tenant
from usage import counters
from usage.models import UsageRecord
from usage.weeks import week_of

params = json.loads(os.environ["SOAK_CHECK"])
tenant = Tenant.objects.get(slug=params["tenant"])
rows = UsageRecord.objects.filter(tenant=tenant)
live = bool(settings.REDIS_URL)
client = counters.sync_client()
keys = counters.keys_for(tenant.pk, "-")
started = time.monotonic()
history = []
while True:
    state = {"t": round(time.monotonic() - started, 1), "rows": rows.count()}
    if live:
        state["pending"] = client.xlen(keys.ledger)
    history.append(state)
    # Drained: nothing left in the stream, and the row count held over the last two polls
    # (a settlement racing the check would show as a change). Without Redis the stream
    # lives in the proxy process, out of sight: the count reaching the admitted requests
    # and holding is all there is to go by.
    steady = len(history) >= 3 and len({h["rows"] for h in history[-3:]}) == 1
    enough = state["pending"] == 0 if live else state["rows"] >= params["expected"]
    if steady and enough or time.monotonic() - started > params["wait"]:
        break
    time.sleep(0.5)

out = {"tenant_id": tenant.pk, "live": live, "drain": history, "rows": [], "weeks": {}}
fields = ("request_id", "status", "http_status", "input_tokens", "output_tokens",
          "usage_reported", "cost_usd", "week", "stream", "model", "attempts", "counted")
for row in rows.values_list(*fields):
    item = dict(zip(fields, row))
    item["cost_nanos"] = int(item.pop("cost_usd") * 1000000000)
    out["rows"].append(item)
weeks = {r["week"] for r in out["rows"]} | {week_of(timezone.now()).id}
if live:
    for week in sorted(weeks):
        raw = client.hgetall(counters.keys_for(tenant.pk, week).week)
        out["weeks"][week] = {k.decode(): v.decode() for k, v in raw.items()}
    out["reservations"] = client.zcard(keys.resv)
    held = client.hgetall(keys.resv_tot)
    out["reserved_total"] = {k.decode(): v.decode() for k, v in held.items()}
    out["inflight"] = client.zcard(keys.inflight)
    out["pending"] = client.xlen(keys.ledger)
    out["dead_letter"] = client.xlen(keys.dead_letter)
print("SOAK-JSON " + json.dumps(out))
"""


def read_ledger(processes: Processes, *, expected: int, wait: float) -> dict[str, Any]:
    env = dict(processes.env)
    env["SOAK_CHECK"] = json.dumps({"tenant": TENANT, "expected": expected, "wait": wait})
    saved, processes.env = processes.env, env
    try:
        output = processes.manage("shell", "-c", LEDGER_SNIPPET, timeout=wait + 120)
    finally:
        processes.env = saved
    for line in output.splitlines():
        if line.startswith("SOAK-JSON "):
            data: dict[str, Any] = json.loads(line.removeprefix("SOAK-JSON "))
            return data
    raise BenchError(f"the ledger check printed no result:\n{output[-2000:]}")


ADMIN_USER = "soak-admin"
THIS_WEEK = re.compile(r'class="field-this_week">([^<]*)<')


def counters_from_admin(processes: Processes, port: int) -> str | None:
    """The tenant's live weekly usage as the admin shows it: the only way to see the embedded
    store's counters, which live inside the proxy process."""
    password = os.urandom(12).hex()
    env = dict(processes.env)
    env.update(
        DJANGO_SUPERUSER_USERNAME=ADMIN_USER,
        DJANGO_SUPERUSER_PASSWORD=password,
        DJANGO_SUPERUSER_EMAIL="soak@example.invalid",
    )
    saved, processes.env = processes.env, env
    try:
        processes.manage("createsuperuser", "--noinput")
    finally:
        processes.env = saved
    base = f"http://{HOST}:{port}"
    with httpx.Client(base_url=base, timeout=10, trust_env=False) as client:
        page = client.get("/admin/login/").text
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
        if token is None:
            return None
        client.post(
            "/admin/login/?next=/admin/",
            data={
                "csrfmiddlewaretoken": token.group(1),
                "username": ADMIN_USER,
                "password": password,
                "next": "/admin/",
            },
            headers={"Referer": f"{base}/admin/login/"},
        )
        page = client.get("/admin/tenants/tenant/", params={"q": TENANT}).text
    found = THIS_WEEK.search(page)
    return found.group(1).strip() if found else None


# --- analysis --------------------------------------------------------------------------------


def slope_per_1000(samples: Sequence[Sample], attr: str) -> float | None:
    """Least-squares slope of a resource against requests served, per 1000 requests."""
    points = [(s.requests, getattr(s, attr)) for s in samples if getattr(s, attr) is not None]
    if len(points) < 3:
        return None
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if not sxx:
        return None
    sxy = sum((x - mx) * (y - my) for x, y in points)
    return sxy / sxx * 1000


# What the ledger should say for what the client saw: (status, http_status) options.
def expected_ledger(result: Result) -> set[tuple[str, int]]:
    outcome = result.outcome
    if outcome == "ok":
        return {("ok", 200)}
    if outcome == "client disconnected":
        # The proxy may have finished relaying before it noticed the client leave.
        return {("client_disconnected", 499), ("ok", 200)}
    if outcome.startswith("stream error: "):
        code = outcome.removeprefix("stream error: ")
        return (
            {("upstream_timeout", 504)} if code == "upstream_timeout" else {("upstream_error", 502)}
        )
    if result.status >= 400:
        status = "upstream_timeout" if result.status == 504 else "upstream_error"
        return {(status, result.status)}
    return set()


@dataclass
class Check:
    name: str
    passed: bool | None  # None: skipped
    detail: str

    @property
    def label(self) -> str:
        return {True: "PASS", False: "FAIL", None: "SKIP"}[self.passed]


def analyse(
    results: list[Result],
    ledger: dict[str, Any],
    mock: MockRecords,
    admin_usage: str | None,
) -> dict[str, Any]:
    rows = {row["request_id"]: row for row in ledger["rows"]}
    seen = {r.request_id: r for r in results if r.request_id}
    admitted = {rid for rid, r in seen.items() if r.admitted}
    refused = {rid for rid, r in seen.items() if r.admitted is False}
    no_response = sum(1 for r in results if r.status == 0)
    missing = sorted(admitted - rows.keys())
    refused_with_row = sorted(refused & rows.keys())
    unknown_rows = sorted(rows.keys() - seen.keys())

    # What the ledger says against what the client saw, request by request.
    disagree: list[dict[str, Any]] = []
    crosstab: Counter[tuple[str, str]] = Counter()
    for rid in admitted & rows.keys():
        result, row = seen[rid], rows[rid]
        crosstab[(result.outcome, f"{row['status']} {row['http_status']}")] += 1
        if (row["status"], row["http_status"]) not in expected_ledger(result):
            disagree.append({"request_id": rid, "client": result.outcome, "ledger": row})

    # Token sums: ledger == counters, per usage week.
    weeks: dict[str, dict[str, int]] = defaultdict(lambda: {"tokens": 0, "nanos": 0, "rows": 0})
    for row in ledger["rows"]:
        w = weeks[row["week"]]
        w["tokens"] += row["input_tokens"] + row["output_tokens"]
        w["nanos"] += row["cost_nanos"]
        w["rows"] += 1
    counter_cmp = []
    for week, sums in sorted(weeks.items()):
        counter = ledger["weeks"].get(week, {})
        counter_cmp.append(
            {
                "week": week,
                "rows": sums["rows"],
                "ledger_tokens": sums["tokens"],
                "counter_tokens": int(counter["used_tokens"]) if "used_tokens" in counter else None,
                "ledger_nanos": sums["nanos"],
                "counter_nanos": int(counter["used_nanos"]) if "used_nanos" in counter else None,
            }
        )
    admin_tokens: int | None = None
    if admin_usage:
        found = re.match(r"([\d,]+) ", admin_usage)
        admin_tokens = int(found.group(1).replace(",", "")) if found else None

    # The provider's own count, request by request, where the proxy billed it.
    joined = mismatched = 0
    ledger_sum = [0, 0]
    mock_sum = [0, 0]
    unjoinable = 0
    mismatches: list[dict[str, Any]] = []
    own_counts = {"rows": 0, "ledger_output": 0, "mock_chunks": 0, "joined": 0}
    for rid, row in rows.items():
        result = seen.get(rid)
        record = mock.records.get(result.upstream_id or "") if result else None
        if not row["usage_reported"]:
            own_counts["rows"] += 1
            if record is not None:
                own_counts["joined"] += 1
                own_counts["ledger_output"] += row["output_tokens"]
                own_counts["mock_chunks"] += record["chunks_sent"]
            continue
        if record is None or record["usage"] is None:
            unjoinable += 1
            continue
        joined += 1
        mine = (row["input_tokens"], row["output_tokens"])
        theirs = (record["usage"]["input_tokens"], record["usage"]["output_tokens"])
        ledger_sum[0] += mine[0]
        ledger_sum[1] += mine[1]
        mock_sum[0] += theirs[0]
        mock_sum[1] += theirs[1]
        if mine != theirs:
            mismatched += 1
            if len(mismatches) < 5:
                mismatches.append({"request_id": rid, "ledger": mine, "mock": theirs})

    outcomes: dict[str, Counter[str]] = defaultdict(Counter)
    by_phase: dict[str, Counter[str]] = defaultdict(Counter)
    for r in results:
        outcomes[r.outcome][r.kind] += 1
        by_phase[r.phase][r.outcome] += 1
    return {
        "admitted": len(admitted),
        "refused": len(refused),
        "no_response": no_response,
        "rows": len(rows),
        "missing": missing,
        # Where the missing rows come from: what the client saw, and when.
        "missing_by": Counter(
            f"{seen[rid].kind}: {seen[rid].outcome} (phase {seen[rid].phase})" for rid in missing
        ).most_common(10),
        "missing_t": [min(seen[rid].t for rid in missing), max(seen[rid].t for rid in missing)]
        if missing
        else None,
        "refused_with_row": refused_with_row,
        "unknown_rows": unknown_rows,
        "disagree": disagree,
        "crosstab": {f"{a} | {b}": n for (a, b), n in sorted(crosstab.items())},
        "counters": counter_cmp,
        "admin_usage": admin_usage,
        "admin_tokens": admin_tokens,
        "mock": {
            "calls": mock.calls,
            "records_seen": len(mock.records),
            "polls": mock.polls,
            "reported_rows": len(rows) - own_counts["rows"],
            "joined": joined,
            "unjoinable": unjoinable,
            "mismatched": mismatched,
            "mismatches": mismatches,
            "ledger_tokens": {"input": ledger_sum[0], "output": ledger_sum[1]},
            "mock_tokens": {"input": mock_sum[0], "output": mock_sum[1]},
            "own_counts": own_counts,
        },
        "outcomes": {k: dict(v) for k, v in outcomes.items()},
        "by_phase": {k: dict(v) for k, v in by_phase.items()},
        # Every answer other than ok or a deliberate refusal, with when it was sent: a fault
        # in a phase that should have none may be the next phase's, met at the switch.
        "not_ok": [
            {
                "kind": r.kind,
                "phase": r.phase,
                "outcome": r.outcome,
                "sent_t": round(r.t - r.seconds, 2),
                "seconds": round(r.seconds, 3),
            }
            for r in results
            if r.outcome not in ("ok", "client disconnected") and r.admitted is not False
        ],
    }


def resource_summary(samples: list[Sample], start_index: int) -> dict[str, Any]:
    steady = samples[start_index:]
    out: dict[str, Any] = {}
    for attr in ("rss_mb", "fds", "threads"):
        values = [getattr(s, attr) for s in steady if getattr(s, attr) is not None]
        if not values:
            continue
        slope = slope_per_1000(steady, attr)
        # The second half alone: growth that is only the process warming up (allocator
        # arenas, pools, caches) flattens out there, while a leak keeps its slope.
        late = slope_per_1000(steady[len(steady) // 2 :], attr)
        out[attr] = {
            "start": values[0],
            "end": values[-1],
            "min": min(values),
            "max": max(values),
            "slope_per_1000": None if slope is None else round(slope, 3),
            "slope_second_half": None if late is None else round(late, 3),
        }
    return out


# Thresholds for the resource checks, explained in bench/README.md.
FD_MARGIN = 8
RSS_MARGIN_MB = 20.0


def checks(
    analysis: dict[str, Any],
    resources: dict[str, Any],
    results: list[Result],
    ledger: dict[str, Any],
    log_summary: dict[str, Any],
    watch: dict[str, Any],
) -> list[Check]:
    out = []
    if watch["watched"]:
        calls = watch["flush_calls"]
        out.append(
            Check(
                "the soak's Redis DB was left alone by other processes",
                not watch["wipes"],
                (
                    f"emptied from outside at t = {', '.join(map(str, watch['wipes']))} s"
                    if watch["wipes"]
                    else "its canary key stayed"
                )
                + f"; FLUSHALL / FLUSHDB calls on the server during the load: "
                f"{calls.get('flushall')} / {calls.get('flushdb')}",
            )
        )
    fds = resources.get("fds")
    if fds:
        out.append(
            Check(
                "no growth in open file descriptors",
                fds["end"] <= fds["start"] + FD_MARGIN,
                f"{fds['start']} -> {fds['end']} under load (allowed: start + {FD_MARGIN}); "
                f"min {fds['min']}, max {fds['max']}",
            )
        )
    rss = resources.get("rss_mb")
    if rss:
        out.append(
            Check(
                "RSS growth bounded",
                rss["end"] <= rss["start"] + RSS_MARGIN_MB,
                f"{rss['start']} -> {rss['end']} MiB (allowed: start + {RSS_MARGIN_MB:.0f} MiB); "
                f"slope {rss['slope_per_1000']} MiB per 1000 requests, "
                f"{rss['slope_second_half']} over the second half",
            )
        )
    statuses = Counter(r.status for r in results)
    internal = sum(1 for r in results if "internal_error" in r.outcome)
    out.append(
        Check(
            "no 500s",
            statuses[500] == 0 and internal == 0,
            f"{statuses[500]} responses with status 500, {internal} internal_error events",
        )
    )
    broken = Counter(
        r.outcome
        for r in results
        if r.status == 0
        or r.outcome.startswith("incomplete")
        or (r.admitted is False and r.kind.startswith(("openai", "anthropic")))
    )
    out.append(
        Check(
            "every answer well-formed (no transport error, timeout, truncated body, refusal)",
            not broken,
            ", ".join(f"{k}: {v}" for k, v in broken.most_common()) or "none",
        )
    )
    a = analysis
    rows_ok = not a["missing"] and not a["refused_with_row"] and not a["unknown_rows"]
    out.append(
        Check(
            "ledger rows == admitted requests",
            rows_ok,
            f"{a['rows']} rows, {a['admitted']} admitted; {len(a['missing'])} admitted without "
            f"a row, {len(a['refused_with_row'])} refused with a row, {len(a['unknown_rows'])} "
            f"rows for no response seen ({a['no_response']} requests got no response)"
            + (
                "; NOT the proxy's doing if the Redis DB was emptied from outside (above): the "
                "entries not yet drained went with it"
                if watch["wipes"] and a["missing"]
                else ""
            ),
        )
    )
    out.append(
        Check(
            "ledger status == what the client saw",
            not a["disagree"],
            f"{len(a['disagree'])} of {a['admitted']} admitted requests disagree",
        )
    )
    if ledger["live"]:
        bad = [
            c
            for c in a["counters"]
            if c["ledger_tokens"] != c["counter_tokens"] or c["ledger_nanos"] != c["counter_nanos"]
        ]
        detail = "; ".join(
            f"week {c['week']}: ledger {c['ledger_tokens']} tokens / {c['ledger_nanos']} nano-USD, "
            f"counter {c['counter_tokens']} / {c['counter_nanos']}"
            for c in a["counters"]
        )
        out.append(Check("ledger == Redis weekly counters (tokens and cost)", not bad, detail))
        leftovers = (
            ledger["reservations"],
            ledger["inflight"],
            ledger["pending"],
            ledger["dead_letter"],
        )
        out.append(
            Check(
                "no reservation, lease or ledger entry left behind",
                not any(leftovers),
                "reservations {}, in-flight leases {}, undrained entries {}, dead letters {}; "
                "reserved total {}".format(*leftovers, ledger["reserved_total"] or "{}"),
            )
        )
    else:
        this_week = a["counters"][-1] if a["counters"] else None
        if a["admin_tokens"] is None or this_week is None:
            out.append(
                Check("ledger == weekly counter (embedded store)", None, "admin page unreadable")
            )
        else:
            out.append(
                Check(
                    "ledger == weekly counter (embedded store, read from the admin)",
                    this_week["ledger_tokens"] == a["admin_tokens"],
                    f"ledger {this_week['ledger_tokens']} tokens, counter {a['admin_tokens']} "
                    f"({a['admin_usage']})",
                )
            )
    m = a["mock"]
    out.append(
        Check(
            "ledger == mock's usage, request by request (provider-reported rows)",
            m["mismatched"] == 0 and m["joined"] > 0,
            f"{m['joined']} of {m['reported_rows']} rows joined to the mock's record, "
            f"{m['mismatched']} differ; ledger {m['ledger_tokens']} vs mock {m['mock_tokens']}",
        )
    )
    out.append(
        Check(
            "proxy log: no ERROR or traceback",
            log_summary["errors"] == 0 and log_summary["tracebacks"] == 0,
            f"{log_summary['errors']} ERROR/CRITICAL lines, {log_summary['tracebacks']} "
            f"tracebacks ({log_summary['routine_5xx']} routine ERROR lines of Django's for "
            "the 502/504 answers the faults provoke are not counted)",
        )
    )
    return out


# Django logs every 5xx response at ERROR; these two are the answers the injected faults
# provoke. "Internal Server Error" (a 500) stays an error.
ROUTINE_5XX = ("Bad Gateway:", "Gateway Timeout:")
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (\w+) (\S+) (.*)$")


def summarise_log(path: Path) -> dict[str, Any]:
    """The proxy's own log lines (the access log left out), grouped by shape."""
    counts: Counter[str] = Counter()
    levels: Counter[str] = Counter()
    tracebacks = 0
    first_traceback: list[str] = []
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        lines = []
    in_traceback = False
    for line in lines:
        if line.startswith("Traceback"):
            tracebacks += 1
            in_traceback = tracebacks == 1
        if in_traceback and len(first_traceback) < 40:
            first_traceback.append(line)
        found = LOG_LINE.match(line)
        if found:
            in_traceback = False
            level, name, message = found.groups()
            if name == "django.request" and message.startswith(ROUTINE_5XX):
                level = "ROUTINE"  # Django's own line for a 502/504 the faults caused
            levels[level] += 1
            shape = re.sub(r"\b(req_[0-9a-f]+|\d+(\.\d+)?)\b", "#", message)[:140]
            counts[f"{level} {name} {shape}"] += 1
    return {
        "errors": levels["ERROR"] + levels["CRITICAL"],
        "warnings": levels["WARNING"],
        "routine_5xx": levels["ROUTINE"],
        "tracebacks": tracebacks,
        "top": counts.most_common(12),
        "first_traceback": first_traceback,
    }


# --- the report ------------------------------------------------------------------------------


def _cell(value: Any) -> str:
    return "n/a" if value is None else str(value)


def markdown_report(meta: dict[str, Any], data: dict[str, Any]) -> str:
    a = data["analysis"]
    res = data["resources"]
    m = meta["machine"]
    out = [
        "# llm-proxy soak test",
        "",
        f"- Date: {meta['date']}; git {m['git']}",
        f"- Machine: {m['os']}, nproc {m['nproc']} ({m['cpu']}); Python {m['python']}, "
        f"Django {m['django']}, Daphne {m['daphne']}",
        f"- Stores: database {meta['stores']['database']}; counters {meta['stores']['counters']}",
        f"- Load: {meta['seconds']:.0f} s ({meta['mode']}"
        + (
            f"; {meta['load_seconds']:.0f} s until the last answer"
            if meta["load_seconds"] - meta["seconds"] >= 1
            else ""
        )
        + f"), {meta['workers']} workers in one asyncio process, closed loop; "
        f"{meta['requests']} requests ({meta['requests'] / meta['load_seconds']:.1f}/s); "
        f"{meta['disconnect_share']:.0%} of streams abandoned by the client after the first "
        "content chunk",
        f"- Mock: {MOCK_CHUNKS} chunks, first after {MOCK_TTFT * 1000:.0f} ms, then every "
        f"{MOCK_CHUNK_DELAY * 1000:.0f} ms; faults rotated every {meta['phase_seconds']:.0f} s "
        f"after a {meta['warmup']:.0f} s warm-up: {', '.join(p.name for p in FAULT_PHASES)}",
        f"- Took {meta['duration_s']:.0f} s in all",
        "",
        "## Checks",
        "",
    ]
    out += [f"- **{c['label']}** {c['name']}: {c['detail']}" for c in data["checks"]]
    out += ["", "## Requests by outcome", ""]
    kinds = meta["kinds"]
    out.append("| outcome | " + " | ".join(kinds) + " | total |")
    out.append("|---|" + "---|" * (len(kinds) + 1))
    for outcome, per_kind in sorted(a["outcomes"].items(), key=lambda kv: -sum(kv[1].values())):
        cells = [str(per_kind.get(k, "")) for k in kinds]
        out.append(f"| {outcome} | " + " | ".join(cells) + f" | {sum(per_kind.values())} |")
    out += ["", "By fault phase (what was injected when the request was sent):", ""]
    out.append("| phase | requests | outcomes other than ok |")
    out.append("|---|---|---|")
    for phase in ["warm-up", *[p.name for p in FAULT_PHASES]]:
        counts = a["by_phase"].get(phase)
        if not counts:
            continue
        other = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()) if k != "ok") or "-"
        out.append(f"| {phase} | {sum(counts.values())} | {other} |")
    out += [
        "",
        "## Proxy resources",
        "",
        f"Sampled every {meta['sample_seconds']:.0f} s. Start = the first sample after the "
        "warm-up, end = the last one under load; slope = least-squares fit against requests "
        "served over that span. Load stopped = just after the last response, the client's "
        "connections closed; drained = after the ledger check.",
        "",
        "| | start | end | min | max | slope per 1000 requests | second half | load stopped "
        "| drained |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    stopped, after = data["stopped"], data["after_load"]
    for attr, label in (("rss_mb", "RSS MiB"), ("fds", "open fds"), ("threads", "threads")):
        r = res.get(attr)
        if r:
            out.append(
                f"| {label} | {r['start']} | {r['end']} | {r['min']} | {r['max']} | "
                f"{_cell(r['slope_per_1000'])} | {_cell(r['slope_second_half'])} | "
                f"{_cell(stopped.get(attr))} | "
                f"{_cell(after.get(attr))} |"
            )
    out += [
        "",
        "## Usage ledger",
        "",
        f"- Rows for tenant `{TENANT}`: {a['rows']}; admitted requests (responses past "
        f"admission): {a['admitted']}; refused before admission: {a['refused']}",
        f"- Drain: {' → '.join(str(h['rows']) for h in data['ledger_drain'][:12])} rows "
        f"(polled every 0.5 s after the load stopped)",
    ]
    for c in a["counters"]:
        line = (
            f"- Week {c['week']}: ledger {c['ledger_tokens']} tokens / {c['ledger_nanos']} nano-USD"
        )
        if c["counter_tokens"] is not None:
            line += f"; Redis counter {c['counter_tokens']} / {_cell(c['counter_nanos'])}"
        out.append(line)
    if a["admin_usage"] is not None:
        out.append(f"- Embedded counters, from the admin page: {a['admin_usage']}")
    mk = a["mock"]
    out += [
        f"- Mock: {mk['calls']} calls, {mk['records_seen']} records collected over "
        f"{mk['polls']} polls; {mk['joined']} of {mk['reported_rows']} provider-reported rows "
        f"joined to their mock record by the answer's id ({mk['unjoinable']} not), "
        f"{mk['mismatched']} differ. Tokens over the joined rows: ledger "
        f"{mk['ledger_tokens']}, mock {mk['mock_tokens']}",
        f"- Rows with the proxy's own counts (stream cut short, usage_reported false): "
        f"{mk['own_counts']['rows']}; for {mk['own_counts']['joined']} of them the ledger has "
        f"{mk['own_counts']['ledger_output']} output tokens where the mock sent "
        f"{mk['own_counts']['mock_chunks']} pieces (not expected to match: the proxy counts "
        "what it received before it stopped reading)",
        "",
        "Client outcome against ledger status (admitted requests):",
        "",
        "| client saw | ledger status, http_status | requests |",
        "|---|---|---|",
    ]
    for key, n in a["crosstab"].items():
        client, ledger = key.split(" | ")
        out.append(f"| {client} | {ledger} | {n} |")
    if a["disagree"]:
        out += ["", "First disagreements:", ""]
        out += [f"- `{json.dumps(d)}`" for d in a["disagree"][:5]]
    if a["missing"]:
        first, last = a["missing_t"]
        out += [
            "",
            f"Admitted without a row: {len(a['missing'])}, completed between t = {first} and "
            f"{last} s of the load; first ids {', '.join(a['missing'][:3])}. By kind, outcome "
            "and phase:",
            "",
        ]
        out += [f"- {what}: {n}" for what, n in a["missing_by"]]
    logs = data["proxy_log"]
    out += ["", "## Proxy log", ""]
    out.append(
        f"{logs['errors']} ERROR/CRITICAL lines, {logs['routine_5xx']} routine ERROR lines "
        f"(Django's `Bad Gateway` / `Gateway Timeout`), {logs['warnings']} WARNING lines, "
        f"{logs['tracebacks']} tracebacks; Daphne's access log left out."
    )
    if logs["top"]:
        out += ["", "| lines | level, logger, message |", "|---|---|"]
        out += [f"| {n} | `{shape}` |" for shape, n in logs["top"]]
    if logs["first_traceback"]:
        out += ["", "First traceback:", "", "```", *logs["first_traceback"], "```"]
    out.append("")
    return "\n".join(out)


# --- main ------------------------------------------------------------------------------------


async def soak_async(
    args: argparse.Namespace,
    *,
    mock_port: int,
    proxy_port: int,
    token: str,
    proxy_pid: int,
    redis_url: str | None,
) -> dict[str, Any]:
    mock = httpx.AsyncClient(base_url=f"http://{HOST}:{mock_port}", timeout=10, trust_env=False)
    try:
        await mock.post(
            "/_mock/config",
            json={"ttft": MOCK_TTFT, "chunk_delay": MOCK_CHUNK_DELAY, "faults": []},
        )
        stop = asyncio.Event()
        rotator = FaultRotator(mock, warmup=args.warmup, phase_seconds=args.phase_seconds)
        started = time.monotonic()
        load = Load(
            kinds=request_kinds(proxy_port, token),
            port=proxy_port,
            deadline=started + args.seconds,
            max_requests=args.max_requests,
            disconnect_share=args.disconnect_share,
            seed=args.seed,
            rotator=rotator,
            stop=stop,
            started=started,
        )
        samples: list[Sample] = []
        records = MockRecords()
        watch = RedisWatch(redis_url)
        helpers = [
            asyncio.create_task(rotator.run(started, stop)),
            asyncio.create_task(sampler(proxy_pid, load, samples, started, args.sample_seconds)),
            asyncio.create_task(mock_poller(mock, records, stop)),
            asyncio.create_task(watch.run(started, stop)),
        ]

        async def progress() -> None:
            while not stop.is_set():
                await _sleep_or_stop(stop, 15)
                done = len(load.results)
                last = samples[-1] if samples else None
                log(
                    f"  {time.monotonic() - started:5.0f} s  {done:6d} requests  phase "
                    f"{rotator.current:18}  proxy RSS {last and last.rss_mb} MiB, "
                    f"fds {last and last.fds}"
                )

        helpers.append(asyncio.create_task(progress()))
        try:
            await asyncio.gather(*(load.worker(i) for i in range(args.workers)))
        finally:
            stop.set()
            for task in helpers:
                # Let the rotator clear the faults; the others end at once on `stop`.
                with_timeout = asyncio.wait_for(task, timeout=10)
                try:
                    await with_timeout
                except Exception as exc:  # reported, but the run's figures still stand
                    log(f"soak: a helper task failed: {exc!r}")
        load_seconds = time.monotonic() - started
        # The sampler's last sample is the end under load. This one is taken with the
        # client's connections closed, so it shows what the proxy holds at rest.
        stopped = proc_sample(proxy_pid, load_seconds, len(load.results))
        await records.poll(mock)
        return {
            "results": load.results,
            "samples": samples,
            "stopped": stopped,
            "records": records,
            "timeline": rotator.timeline,
            "load_seconds": load_seconds,
            "redis_watch": await watch.finish(),
        }
    finally:
        await mock.aclose()


def run_soak(args: argparse.Namespace) -> int:
    began = time.monotonic()
    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    machine = machine_info()
    workdir = Path(tempfile.mkdtemp(prefix="llm-proxy-soak-"))
    stores: SoakStores | None = None
    processes = Processes(workdir, dict(os.environ))
    try:
        log(f"soak: work dir {workdir}")
        if args.private_redis:
            args.redis_url = start_private_redis(processes)
        stores = choose_stores(args, workdir)
        if args.private_redis:
            stores.flush_at_end = False
            stores.stores.counters_label = f"Redis, a private redis-server on {args.redis_url}"
        log(f"soak: database {stores.stores.database_label}")
        log(f"soak: counters {stores.stores.counters_label}")
        processes.env = child_env(workdir, stores.stores, None)
        processes.env.update(
            SOAK_OPENAI_KEY_1=OPENAI_KEY_1,
            SOAK_OPENAI_KEY_2=OPENAI_KEY_2,
            SOAK_ANTHROPIC_KEY=ANTHROPIC_KEY,
        )
        mock_port = processes.start_mock()
        processes.manage("migrate", "--noinput")
        processes.env.update(child_env(workdir, stores.stores, mock_port))
        processes.manage("apply_config", str(CONFIG_FILE))
        token = processes.manage("issue_token", TENANT, "--ttl", "1d").strip()
        proxy_port = processes.start_proxy()
        proxy_pid = processes.pids()["proxy"]
        log(
            f"soak: mock on :{mock_port}, proxy on :{proxy_port} (pid {proxy_pid}); "
            f"{args.seconds:.0f} s of load with {args.workers} workers"
        )
        run = asyncio.run(
            soak_async(
                args,
                mock_port=mock_port,
                proxy_port=proxy_port,
                token=token,
                proxy_pid=proxy_pid,
                redis_url=stores.redis_url,
            )
        )
        results: list[Result] = run["results"]
        samples: list[Sample] = run["samples"]
        admitted = sum(1 for r in results if r.admitted)
        log(f"soak: load done, {len(results)} requests; waiting for the ledger to drain")
        ledger = read_ledger(processes, expected=admitted, wait=args.drain_wait)
        admin_usage = None
        if not ledger["live"]:
            admin_usage = counters_from_admin(processes, proxy_port)
        after = proc_sample(proxy_pid, time.monotonic() - began, len(results))
        proxy_log = summarise_log(processes.children["proxy"][1])
    finally:
        processes.stop()
        if stores is not None and not args.keep:
            release_stores(stores)
        if args.keep:
            log(f"soak: kept {workdir} and the stores")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    start_index = next(
        (i for i, s in enumerate(samples) if s.t >= args.warmup), max(len(samples) - 1, 0)
    )
    resources = resource_summary(samples, start_index)
    analysis = analyse(results, ledger, run["records"], admin_usage)
    found = checks(analysis, resources, results, ledger, proxy_log, run["redis_watch"])
    meta = {
        "date": date,
        "machine": machine,
        "stores": {
            "database": stores.stores.database_label,
            "counters": stores.stores.counters_label,
        },
        "mode": "quick" if args.quick else "full",
        "seconds": args.seconds,
        "load_seconds": run["load_seconds"],
        "warmup": args.warmup,
        "phase_seconds": args.phase_seconds,
        "sample_seconds": args.sample_seconds,
        "workers": args.workers,
        "disconnect_share": args.disconnect_share,
        "seed": args.seed,
        "requests": len(results),
        "kinds": [k.name for k in request_kinds(0, "")],
        "timeline": run["timeline"],
        "duration_s": time.monotonic() - began,
    }
    meta["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    data = {
        "meta": meta,
        "checks": [asdict(c) | {"label": c.label} for c in found],
        "analysis": analysis,
        "resources": resources,
        "stopped": asdict(run["stopped"]),
        "after_load": asdict(after),
        "samples": [asdict(s) for s in samples],
        "ledger_drain": ledger["drain"],
        "redis_watch": run["redis_watch"],
        "proxy_log": proxy_log,
    }
    report = markdown_report(meta, data)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(report)
    output.with_suffix(".json").write_text(json.dumps(data, indent=2) + "\n")
    log(f"soak: wrote {output} and {output.with_suffix('.json')}")
    print(json.dumps(data, indent=2) if args.json else report)
    for c in found:
        log(f"soak: {c.label} {c.name}")
    return 1 if any(c.passed is False for c in found) else 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Soak the proxy: minutes of mixed load and rotating faults, then checks."
    )
    parser.add_argument("--quick", action="store_true", help="about 45 s of load")
    parser.add_argument("--minutes", type=float, help="minutes of load (default 3; quick 0.75)")
    parser.add_argument("--workers", type=int, default=16, help="concurrent requests (16)")
    parser.add_argument(
        "--max-requests", type=int, default=200_000, help="stop after this many (200000)"
    )
    parser.add_argument("--warmup", type=float, help="seconds before the first fault (10; quick 5)")
    parser.add_argument("--phase-seconds", type=float, help="seconds per fault phase (10; quick 6)")
    parser.add_argument("--sample-seconds", type=float, default=2.0, help="proxy sampling (2 s)")
    parser.add_argument(
        "--disconnect-share", type=float, default=0.10, help="streams the client abandons (0.10)"
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the request mix (1)")
    parser.add_argument(
        "--drain-wait", type=float, default=60.0, help="max seconds to wait for the ledger (60)"
    )
    parser.add_argument(
        "--database-url",
        help=f"the proxy's database, used as is (default: {DEFAULT_DATABASE_URL}, created and "
        "dropped by the run; SQLite if PostgreSQL is unreachable)",
    )
    parser.add_argument(
        "--redis-url",
        help=f"the proxy's Redis, FLUSHDB at start and end (default: {DEFAULT_REDIS_URL}; "
        "the embedded store if Redis is unreachable)",
    )
    parser.add_argument(
        "--private-redis",
        action="store_true",
        help="start a redis-server of the run's own (immune to other jobs' FLUSHALL)",
    )
    parser.add_argument(
        "--embedded", action="store_true", help="SQLite and the embedded counter store"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of markdown")
    parser.add_argument(
        "--output",
        default=str(RESULTS_DIR / "soak-latest.md"),
        help="the markdown report (JSON beside it); default bench/results/soak-latest.md",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the work dir, the database and the Redis DB"
    )
    args = parser.parse_args(argv)
    if args.minutes is None:
        args.minutes = 0.75 if args.quick else 3.0
    if args.warmup is None:
        args.warmup = 5.0 if args.quick else 10.0
    if args.phase_seconds is None:
        args.phase_seconds = 6.0 if args.quick else 10.0
    args.seconds = args.minutes * 60
    if args.seconds <= args.warmup or args.workers < 1 or args.phase_seconds <= 0:
        parser.error("--minutes must exceed the warm-up; --workers >= 1; --phase-seconds > 0")
    if not 0 <= args.disconnect_share <= 1:
        parser.error("--disconnect-share is a fraction between 0 and 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        with sigterm_as_interrupt():
            return run_soak(args)
    except BenchError as exc:
        log(f"soak: {exc}")
        return 2
    except KeyboardInterrupt:
        log("soak: interrupted; the mock and the proxy were stopped")
        return 130


if __name__ == "__main__":
    sys.exit(main())
