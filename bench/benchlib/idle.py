"""1,000 open idle streams through one proxy process: its memory and CPU while they are open.

The mock is set to send a stream's first piece at once and the next only after 30 s, so every
stream opens (its first content chunk reaches the client, which proves it is open end to end)
and then sits idle. The client opens them a few dozen at a time (Daphne listens with a
backlog of 50: a burst of 1,000 connects would be dropped and retried by the kernel, which
would measure SYN retries) and holds all of them; the bench reads the serving process's
resident memory, file descriptors and CPU over a window while they are open. Then the client
closes them, a few dozen at a time too.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

from .chunks import configure_mock
from .common import HOST, log
from .scenarios import RequestSpec
from .servers import tree_pids
from .stats import tree_cpu, tree_rss_mb

STREAMS = 1000
HOLD_DELAY = 30.0  # seconds between the mock's pieces while the streams are held
OPENING_AT_ONCE = 40
STATUS_LINE = re.compile(rb"^HTTP/1\.[01] (\d{3})")


class OpenStream(asyncio.Protocol):
    """A stream request whose answer is watched until its first content chunk, then held."""

    def __init__(self, first_content: re.Pattern[bytes]) -> None:
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.lost = False
        self._pattern = first_content
        self._head = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.opened.done():
            return  # held: keep-alive comments and later pieces need no reading
        self._head += data
        status = STATUS_LINE.match(self._head)
        if status and status.group(1) != b"200":
            self.opened.set_exception(ConnectionError(f"HTTP {status.group(1).decode()}"))
        elif self._pattern.search(self._head):
            self.opened.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(f"closed before content: {exc}"))


@dataclass
class IdleResult:
    server: str
    requested: int
    opened: int = 0
    failed: int = 0
    first_failure: str | None = None
    open_seconds: float = 0.0  # to open them all
    still_open: int = 0  # at the end of the window
    rss_before_mb: float | None = None
    rss_open_mb: float | None = None
    fds_open: int | None = None
    cpu_percent: float | None = None  # of one core, over the window, streams open
    cpu_percent_before: float | None = None  # the same, before any was opened
    window_s: float = 0.0
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return dict(vars(self))


def _fds(pid: int) -> int | None:
    total = 0
    for member in tree_pids(pid):
        with suppress(OSError):
            total += len(os.listdir(f"/proc/{member}/fd"))
    return total or None


async def _open_one(spec: RequestSpec, gate: asyncio.Semaphore, limit: float) -> OpenStream:
    loop = asyncio.get_running_loop()
    assert spec.first_content is not None
    pattern = spec.first_content
    async with gate:
        _, stream = await loop.create_connection(lambda: OpenStream(pattern), HOST, spec.port)
        assert stream.transport is not None
        stream.transport.write(spec.raw())
        async with asyncio.timeout(limit):
            await stream.opened
    return stream


def _cpu(pids: list[int]) -> float:
    return sum(tree_cpu(pid) or 0.0 for pid in pids)


async def settle(pids: list[int], *, limit: float = 20.0) -> None:
    """Wait until every gateway is nearly idle: closed streams are settled, and the ledger
    drain that writes their rows runs in whichever process wins the tenant's lock."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        before = _cpu(pids)
        await asyncio.sleep(0.5)
        if _cpu(pids) - before < 0.02:
            return


async def _cpu_percent(pid: int, window: float) -> float | None:
    before, at = tree_cpu(pid), time.perf_counter()
    await asyncio.sleep(window)
    after, took = tree_cpu(pid), time.perf_counter() - at
    if before is None or after is None:
        return None
    return round((after - before) / took * 100, 2)


