#!/usr/bin/env python
"""Benchmark the proxy against the mock provider it forwards to, both measured in one run.

    .venv/bin/python bench/run.py            # full run, about 3 minutes
    .venv/bin/python bench/run.py --quick    # smoke run, about 30 seconds
    .venv/bin/python bench/run.py --compare-clients   # which load generator to use
    .venv/bin/python bench/run.py --baseline-ref REF --redis-url redis://...
                                             # also an older revision's proxy, same rounds

The script starts its own mock provider and proxy (Daphne) on free loopback ports, in a
temporary var dir with a temporary SQLite database unless --database-url / --redis-url (or
DATABASE_URL / REDIS_URL) name other stores, and stops them on exit, Ctrl-C included.

Each scenario (route x stream x concurrency) is measured in several short rounds that alternate
direct (client -> mock) and proxy (client -> proxy -> mock), so both see the same machine
conditions; the report gives both sides' figures and their ratio. With --baseline-ref, a third
target joins the rotation: the proxy built from an older git revision (a detached worktree,
its own var dir and SQLite file), so the cost of everything added since shows as current vs
baseline, measured in the same rounds. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_FILE = REPO_ROOT / "bench" / "config.toml"
RESULTS_DIR = REPO_ROOT / "bench" / "results"
HOST = "127.0.0.1"
MOCK_KEY = "sk-bench-mock-key-0000"
MOCK_CHUNKS = 16
ANTHROPIC_VERSION = "2023-06-01"
LISTENING = re.compile(rb"mock provider listening on http://[^:\s]+:(\d+)")

# A content piece as it appears on the wire. The frames that precede the content (OpenAI's
# role chunk, Anthropic's content_block_start) carry an empty string, so "a non-empty string"
# is exactly "the first content chunk". Both the mock and the proxy write compact JSON.
OPENAI_CONTENT = re.compile(rb'"content":"[^"]')
ANTHROPIC_CONTENT = re.compile(rb'"text":"[^"]')

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


# --- what is sent ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RequestSpec:
    """One kind of request to one target, fixed for a whole scenario."""

    port: int
    path: str
    headers: dict[str, str]
    body: bytes
    stream: bool
    first_content: re.Pattern[bytes] | None  # streams: marks the first content chunk
    complete: bytes  # must occur in a successful response body

    def raw(self) -> bytes:
        """The whole HTTP/1.1 request, built once and written as is for every request."""
        lines = [f"POST {self.path} HTTP/1.1", f"Host: {HOST}:{self.port}"]
        lines += [f"{name}: {value}" for name, value in self.headers.items()]
        lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + self.body


def _json_body(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


MESSAGES = [
    {"role": "system", "content": "You are a terse assistant."},
    {"role": "user", "content": "Say hello in a few words."},
]


def openai_spec(*, port: int, bearer: str, model: str, stream: bool) -> RequestSpec:
    """An OpenAI chat-completions request: to the mock directly, or to the proxy."""
    body = {"model": model, "messages": MESSAGES, "stream": stream}
    return RequestSpec(
        port=port,
        path="/v1/chat/completions",
        headers={
            "Authorization": f"Bearer {bearer}",
            "Content-Type": "application/json",
            "Accept": "text/event-stream" if stream else "application/json",
        },
        body=_json_body(body),
        stream=stream,
        first_content=OPENAI_CONTENT if stream else None,
        complete=b"data: [DONE]" if stream else b'"usage"',
    )


def anthropic_spec(*, port: int, stream: bool) -> RequestSpec:
    """The Anthropic Messages request equivalent to the proxy's translated one, to the mock."""
    body: dict[str, Any] = {
        "model": "mock-claude",
        "system": MESSAGES[0]["content"],
        "messages": MESSAGES[1:],
        # What the proxy sends when the client names no limit (the tier's default_max_tokens).
        "max_tokens": 4096,
    }
    if stream:
        body["stream"] = True
    return RequestSpec(
        port=port,
        path="/v1/messages",
        headers={
            "x-api-key": MOCK_KEY,
            "anthropic-version": ANTHROPIC_VERSION,
            "Content-Type": "application/json",
            "Accept": "text/event-stream" if stream else "application/json",
        },
        body=_json_body(body),
        stream=stream,
        first_content=ANTHROPIC_CONTENT if stream else None,
        complete=b"message_stop" if stream else b'"usage"',
    )


@dataclass(frozen=True)
class Endpoint:
    """A second proxy to measure beside the current one: where it listens, and its token."""

    port: int
    token: str


@dataclass(frozen=True)
class Scenario:
    route: str  # "openai" or "anthropic": the kind of provider the proxy routes to
    stream: bool
    concurrency: int

    @property
    def label(self) -> str:
        return f"{self.route} {'stream' if self.stream else 'non-stream'} c={self.concurrency}"

    def specs(
        self, *, mock_port: int, proxy_port: int, token: str, baseline: Endpoint | None = None
    ) -> dict[str, RequestSpec]:
        model = "auto" if self.route == "openai" else "claude-bench"
        if self.route == "openai":
            direct = openai_spec(
                port=mock_port, bearer=MOCK_KEY, model="mock-model", stream=self.stream
            )
        else:
            direct = anthropic_spec(port=mock_port, stream=self.stream)
        specs = {
            "direct": direct,
            "proxy": openai_spec(port=proxy_port, bearer=token, model=model, stream=self.stream),
        }
        if baseline is not None:
            # Byte for byte the current proxy's request but for the port and the token, so
            # the two proxies are asked exactly the same thing.
            specs["baseline"] = openai_spec(
                port=baseline.port, bearer=baseline.token, model=model, stream=self.stream
            )
        return specs


def scenarios() -> list[Scenario]:
    """The same set in every mode: --quick only shortens the rounds."""
    return [
        Scenario("openai", False, 1),
        Scenario("openai", False, 32),
        Scenario("openai", True, 1),
        Scenario("openai", True, 32),
        Scenario("anthropic", False, 1),
        Scenario("anthropic", True, 1),
    ]


# --- load generators --------------------------------------------------------------------------
# Both keep one connection alive per concurrent worker. Which is cheaper was measured with
# --compare-clients (see README); the raw one is the default.


@dataclass(slots=True)
class Reply:
    status: int
    body: bytes
    first_content: float | None  # perf_counter() when the first content chunk arrived


class Session(Protocol):
    async def request(self, worker: int) -> Reply: ...

    async def aclose(self) -> None: ...


class _RawConnection(asyncio.Protocol):
    """A minimal HTTP/1.1 client connection: one request at a time, keep-alive.

    It parses just enough of the response (status, Content-Length or chunked framing,
    Connection: close) to know where it ends, and timestamps the first content chunk in
    data_received, the moment the bytes reach this process.
    """

    def __init__(self, first_content: re.Pattern[bytes] | None) -> None:
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self._pattern = first_content
        self._waiter: asyncio.Future[Reply] | None = None
        self._buf = bytearray()
        self._start_response()

    def _start_response(self) -> None:
        self._head_done = False
        self._status = 0
        self._length = -1
        self._chunked = False
        self._close = False
        self._body = bytearray()
        self._chunk_left = 0
        self._crlf_left = 0
        self._scanned = 0
        self._first: float | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(ConnectionError(f"connection lost: {exc}"))

    def send(self, data: bytes) -> asyncio.Future[Reply]:
        assert self.transport is not None
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return self._waiter

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        self._buf += data
        try:
            done = self._parse()
        except (ValueError, IndexError) as exc:
            if self._waiter is not None and not self._waiter.done():
                self._waiter.set_exception(ConnectionError(f"bad response: {exc}"))
            if self.transport is not None:
                self.transport.close()
            return
        if self._pattern is not None and self._first is None and len(self._body) > self._scanned:
            # Re-scan a little of what was already seen: a marker may straddle two reads.
            if self._pattern.search(self._body, max(0, self._scanned - 16)):
                self._first = now
            self._scanned = len(self._body)
        if done:
            reply = Reply(self._status, bytes(self._body), self._first)
            close = self._close
            self._start_response()
            if self._waiter is not None and not self._waiter.done():
                self._waiter.set_result(reply)
            if close and self.transport is not None:
                self.transport.close()

    def _parse(self) -> bool:
        """Consume what can be consumed; True once the response is complete."""
        buf = self._buf
        if not self._head_done:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return False
            lines = bytes(buf[:end]).split(b"\r\n")
            del buf[: end + 4]
            self._status = int(lines[0].split(b" ", 2)[1])
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                name, value = name.strip().lower(), value.strip().lower()
                if name == b"content-length":
                    self._length = int(value)
                elif name == b"transfer-encoding":
                    self._chunked = b"chunked" in value
                elif name == b"connection":
                    self._close = value == b"close"
            self._head_done = True
        if not self._chunked:
            if self._length < 0:
                raise ValueError("neither Content-Length nor chunked")
            take = self._length - len(self._body)
            self._body += buf[:take]
            del buf[:take]
            return len(self._body) >= self._length
        while True:
            if self._chunk_left:
                take = min(self._chunk_left, len(buf))
                self._body += buf[:take]
                del buf[:take]
                self._chunk_left -= take
                if self._chunk_left:
                    return False
            if self._crlf_left:
                if len(buf) < 2:
                    return False
                del buf[:2]
                self._crlf_left = 0
            line_end = buf.find(b"\r\n")
            if line_end < 0:
                return False
            size = int(bytes(buf[:line_end]).split(b";", 1)[0], 16)
            if size == 0:
                # The last chunk; no trailers are ever sent, so an empty line ends it.
                if len(buf) < line_end + 4:
                    return False
                del buf[: line_end + 4]
                return True
            del buf[: line_end + 2]
            self._chunk_left, self._crlf_left = size, 2


class RawSession:
    """Lean asyncio-protocol client: one keep-alive connection per worker."""

    def __init__(self, spec: RequestSpec, concurrency: int) -> None:
        self._spec = spec
        self._data = spec.raw()
        self._conns: list[_RawConnection | None] = [None] * concurrency

    async def _connect(self) -> _RawConnection:
        loop = asyncio.get_running_loop()
        pattern = self._spec.first_content
        _, protocol = await loop.create_connection(
            lambda: _RawConnection(pattern), HOST, self._spec.port
        )
        return protocol

    async def request(self, worker: int) -> Reply:
        conn = self._conns[worker]
        if conn is None or conn.lost:
            conn = self._conns[worker] = await self._connect()
        return await conn.send(self._data)

    async def aclose(self) -> None:
        for conn in self._conns:
            if conn is not None and conn.transport is not None:
                conn.transport.close()
        await asyncio.sleep(0)  # let the transports finish closing


class HttpxSession:
    """httpx.AsyncClient with a pool sized to the concurrency."""

    def __init__(self, spec: RequestSpec, concurrency: int) -> None:
        self._spec = spec
        self._client = httpx.AsyncClient(
            base_url=f"http://{HOST}:{spec.port}",
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
            timeout=httpx.Timeout(30.0),
            # A proxy from the environment must never sit between the bench and its targets.
            trust_env=False,
        )

    async def request(self, worker: int) -> Reply:
        spec = self._spec
        if not spec.stream:
            response = await self._client.post(spec.path, content=spec.body, headers=spec.headers)
            return Reply(response.status_code, response.content, None)
        pattern = spec.first_content
        async with self._client.stream(
            "POST", spec.path, content=spec.body, headers=spec.headers
        ) as response:
            body = bytearray()
            first: float | None = None
            async for chunk in response.aiter_raw():
                start = max(0, len(body) - 16)
                body += chunk
                if first is None and pattern is not None and pattern.search(body, start):
                    first = time.perf_counter()
            return Reply(response.status_code, bytes(body), first)

    async def aclose(self) -> None:
        await self._client.aclose()


CLIENTS: dict[str, Callable[[RequestSpec, int], Session]] = {
    "raw": RawSession,
    "httpx": HttpxSession,
}


# --- measuring --------------------------------------------------------------------------------


def process_cpu(pid: int) -> float | None:
    """CPU seconds (user + system, all threads) a process has used so far; None off Linux."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def process_rss_mb(pid: int) -> float | None:
    """Resident memory of a process in MiB; None off Linux."""
    with suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    return None


@dataclass
class Phase:
    """One target measured for a few seconds."""

    requests: int = 0
    errors: int = 0
    elapsed: float = 0.0
    latencies: list[float] = field(default_factory=list)
    ttfbs: list[float] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)  # seconds used, per process
    first_error: str | None = None

    @property
    def rps(self) -> float:
        return self.requests / self.elapsed if self.elapsed else 0.0


def check_reply(spec: RequestSpec, reply: Reply) -> str | None:
    """Why a reply does not count as a success, or None."""
    if reply.status != 200:
        return f"HTTP {reply.status}: {reply.body[:300]!r}"
    if spec.complete not in reply.body:
        return f"incomplete body (no {spec.complete!r}): {reply.body[-300:]!r}"
    if spec.stream and reply.first_content is None:
        return f"no content chunk in the stream: {reply.body[:300]!r}"
    return None


async def measure(
    session: Session,
    spec: RequestSpec,
    *,
    concurrency: int,
    seconds: float,
    pids: dict[str, int],
) -> Phase:
    """Closed loop: `concurrency` workers send back to back until `seconds` have passed."""
    phase = Phase()
    latencies, ttfbs = phase.latencies, phase.ttfbs
    deadline = time.perf_counter() + seconds

    async def failed(problem: str) -> None:
        phase.errors += 1
        phase.first_error = phase.first_error or problem
        await asyncio.sleep(0.01)  # a refusing target must not turn into a busy loop

    async def worker(index: int) -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            try:
                reply = await session.request(index)
            except (OSError, httpx.HTTPError) as exc:
                await failed(f"{type(exc).__name__}: {exc}")
                continue
            finished = time.perf_counter()
            problem = check_reply(spec, reply)
            if problem is not None:
                await failed(problem)
                continue
            phase.requests += 1
            latencies.append(finished - started)
            if reply.first_content is not None:
                ttfbs.append(reply.first_content - started)

    cpu_before = {name: process_cpu(pid) for name, pid in pids.items()}
    client_before = time.process_time()
    started = time.perf_counter()
    # One watchdog for the whole phase rather than a timeout per request, which would cost
    # the client a timer per request.
    async with asyncio.timeout(seconds + 30):
        await asyncio.gather(*(worker(i) for i in range(concurrency)))
    phase.elapsed = time.perf_counter() - started
    phase.cpu["client"] = time.process_time() - client_before
    for name, pid in pids.items():
        before, after = cpu_before[name], process_cpu(pid)
        if before is not None and after is not None:
            phase.cpu[name] = after - before
    return phase


@dataclass
class Tally:
    """One target's phases in one scenario, pooled over the rounds."""

    requests: int = 0
    errors: int = 0
    elapsed: float = 0.0
    latencies: list[float] = field(default_factory=list)
    ttfbs: list[float] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)
    round_rps: list[float] = field(default_factory=list)
    first_error: str | None = None

    def add(self, phase: Phase) -> None:
        self.requests += phase.requests
        self.errors += phase.errors
        self.elapsed += phase.elapsed
        self.latencies += phase.latencies
        self.ttfbs += phase.ttfbs
        for name, seconds in phase.cpu.items():
            self.cpu[name] = self.cpu.get(name, 0.0) + seconds
        self.round_rps.append(phase.rps)
        self.first_error = self.first_error or phase.first_error

    @property
    def rps(self) -> float:
        return self.requests / self.elapsed if self.elapsed else 0.0

    def cpu_ms_per_request(self) -> dict[str, float]:
        done = max(self.requests + self.errors, 1)
        return {name: seconds * 1000 / done for name, seconds in self.cpu.items()}

    def summary(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "seconds": round(self.elapsed, 3),
            "rps": round(self.rps, 2),
            "round_rps": [round(r, 2) for r in self.round_rps],
            "latency_ms": percentiles_ms(self.latencies),
            "ttfb_ms": percentiles_ms(self.ttfbs) if self.ttfbs else None,
            "cpu_ms_per_request": {k: round(v, 3) for k, v in self.cpu_ms_per_request().items()},
            "first_error": self.first_error,
        }


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    if not values:
        return math.nan
    rank = max(1, math.ceil(pct / 100 * len(values)))
    return values[min(rank, len(values)) - 1]