async def hold_idle_streams(
    server: str,
    pid: int,
    spec: RequestSpec,
    *,
    mock_port: int,
    count: int,
    window: float,
    gateways: list[int],
) -> IdleResult:
    """Open `count` streams through the process `pid` and read it while they are open.
    `gateways` (every proxy process) must be quiet before each reading."""
    result = IdleResult(server, count, window_s=window)
    await settle(gateways)
    # The same window with no stream open: what the process spends idle (its timers, a
    # ledger drain's periodic scan) is part of the figure while the streams are open too.
    result.cpu_percent_before = await _cpu_percent(pid, window)
    result.rss_before_mb = tree_rss_mb(pid)
    await configure_mock(mock_port, chunk_delay=HOLD_DELAY)
    streams: list[OpenStream] = []
    try:
        gate = asyncio.Semaphore(OPENING_AT_ONCE)
        started = time.perf_counter()
        outcomes = await asyncio.gather(
            *(_open_one(spec, gate, limit=30) for _ in range(count)), return_exceptions=True
        )
        result.open_seconds = round(time.perf_counter() - started, 2)
        for outcome in outcomes:
            if isinstance(outcome, OpenStream):
                streams.append(outcome)
            else:
                result.failed += 1
                result.first_failure = (
                    result.first_failure or f"{type(outcome).__name__}: {outcome}"
                )
        result.opened = len(streams)
        await settle(gateways, limit=5)  # the openings' own work done before the window
        result.cpu_percent = await _cpu_percent(pid, window)
        result.rss_open_mb = tree_rss_mb(pid)
        result.fds_open = _fds(pid)
        result.still_open = sum(not stream.lost for stream in streams)
    finally:
        # A few dozen at a time, as they were opened: 1,000 hang-ups at once are 1,000
        # settlements at once, past the Redis pool (REDIS_MAX_CONNECTIONS, 256 by default);
        # those fall back to writing ledger rows directly, and their reconciliation, up to 30 s
        # later in whichever process, would land in the next server's window.
        for start in range(0, len(streams), OPENING_AT_ONCE):
            for stream in streams[start : start + OPENING_AT_ONCE]:
                if stream.transport is not None:
                    stream.transport.close()
            await asyncio.sleep(0.05)
        # Back to instant answers before anything else is measured.
        await configure_mock(mock_port, chunk_delay=0)
        await settle(gateways)
    log(
        f"  idle {server}: {result.opened}/{count} open in {result.open_seconds} s, "
        f"RSS {result.rss_before_mb} -> {result.rss_open_mb} MiB, "
        f"CPU {result.cpu_percent_before}% -> {result.cpu_percent}%"
    )
    return result


def idle_section(results: list[IdleResult], *, note: str) -> list[str]:
    lines = [
        "## 1,000 open idle streams",
        "",
        f"Each server's proxy process holds {STREAMS} open streams (chat → OpenAI-kind) whose "
        f"upstream sends its first piece at once and the next after {HOLD_DELAY:.0f} s. "
        "RSS and file descriptors: the serving process and its children (granian's "
        "supervisor too), read while every stream is open; CPU: its share of one core over "
        "a window with the streams open, and over the same window before any was opened "
        f"(its timers and the ledger drain's periodic scan). {note}",
        "",
        "| server | streams open | failed | time to open s | RSS before MiB | RSS open MiB "
        "| per stream KiB | fds | CPU % before | CPU % open | still open at end |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        per = (
            f"{(r.rss_open_mb - r.rss_before_mb) * 1024 / r.opened:.0f}"
            if r.rss_open_mb is not None and r.rss_before_mb is not None and r.opened
            else "n/a"
        )
        lines.append(
            f"| {r.server} | {r.opened}/{r.requested} | {r.failed} | {r.open_seconds} "
            f"| {r.rss_before_mb} | {r.rss_open_mb} | {per} | {r.fds_open} "
            f"| {r.cpu_percent_before} | {r.cpu_percent} | {r.still_open} |"
        )
    failures = [f"- {r.server}: {r.first_failure}" for r in results if r.first_failure]
    if failures:
        lines += ["", "First failure to open, per server:", *failures]
    lines.append("")
    return lines