def percentiles_ms(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        name: round(percentile(ordered, pct) * 1000, 3)
        for name, pct in (("p50", 50), ("p90", 90), ("p99", 99))
    } | {"max": round(ordered[-1] * 1000, 3) if ordered else math.nan}


@dataclass
class ScenarioResult:
    scenario: Scenario
    tallies: dict[str, Tally]

    def cpu_ratio(self) -> float | None:
        """The proxy's CPU per request in units of the mock's CPU per direct request.

        Contention on a shared machine inflates every process's CPU time alike, so this
        quotient holds far steadier than either figure does on its own.
        """
        proxy = self.tallies["proxy"].cpu_ms_per_request().get("proxy")
        mock = self.tallies["direct"].cpu_ms_per_request().get("mock")
        return proxy / mock if proxy is not None and mock else None

    def round_ratios(self, over: str = "direct", target: str = "proxy") -> list[float]:
        """target's req/s over `over`'s, round by round (both measured in the same round)."""
        below, above = self.tallies[over].round_rps, self.tallies[target].round_rps
        return [a / b for b, a in zip(below, above, strict=True) if b]

    def own_cpu(self, target: str) -> float | None:
        """CPU ms per request of the process serving `target` (mock for direct)."""
        process = "mock" if target == "direct" else target
        return self.tallies[target].cpu_ms_per_request().get(process)

    def vs_baseline(self) -> dict[str, Any] | None:
        """The current proxy against the baseline proxy: what the newer code costs."""
        if "baseline" not in self.tallies:
            return None
        base, current = self.tallies["baseline"], self.tallies["proxy"]
        bl, cl = percentiles_ms(base.latencies), percentiles_ms(current.latencies)
        base_cpu, current_cpu, mock_cpu = (self.own_cpu(t) for t in ("baseline", "proxy", "direct"))
        out: dict[str, Any] = {
            "rps_ratio": round(current.rps / base.rps, 4) if base.rps else None,
            "round_rps_ratios": [round(r, 4) for r in self.round_ratios("baseline")],
            "baseline_rps_vs_direct": (
                round(base.rps / self.tallies["direct"].rps, 4)
                if self.tallies["direct"].rps
                else None
            ),
            "added_latency_ms": {k: round(cl[k] - bl[k], 3) for k in ("p50", "p99")},
            "cpu_ms_per_request": {
                "proxy": None if current_cpu is None else round(current_cpu, 3),
                "baseline": None if base_cpu is None else round(base_cpu, 3),
            },
            "added_cpu_ms_per_request": (
                round(current_cpu - base_cpu, 3)
                if current_cpu is not None and base_cpu is not None
                else None
            ),
            # As with proxy_cpu_vs_direct_mock: both in units of the mock's CPU per direct
            # request, which contention disturbs far less than either absolute figure.
            "baseline_cpu_vs_direct_mock": (
                round(base_cpu / mock_cpu, 2) if base_cpu is not None and mock_cpu else None
            ),
            "cpu_ratio": (
                round(current_cpu / base_cpu, 3) if current_cpu is not None and base_cpu else None
            ),
        }
        if base.ttfbs and current.ttfbs:
            bt, ct = percentiles_ms(base.ttfbs), percentiles_ms(current.ttfbs)
            out["added_ttfb_ms"] = {k: round(ct[k] - bt[k], 3) for k in ("p50", "p99")}
        return out

    def summary(self) -> dict[str, Any]:
        direct, proxy = self.tallies["direct"], self.tallies["proxy"]
        dl, pl = percentiles_ms(direct.latencies), percentiles_ms(proxy.latencies)
        cpu = self.cpu_ratio()
        out: dict[str, Any] = {
            "route": self.scenario.route,
            "stream": self.scenario.stream,
            "concurrency": self.scenario.concurrency,
            "direct": direct.summary(),
            "proxy": proxy.summary(),
            "rps_ratio": round(proxy.rps / direct.rps, 4) if direct.rps else None,
            "round_rps_ratios": [round(r, 4) for r in self.round_ratios()],
            "added_latency_ms": {k: round(pl[k] - dl[k], 3) for k in ("p50", "p99")},
            "proxy_cpu_vs_direct_mock": None if cpu is None else round(cpu, 2),
        }
        if direct.ttfbs and proxy.ttfbs:
            dt, pt = percentiles_ms(direct.ttfbs), percentiles_ms(proxy.ttfbs)
            out["added_ttfb_ms"] = {k: round(pt[k] - dt[k], 3) for k in ("p50", "p99")}
        if "baseline" in self.tallies:
            out["baseline"] = self.tallies["baseline"].summary()
            out["vs_baseline"] = self.vs_baseline()
        return out


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def probe(spec: RequestSpec, client: str, what: str) -> None:
    """One request, checked in full, so a misconfiguration fails loudly before any timing."""
    session = CLIENTS[client](spec, 1)
    try:
        async with asyncio.timeout(30):
            reply = await session.request(0)
    except (OSError, httpx.HTTPError, TimeoutError) as exc:
        raise BenchError(f"{what}: the probe request failed: {type(exc).__name__}: {exc}") from exc
    finally:
        await session.aclose()
    problem = check_reply(spec, reply)
    if problem is not None:
        raise BenchError(f"{what}: the probe request failed: {problem}")
    if not spec.stream:
        payload = json.loads(reply.body)
        if not isinstance(payload, dict) or not payload.get("usage"):
            raise BenchError(f"{what}: unexpected probe reply {reply.body[:300]!r}")


async def run_scenario(
    scenario: Scenario,
    specs: dict[str, RequestSpec],
    *,
    client: str,
    rounds: int,
    seconds: float,
    warmup: float,
    pids: dict[str, int],
) -> ScenarioResult:
    c = scenario.concurrency
    sessions = {target: CLIENTS[client](spec, c) for target, spec in specs.items()}
    tallies = {target: Tally() for target in specs}
    targets = list(specs)
    try:
        for target in targets:
            # Opens the connections (the proxy's upstream pool too) and fills the caches.
            await measure(sessions[target], specs[target], concurrency=c, seconds=warmup, pids={})
        for index in range(rounds):
            # Rotate who goes first, so a drift in machine load hits every target alike. With
            # two targets this is plain alternation; with three, each takes every position.
            shift = index % len(targets)
            order = targets[shift:] + targets[:shift]
            figures = []
            for target in order:
                phase = await measure(
                    sessions[target], specs[target], concurrency=c, seconds=seconds, pids=pids
                )
                tallies[target].add(phase)
                figures.append(f"{target} {phase.rps:7.1f}/s")
                if phase.errors:
                    figures[-1] += f" ({phase.errors} errors)"
            log(f"  {scenario.label:28} round {index + 1}/{rounds}: " + ", ".join(figures))
    finally:
        for session in sessions.values():
            await session.aclose()
    return ScenarioResult(scenario, tallies)


# --- processes --------------------------------------------------------------------------------


class BenchError(Exception):
    pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


# Daphne's access log (on by default at verbosity 1): one line per request, never the clue.
ACCESS_LOG_LINE = re.compile(r"^\S+ - - \[")


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    kept = [line for line in text.splitlines() if not ACCESS_LOG_LINE.match(line)]
    return "\n".join(kept[-lines:])


class Processes:
    """The child processes of this run: started here, and always stopped here."""

    def __init__(self, workdir: Path, env: dict[str, str], *, root: Path = REPO_ROOT) -> None:
        self.workdir = workdir
        self.env = env
        # The checkout the children run from: this one, or a baseline worktree. Both the
        # script and `-m` put their directory first on sys.path, ahead of the venv's editable
        # install of this checkout, so the code imported is root's.
        self.root = root
        self.children: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}

    def manage(self, *args: str, timeout: float = 180) -> str:
        """Run a management command to completion; its stdout, or BenchError with stderr."""
        result = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=self.root,
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise BenchError(
                f"manage.py {' '.join(args)} failed ({result.returncode}):\n"
                + result.stderr.decode(errors="replace")[-3000:]
            )
        return result.stdout.decode()

    def spawn(self, name: str, command: list[str]) -> subprocess.Popen[bytes]:
        log_path = self.workdir / f"{name}.log"
        # A file, not a pipe: nobody has to keep draining it while the child runs.
        handle: IO[bytes] = log_path.open("wb")
        try:
            process = subprocess.Popen(
                command,
                cwd=self.root,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=handle,
                stderr=subprocess.STDOUT,
            )
        finally:
            handle.close()
        self.children[name] = (process, log_path)
        return process

    def output(self, name: str) -> str:
        """The end of a child's output, access log left out."""
        return _tail(self.children[name][1]) if name in self.children else ""

    def failed(self, name: str, problem: str) -> BenchError:
        return BenchError(f"{name} {problem}; its output:\n{self.output(name)}")

    def start_mock(self, *, timeout: float = 30) -> int:
        process = self.spawn(
            "mock",
            [
                sys.executable,
                "manage.py",
                "mock_provider",
                f"--host={HOST}",
                "--port=0",
                f"--chunks={MOCK_CHUNKS}",
                "--chunk-delay=0",
                "--ttft=0",
            ],
        )
        log_path = self.children["mock"][1]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = LISTENING.search(log_path.read_bytes())
            if found:
                return int(found.group(1))
            if process.poll() is not None:
                raise self.failed("mock", f"exited with status {process.returncode}")
            time.sleep(0.02)
        raise self.failed("mock", f"did not listen within {timeout}s")

    def start_proxy(self, *, name: str = "proxy", timeout: float = 60) -> int:
        # Daphne cannot report a port it chose itself, so one is picked here; the tiny race
        # with another process taking it in between would show up as a start-up failure.
        port = free_port()
        process = self.spawn(
            name,
            [
                sys.executable,
                "-m",
                "daphne",
                "-b",
                HOST,
                "-p",
                str(port),
                "proxy_site.asgi:application",
            ],
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise self.failed(name, f"exited with status {process.returncode}")
            try:
                # Any HTTP answer (401 without a token) means Django is loaded and serving.
                httpx.get(f"http://{HOST}:{port}/v1/models", timeout=2, trust_env=False)
                return port
            except httpx.HTTPError:
                time.sleep(0.05)
        raise self.failed(name, f"did not answer within {timeout}s")

    def pids(self) -> dict[str, int]:
        return {name: process.pid for name, (process, _) in self.children.items()}

    def stop(self) -> None:
        for process, _ in self.children.values():
            if process.poll() is None:
                process.terminate()
        for name, (process, _) in self.children.items():
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                log(f"{name} (pid {process.pid}) ignored SIGTERM; killing it")
                process.kill()
                process.wait()


def redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


@dataclass
class Stores:
    database_url: str
    redis_url: str | None
    database_label: str
    counters_label: str


def choose_stores(args: argparse.Namespace, workdir: Path) -> Stores:
    database_url = args.database_url or os.environ.get("DATABASE_URL") or ""
    redis_url = args.redis_url or os.environ.get("REDIS_URL") or None
    if database_url:
        source = "--database-url" if args.database_url else "env DATABASE_URL"
        database_label = f"{redact(database_url)} (from {source})"
    else:
        database_url = f"sqlite:///{workdir / 'bench.sqlite3'}"
        database_label = "SQLite, temporary file (default)"
    if redis_url:
        source = "--redis-url" if args.redis_url else "env REDIS_URL"
        counters_label = f"Redis {redact(redis_url)} (from {source})"
    else:
        counters_label = "embedded in-process store (REDIS_URL unset)"
    return Stores(database_url, redis_url, database_label, counters_label)


def child_env(workdir: Path, stores: Stores, mock_port: int | None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("REDIS_URL", None)
    env.update(
        {
            # Isolated from the developer's var/: fresh dev secrets, static dir and database.
            "PROXY_VAR_DIR": str(workdir / "var"),
            "DATABASE_URL": stores.database_url,
            "LOG_LEVEL": "WARNING",
            "BENCH_MOCK_KEY": MOCK_KEY,
        }
    )
    if stores.redis_url:
        env["REDIS_URL"] = stores.redis_url
    if mock_port is not None:
        env["BENCH_MOCK_PORT"] = str(mock_port)
    return env


# --- the baseline: an older revision's proxy, measured beside the current one ---------------


def git(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", *args],
        cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@dataclass
class BaselineRev:
    ref: str  # as given on the command line
    commit: str  # the full hash it names
    title: str  # short hash and subject, for the report
    commits_between: list[str]  # short hash and subject of each commit from it to HEAD


def resolve_baseline(ref: str) -> BaselineRev:
    """The commit REF names, checked before anything is started."""
    found = git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    commit = found.stdout.strip()
    if found.returncode != 0 or not commit:
        raise BenchError(
            f"--baseline-ref {ref}: no such commit in {REPO_ROOT} (see `git log --oneline`)"
        )
    title = git("log", "-1", "--format=%h %s", commit).stdout.strip()
    between = git("log", "--format=%h %s", f"{commit}..HEAD").stdout.splitlines()
    return BaselineRev(ref, commit, title or commit[:7], between)


def remove_worktree(tree: Path) -> None:
    """Best effort: a leftover worktree only clutters `git worktree list`, so warn, not fail."""
    removed = git("worktree", "remove", "--force", str(tree))
    if removed.returncode != 0 and tree.exists():
        log(f"bench: could not remove the worktree {tree}: {removed.stderr.strip()}")
    # Clears the registration too when the directory went away by other means.
    git("worktree", "prune")


# Where the old apply_config names a field or section it does not know, e.g.
# "[tiers.bench]: unknown field(s) foo, bar." or "Unknown top-level section(s): limits."
UNKNOWN_FIELDS = re.compile(r"(\[[^\s:]*(?: #\d+)?): unknown field\(s\) ([\w, -]+)\.")
UNKNOWN_SECTIONS = re.compile(r"Unknown top-level section\(s\): ([\w, -]+)\.")
TABLE_WHERE = re.compile(r"^\[(\w+)\.([^\]]+)\](?:\.(\w+)\[(\d+)\])?$")
ARRAY_WHERE = re.compile(r"^\[\[(\w+)\]\] #(\d+)$")


def _strip_unknown(data: dict[str, Any], error: str) -> list[str]:
    """Drop what the old code's error names from the parsed config; what was dropped."""
    dropped: list[str] = []
    sections = UNKNOWN_SECTIONS.search(error)
    if sections:
        for name in sections.group(1).split(", "):
            if data.pop(name, None) is not None:
                dropped.append(f"[{name}]")
    for where, names in UNKNOWN_FIELDS.findall(error):
        table: Any = None
        if match := TABLE_WHERE.match(where):
            section, slug, array, index = match.groups()
            named = data.get(section)
            table = named.get(slug) if isinstance(named, dict) else None
            if array is not None and isinstance(table, dict):
                items = table.get(array, [])
                table = items[int(index)] if int(index) < len(items) else None
        elif match := ARRAY_WHERE.match(where):
            items = data.get(match.group(1))
            index = int(match.group(2)) - 1
            if isinstance(items, list) and 0 <= index < len(items):
                table = items[index]
        if not isinstance(table, dict):
            continue
        for name in names.split(", "):
            if table.pop(name, None) is not None:
                dropped.append(f"{where}.{name}")
    return dropped


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        # A JSON string is a valid TOML basic string (json.dumps never writes the one escape
        # TOML lacks, "\/").
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        pairs = ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items())
        return "{ " + pairs + " }"
    raise BenchError(f"cannot write {value!r} back as TOML")


def _named_tables(value: Any) -> bool:
    return (
        isinstance(value, dict) and bool(value) and all(isinstance(t, dict) for t in value.values())
    )


def _table_array(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(t, dict) for t in value)


def toml_dumps(data: dict[str, Any]) -> str:
    """Enough TOML for the shape of bench/config.toml: named tables, arrays of tables."""
    # Plain keys first: after the first [header] they would belong to that table.
    lines = [
        f"{_toml_key(k)} = {_toml_value(v)}"
        for k, v in data.items()
        if not _named_tables(v) and not _table_array(v)
    ]
    for name, section in data.items():
        if _named_tables(section):
            headed = [(f"[{_toml_key(name)}.{_toml_key(slug)}]", t) for slug, t in section.items()]
        elif _table_array(section):
            headed = [(f"[[{_toml_key(name)}]]", t) for t in section]
        else:
            continue
        for header, table in headed:
            lines += ["", header]
            lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in table.items()]
    text = "\n".join(lines) + "\n"
    # A writer this small gets checked, not trusted.
    try:
        same = tomllib.loads(text) == data
    except tomllib.TOMLDecodeError:
        same = False
    if not same:
        raise BenchError("the baseline's copy of the bench config did not read back the same")
    return text


def apply_config_compatible(processes: Processes, workdir: Path) -> list[str]:
    """Apply this tree's bench/config.toml with the old code, minus what the old code lacks.

    The old apply_config validates everything before writing, in one transaction, and names
    the first unknown thing it meets, so a refused file changes nothing and the next attempt
    can go on from there. Returns what had to be left out (empty: the file as it is).
    """
    dropped: list[str] = []
    path = CONFIG_FILE
    data = tomllib.loads(CONFIG_FILE.read_text())
    for _ in range(20):
        try:
            processes.manage("apply_config", str(path))
            return dropped
        except BenchError as exc:
            newly = _strip_unknown(data, str(exc))
            if not newly:
                raise
            dropped += newly
            path = workdir / "config-for-baseline.toml"
            path.write_text(toml_dumps(data))
            log(f"bench: the baseline's config schema lacks {', '.join(newly)}; left out")
    raise BenchError("the baseline's apply_config kept refusing the bench config")


@dataclass
class Baseline:
    rev: BaselineRev
    workdir: Path
    tree: Path
    processes: Processes
    port: int = 0
    token: str = ""
    config_dropped: list[str] = field(default_factory=list)

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint(self.port, self.token)


def baseline_env(workdir: Path, mock_port: int) -> dict[str, str]:
    env = dict(os.environ)
    # The old code predates the counter store and must not share the current proxy's stores.
    for name in ("REDIS_URL", "DATABASE_URL"):
        env.pop(name, None)
    env.update(
        {
            # Its own dev secrets (so its own JWT keys and token), static dir and database,
            # migrated by its own migrations.
            "PROXY_VAR_DIR": str(workdir / "var"),
            "DATABASE_URL": f"sqlite:///{workdir / 'baseline.sqlite3'}",
            "LOG_LEVEL": "WARNING",
            "BENCH_MOCK_KEY": MOCK_KEY,
            "BENCH_MOCK_PORT": str(mock_port),
        }
    )
    return env


def new_baseline(rev: BaselineRev, workdir: Path, mock_port: int) -> Baseline:
    """Nothing started yet: the caller holds this before start_baseline, so that its finally
    block can stop the baseline and remove its worktree however far start-up got."""
    workdir.mkdir(parents=True, exist_ok=True)
    tree = workdir / "tree"
    env = baseline_env(workdir, mock_port)
    return Baseline(rev, workdir, tree, Processes(workdir, env, root=tree))


def start_baseline(baseline: Baseline) -> None:
    """Check out the revision in a detached worktree and serve it like the current proxy."""
    rev, tree, workdir = baseline.rev, baseline.tree, baseline.workdir
    added = git("worktree", "add", "--detach", str(tree), rev.commit, timeout=120)
    if added.returncode != 0:
        raise BenchError(f"git worktree add {rev.ref} failed: {added.stderr.strip()}")
    # Cheap insurance against measuring the current code twice: the venv holds an editable
    # install of this checkout, which must lose to the worktree on sys.path.
    where = subprocess.run(
        [sys.executable, "-c", "import routing; print(routing.__file__)"],
        cwd=tree,
        env=baseline.processes.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    ).stdout.strip()
    if not where or not Path(where).resolve().is_relative_to(tree.resolve()):
        raise BenchError(f"the baseline would import {where or 'nothing'}, not {tree}")
    baseline.processes.manage("migrate", "--noinput")
    baseline.config_dropped = apply_config_compatible(baseline.processes, workdir)
    baseline.token = baseline.processes.manage("issue_token", "bench", "--ttl", "1d").strip()
    baseline.port = baseline.processes.start_proxy(name="baseline")


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Let `kill PID` clean up like Ctrl-C does (the finally blocks stop the children)."""

    def handler(signum: int, frame: Any) -> None:
        # Whatever Ctrl-C would do right now: inside asyncio.run, the runner's handler cancels
        # the main task (so every await unwinds cleanly); outside it, KeyboardInterrupt.
        on_interrupt = signal.getsignal(signal.SIGINT)
        if callable(on_interrupt):
            on_interrupt(signal.SIGINT, frame)
        else:
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# --- the report -------------------------------------------------------------------------------


def _git_revision() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head or 'unknown'}{' + uncommitted changes' if dirty else ''}"


def _cpu_model() -> str:
    with suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def machine_info() -> dict[str, Any]:
    import daphne
    import django

    return {
        "nproc": os.cpu_count(),
        "cpu": _cpu_model(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "django": django.get_version(),
        "daphne": daphne.__version__,
        "httpx": httpx.__version__,
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
        "git": _git_revision(),
    }


def _ms(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.2f}"


def _delta(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:+.2f}"


def _cpu_cell(tally: Tally, target: str) -> str:
    cpu = tally.cpu_ms_per_request()
    parts = [f"mock {cpu['mock']:.2f}"] if "mock" in cpu else []
    if target == "proxy" and "proxy" in cpu:
        parts.append(f"proxy {cpu['proxy']:.2f}")
    if "client" in cpu:
        parts.append(f"client {cpu['client']:.2f}")
    return " · ".join(parts) or "n/a"


def _ratio_cell(result: ScenarioResult, over: str = "direct", target: str = "proxy") -> str:
    below, above = result.tallies[over], result.tallies[target]
    if not below.rps:
        return "n/a"
    rounds = result.round_ratios(over, target)
    spread = f" ({min(rounds):.2f}-{max(rounds):.2f})" if len(rounds) > 1 else ""
    return f"{above.rps / below.rps:.2f}x{spread}"


def scenario_rows(result: ScenarioResult) -> list[str]:
    """Rows: direct, proxy, and the proxy's difference; latency = whole response."""
    stream = result.scenario.stream
    rows = []
    stats: dict[str, tuple[dict[str, float], dict[str, float]]] = {}
    for target in ("direct", "proxy"):
        tally = result.tallies[target]
        lat = percentiles_ms(tally.latencies)
        ttfb = percentiles_ms(tally.ttfbs) if tally.ttfbs else {"p50": math.nan, "p99": math.nan}
        stats[target] = (lat, ttfb)
        cells = [str(result.scenario.concurrency), target, f"{tally.rps:.1f}"]
        if stream:
            cells += [_ms(ttfb["p50"]), _ms(ttfb["p99"])]
        cells += [_ms(lat["p50"]), _ms(lat["p99"]), str(tally.errors), _cpu_cell(tally, target)]
        rows.append("| " + " | ".join(cells) + " |")
    (dl, dt), (pl, pt) = stats["direct"], stats["proxy"]
    cells = ["", "**proxy vs direct**", f"**{_ratio_cell(result)}**"]
    if stream:
        cells += [f"**{_delta(pt['p50'] - dt['p50'])}**", _delta(pt["p99"] - dt["p99"])]
    cpu = result.cpu_ratio()
    cpu_cell = "n/a" if cpu is None else f"proxy = {cpu:.1f}x mock's direct"
    cells += [f"**{_delta(pl['p50'] - dl['p50'])}**", _delta(pl["p99"] - dl["p99"]), "", cpu_cell]
    rows.append("| " + " | ".join(cells) + " |")
    return rows


def table(results: list[ScenarioResult], *, stream: bool) -> list[str]:
    rate = "streams/s" if stream else "req/s"
    head = ["c", "target", rate]
    if stream:
        head += ["TTFB p50 ms", "TTFB p99 ms", "total p50 ms", "total p99 ms"]
    else:
        head += ["p50 ms", "p99 ms"]
    head += ["errors", "CPU ms/request"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for result in results:
        lines += scenario_rows(result)
    return lines


def baseline_rows(result: ScenarioResult, baseline_name: str) -> list[str]:
    """Rows: direct, baseline, current, and current vs baseline; latency = whole response."""
    label = result.scenario.label
    rows = []
    mock_cpu = result.own_cpu("direct")
    stats: dict[str, tuple[dict[str, float], dict[str, float]]] = {}
    names = {"direct": "direct", "baseline": f"baseline {baseline_name}", "proxy": "current"}
    for target, name in names.items():
        tally = result.tallies[target]
        lat = percentiles_ms(tally.latencies)
        ttfb = percentiles_ms(tally.ttfbs) if tally.ttfbs else {"p50": math.nan, "p99": math.nan}
        stats[target] = (lat, ttfb)
        cpu = result.own_cpu(target)
        if cpu is None:
            cpu_cell = "n/a"
        elif target == "direct":
            cpu_cell = f"mock {cpu:.2f}"
        else:
            times = f" = {cpu / mock_cpu:.1f}x mock's direct" if mock_cpu else ""
            cpu_cell = f"{cpu:.2f}{times}"
        cells = [
            label if target == "direct" else "",
            name,
            f"{tally.rps:.1f}",
            "" if target == "direct" else _ratio_cell(result, "direct", target),
            _ms(ttfb["p50"]),
            _ms(lat["p50"]),
            _ms(lat["p99"]),
            str(tally.errors),
            cpu_cell,
        ]
        rows.append("| " + " | ".join(cells) + " |")
    (bl, bt), (cl, ct) = stats["baseline"], stats["proxy"]
    current_cpu, base_cpu = result.own_cpu("proxy"), result.own_cpu("baseline")
    if current_cpu is None or base_cpu is None:
        cpu_cell = "n/a"
    else:
        times = f" ({current_cpu / base_cpu:.2f}x)" if base_cpu else ""
        cpu_cell = f"**{_delta(current_cpu - base_cpu)}{times}**"
    cells = [
        "",
        "**current vs baseline**",
        f"**{_ratio_cell(result, 'baseline', 'proxy')}**",
        "",
        _delta(ct["p50"] - bt["p50"]),
        f"**{_delta(cl['p50'] - bl['p50'])}**",
        f"**{_delta(cl['p99'] - bl['p99'])}**",
        "",
        cpu_cell,
    ]
    rows.append("| " + " | ".join(cells) + " |")
    return rows


def baseline_section(meta: dict[str, Any], results: list[ScenarioResult]) -> list[str]:
    base = meta["baseline"]
    short = base["title"].split(" ", 1)[0]
    embedded = meta["stores"]["counters"].startswith("embedded")
    out = [
        f"## Current proxy vs baseline `{short}`: admission + settlement, and all else since",
        "",
        f"Baseline = the proxy built from `{base['title']}` (`--baseline-ref {base['ref']}`), "
        "served the same way from a detached worktree with the same Python, measured in the "
        "same rounds against the same mock (order direct → current → baseline, rotated every "
        "round). The difference is everything between the two revisions "
        f"({len(base['commits_between'])} commits, listed below). Measured from the end of "
        "issue 2, that is: the admission Lua script before forwarding (weekly caps, rate "
        "limits, concurrency, the reservation) and the settlement script after it (release, "
        "bill, ledger stream entry); the ledger moved off the response path into Redis "
        "streams and an in-process drainer, where the baseline inserts one usage row per "
        "request into its database before the response ends; key health; first-byte / idle / "
        "total deadlines and stream backpressure; and the hot-path work done since, notably "
        "the API handler no longer giving each request a fresh executor thread (so the "
        "baseline also opens a database connection per request). A negative difference "
        "therefore means the savings outweigh what admission and settlement add. "
        "Stores: the baseline had its own temporary SQLite file and no counter store; the "
        f"current proxy had {meta['stores']['database']}, and for counters "
        f"{meta['stores']['counters']}.",
        "",
    ]
    if embedded:
        out += [
            "**Not a production-like figure:** this run gave the current proxy no Redis, so its "
            "admission and settlement scripts ran in-process through fakeredis/lupa, which is "
            "much slower than Redis. Run with `--redis-url redis://...` (a scratch DB number) "
            "for the figure that matters.",
            "",
        ]
    else:
        out += [
            "The current proxy ran against a real Redis (`--redis-url`), the production-like "
            "setting; without it, its scripts run in-process through fakeredis/lupa, which is "
            "much slower.",
            "",
        ]
    if base["config_dropped"]:
        out += [
            "The baseline's config schema lacked "
            + ", ".join(f"`{d}`" for d in base["config_dropped"])
            + ", so it got `bench/config.toml` without them.",
            "",
        ]
    head = [
        "scenario",
        "target",
        "req/s",
        "vs direct",
        "TTFB p50 ms",
        "p50 ms",
        "p99 ms",
        "errors",
        "own CPU ms/request",
    ]
    out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for result in results:
        out += baseline_rows(result, short)
    out += [
        "",
        "How to read: `req/s` on the **current vs baseline** row is current ÷ baseline "
        "throughput (min-max over the rounds in brackets); the latency cells are current minus "
        "baseline in ms (TTFB for streams only; p50/p99 of the whole response), so at c = 1 "
        "they are the added cost per request. Own CPU = the serving process's CPU per "
        "request (the mock's for direct); its difference is the added CPU per request and, "
        "in brackets, current ÷ baseline. It leaves out the Redis and database servers: the "
        "current proxy's scripts run inside Redis, while the baseline's ledger INSERT into "
        "SQLite runs in its own process and is counted.",
        "",
        f"Commits from `{short}` to this run's HEAD:",
        "",
    ]
    out += [f"- `{line}`" for line in base["commits_between"]]
    out.append("")
    return out


def markdown_report(meta: dict[str, Any], results: list[ScenarioResult]) -> str:
    m = meta["machine"]
    base = meta.get("baseline")
    order = "rotating direct/proxy/baseline" if base else "alternating direct/proxy"
    out = [
        "# llm-proxy benchmark: proxy vs direct-to-mock",
        "",
        f"- Date: {meta['date']}",
        f"- Machine: {m['os']}, nproc {m['nproc']} ({m['cpu']}), "
        f"load average at start {' / '.join(str(x) for x in m['loadavg_start'])}",
        f"- Software: Python {m['python']}, Django {m['django']}, Daphne {m['daphne']}, "
        f"httpx {m['httpx']}; git {m['git']}",
        f"- Stores: database {meta['stores']['database']}; counters and cache "
        f"{meta['stores']['counters']}",
        f"- Run: {meta['mode']} mode, {meta['rounds']} rounds of {meta['seconds']} s per target "
        f"per scenario, {order}, after {meta['warmup']} s warm-up each; "
        f"load generator `{meta['client']}` (one asyncio process, one keep-alive connection "
        "per concurrent request)",
        f"- Upstream: the mock provider, {MOCK_CHUNKS} content chunks per reply, no delay; "
        f"took {meta['duration_s']:.0f} s in all",
        f"- Proxy resident memory: {meta['proxy_rss_mb']['start']} MiB after start-up, "
        f"{meta['proxy_rss_mb']['end']} MiB after the run "
        f"({meta['proxy_requests_served']} measured requests)",
    ]
    if base:
        out.append(
            f"- Baseline proxy: `{base['title']}`; resident memory {base['rss_mb']['start']} "
            f"MiB after start-up, {base['rss_mb']['end']} MiB after the run "
            f"({base['requests_served']} measured requests); see the last section"
        )
    out += [
        "",
        "Direct = client → mock. Proxy = client → proxy (JWT, limits, routing, usage accounting) "
        "→ mock. "
        "Ratios and differences are the figures that carry over between machines; absolute "
        "numbers are this machine's. Bold: the headline figures. CPU ms/request: CPU time used "
        "per completed request by each process during the measured rounds; `proxy = Nx "
        "mock's direct` divides the proxy's by the mock's per direct request, which machine "
        "load disturbs least.",
        "",
    ]
    sections = [
        ("OpenAI route (`auto` → kind openai): non-streaming", "openai", False),
        (f"OpenAI route: streaming ({MOCK_CHUNKS} chunks)", "openai", True),
        (
            "Anthropic route (`claude-bench` → kind anthropic, translated): non-streaming",
            "anthropic",
            False,
        ),
        ("Anthropic route: streaming (translated)", "anthropic", True),
    ]
    for title, route, stream in sections:
        chosen = [r for r in results if r.scenario.route == route and r.scenario.stream == stream]
        if not chosen:
            continue
        out += [f"## {title}", ""]
        if route == "anthropic":
            out.append(
                "Direct here is the mock's own `/v1/messages` (Anthropic format); through "
                "the proxy the client speaks OpenAI format and the proxy translates."
            )
            out.append("")
        out += table(chosen, stream=stream)
        out.append("")
    out += [
        "How to read: `0.40x` = the proxy served 40% of the requests per second that the mock "
        "served directly (min-max over the rounds in brackets); `+1.50` = the proxy added "
        "1.5 ms. TTFB = request sent → first content chunk received; total = request sent → "
        "last byte.",
        "",
    ]
    if base:
        out += baseline_section(meta, results)
    errors = [
        (r.scenario.label, t, r.tallies[t].first_error)
        for r in results
        for t in r.tallies
        if r.tallies[t].first_error
    ]
    if errors:
        out += ["## Errors", ""]
        out += [f"- {label}, {target}: {problem}" for label, target, problem in errors]
        out.append("")
    return "\n".join(out)


# --- main -------------------------------------------------------------------------------------


async def bench_async(
    args: argparse.Namespace,
    *,
    mock_port: int,
    proxy_port: int,
    token: str,
    pids: dict[str, int],
    baseline: Endpoint | None = None,
) -> list[ScenarioResult]:
    chosen = [s for s in scenarios() if not args.only or any(o in s.label for o in args.only)]

    def specs_of(scenario: Scenario) -> dict[str, RequestSpec]:
        return scenario.specs(
            mock_port=mock_port, proxy_port=proxy_port, token=token, baseline=baseline
        )

    # Every kind of request to every target once, before timing anything.
    for scenario in chosen:
        if scenario.concurrency == 1:
            for target, spec in specs_of(scenario).items():
                await probe(spec, args.client, f"{scenario.label} {target}")
    results = []
    for scenario in chosen:
        specs = specs_of(scenario)
        results.append(
            await run_scenario(
                scenario,
                specs,
                client=args.client,
                rounds=args.rounds,
                seconds=args.seconds,
                warmup=args.warmup,
                pids=pids,
            )
        )
    return results


def run_bench(args: argparse.Namespace) -> int:
    started = time.monotonic()
    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    machine = machine_info()
    # A mistyped ref must fail before anything is started.
    rev = resolve_baseline(args.baseline_ref) if args.baseline_ref else None
    workdir = Path(tempfile.mkdtemp(prefix="llm-proxy-bench-"))
    stores = choose_stores(args, workdir)
    processes = Processes(workdir, child_env(workdir, stores, None))
    baseline: Baseline | None = None
    base_rss: dict[str, float | None] = {"start": None, "end": None}
    try:
        log(f"bench: work dir {workdir}; database {stores.database_label}")
        # The mock needs no database, so it starts while the schema is migrated.
        mock_port = processes.start_mock()
        processes.manage("migrate", "--noinput")
        processes.env = child_env(workdir, stores, mock_port)
        processes.manage("apply_config", str(CONFIG_FILE))
        token = processes.manage("issue_token", "bench", "--ttl", "1d").strip()
        proxy_port = processes.start_proxy()
        proxy_pid = processes.pids()["proxy"]
        rss_start = process_rss_mb(proxy_pid)
        pids = processes.pids()
        if rev is not None:
            log(f"bench: baseline {rev.title}")
            baseline = new_baseline(rev, workdir / "baseline", mock_port)
            try:
                start_baseline(baseline)
            except BenchError as exc:
                raise BenchError(f"baseline {rev.title}: {exc}") from None
            pids |= baseline.processes.pids()
            base_rss["start"] = process_rss_mb(pids["baseline"])
        log(
            f"bench: mock on :{mock_port}, proxy on :{proxy_port}"
            + (f", baseline on :{baseline.port}" if baseline else "")
            + f"; setup took {time.monotonic() - started:.1f} s"
        )
        try:
            results = asyncio.run(
                bench_async(
                    args,
                    mock_port=mock_port,
                    proxy_port=proxy_port,
                    token=token,
                    pids=pids,
                    baseline=baseline.endpoint if baseline else None,
                )
            )
        except BenchError as exc:
            # A failed probe is nearly always explained by the proxy's own log.
            problem = f"{exc}\nproxy output:\n{processes.output('proxy')}"
            if baseline is not None:
                problem += f"\nbaseline output:\n{baseline.processes.output('baseline')}"
            raise BenchError(problem) from None
        # Memory that grows with the requests served shows here (the whole run's worth).
        rss_end = process_rss_mb(proxy_pid)
        if baseline is not None:
            base_rss["end"] = process_rss_mb(pids["baseline"])
        if any(t.errors for r in results for t in r.tallies.values()):
            log(f"bench: there were errors; proxy output:\n{processes.output('proxy')}")
            if baseline is not None:
                log(f"bench: baseline output:\n{baseline.processes.output('baseline')}")
    finally:
        processes.stop()
        if baseline is not None:
            baseline.processes.stop()
            # Before the work dir goes: the worktree lives inside it.
            remove_worktree(baseline.tree)
        if args.keep_tmp:
            log(f"bench: kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    meta: dict[str, Any] = {
        "date": date,
        "machine": machine,
        "stores": {"database": stores.database_label, "counters": stores.counters_label},
        "mode": "quick" if args.quick else "full",
        "rounds": args.rounds,
        "seconds": args.seconds,
        "warmup": args.warmup,
        "client": args.client,
        "mock_chunks": MOCK_CHUNKS,
        "duration_s": time.monotonic() - started,
        "proxy_rss_mb": {"start": rss_start, "end": rss_end},
        # Measured requests only; the warm-ups and probes served before rss_end come on top.
        "proxy_requests_served": sum(r.tallies["proxy"].requests for r in results),
    }
    if baseline is not None:
        meta["baseline"] = {
            "ref": baseline.rev.ref,
            "commit": baseline.rev.commit,
            "title": baseline.rev.title,
            "commits_between": baseline.rev.commits_between,
            "database": "its own temporary SQLite file",
            "config_dropped": baseline.config_dropped,
            "rss_mb": base_rss,
            "requests_served": sum(r.tallies["baseline"].requests for r in results),
        }
    meta["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    report = markdown_report(meta, results)
    data = {"meta": meta, "scenarios": [r.summary() for r in results]}
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(report)
    output.with_suffix(".json").write_text(json.dumps(data, indent=2) + "\n")
    log(f"bench: wrote {output} and {output.with_suffix('.json')}")
    print(json.dumps(data, indent=2) if args.json else report)
    failed = any(t.errors for r in results for t in r.tallies.values())
    return 1 if failed else 0


async def compare_clients_async(args: argparse.Namespace, mock_port: int, pid: int) -> str:
    """Both load generators against the mock alone, alternating, on the direct baseline."""
    cases = [(False, 1), (False, 32), (True, 1)]
    lines = [
        "| request | client | req/s | p50 ms | p99 ms | client CPU ms/req | mock CPU ms/req |",
        "|---|---|---|---|---|---|---|",
    ]
    for stream, concurrency in cases:
        spec = openai_spec(port=mock_port, bearer=MOCK_KEY, model="mock-model", stream=stream)
        tallies = {name: Tally() for name in CLIENTS}
        sessions = {name: make(spec, concurrency) for name, make in CLIENTS.items()}
        try:
            for session in sessions.values():
                await measure(session, spec, concurrency=concurrency, seconds=args.warmup, pids={})
            for index in range(args.rounds):
                order = list(sessions) if index % 2 == 0 else list(sessions)[::-1]
                for name in order:
                    tallies[name].add(
                        await measure(
                            sessions[name],
                            spec,
                            concurrency=concurrency,
                            seconds=args.seconds,
                            pids={"mock": pid},
                        )
                    )
        finally:
            for session in sessions.values():
                await session.aclose()
        what = f"{'stream' if stream else 'non-stream'} c={concurrency}"
        for name, tally in tallies.items():
            lat = percentiles_ms(tally.latencies)
            cpu = tally.cpu_ms_per_request()
            lines.append(
                f"| {what} | {name} | {tally.rps:.1f} | {_ms(lat['p50'])} | {_ms(lat['p99'])} "
                f"| {cpu['client']:.3f} | {cpu.get('mock', math.nan):.3f} |"
            )
            log(f"  {what:18} {name:6} {tally.rps:8.1f}/s p50 {lat['p50']:.2f} ms")
    return "\n".join(lines)


def run_compare_clients(args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="llm-proxy-bench-"))
    stores = choose_stores(args, workdir)
    processes = Processes(workdir, child_env(workdir, stores, None))
    try:
        mock_port = processes.start_mock()
        table_text = asyncio.run(compare_clients_async(args, mock_port, processes.pids()["mock"]))
    finally:
        processes.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    print(
        f"# Load generators against the mock directly ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
        f"nproc {os.cpu_count()}, Python {platform.python_version()})\n\n"
        f"{args.rounds} alternating rounds of {args.seconds} s each. The better client is the "
        "one giving the higher direct req/s at lower client CPU.\n\n" + table_text
    )
    return 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark the proxy against the mock provider directly, in one run."
    )
    parser.add_argument("--quick", action="store_true", help="a ~30 s smoke run")
    parser.add_argument("--rounds", type=int, help="alternating rounds per scenario")
    parser.add_argument("--seconds", type=float, help="seconds per target per round")
    parser.add_argument("--warmup", type=float, help="warm-up seconds per target per scenario")
    parser.add_argument(
        "--client", choices=sorted(CLIENTS), default="raw", help="load generator (default raw)"
    )
    parser.add_argument(
        "--only",
        action="append",
        metavar="TEXT",
        help="run only scenarios whose label contains TEXT, e.g. 'openai non-stream' (repeatable)",
    )
    parser.add_argument("--database-url", help="the proxy's database (default: temporary SQLite)")
    parser.add_argument("--redis-url", help="the proxy's Redis (default: embedded store)")
    parser.add_argument(
        "--baseline-ref",
        metavar="REF",
        help="also measure the proxy built from git revision REF (a detached worktree, own "
        "SQLite and var dir, no Redis) in the same rounds, and report current vs baseline",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of markdown")
    parser.add_argument(
        "--output",
        default=str(RESULTS_DIR / "latest.md"),
        help="where to write the markdown report (JSON beside it); default bench/results/latest.md",
    )
    parser.add_argument("--keep-tmp", action="store_true", help="keep the work dir and logs")
    parser.add_argument(
        "--compare-clients",
        action="store_true",
        help="measure the raw and httpx load generators against the mock, then exit",
    )
    args = parser.parse_args(argv)
    quick_defaults = {"rounds": 2, "seconds": 0.8, "warmup": 0.4}
    full_defaults = {"rounds": 5, "seconds": 2.4, "warmup": 1.0}
    for name, value in (quick_defaults if args.quick else full_defaults).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.rounds < 1 or args.seconds <= 0 or args.warmup < 0:
        parser.error("--rounds must be >= 1, --seconds > 0 and --warmup >= 0")
    if args.baseline_ref and args.compare_clients:
        parser.error("--baseline-ref measures proxies; --compare-clients measures no proxy")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        with sigterm_as_interrupt():
            return run_compare_clients(args) if args.compare_clients else run_bench(args)
    except BenchError as exc:
        log(f"bench: {exc}")
        return 2
    except KeyboardInterrupt:
        log("bench: interrupted; the mock and the proxy (and any baseline) were stopped")
        return 130


if __name__ == "__main__":
    sys.exit(main())
