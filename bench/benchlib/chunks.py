"""Chunk-forwarding delay: how late each chunk of a stream reaches the client after the
upstream sent it.

The mock sends a content piece every 20 ms and stamps each one's send time (`chunk_times` of
its call record, wall clock, taken as the piece is handed to its server). The client stamps
each content event's arrival (wall clock, the moment the bytes reach it), and reads the id of
the stream from its first event: the mock's call id, which both the proxy's pass-through and
LiteLLM keep. After each phase the bench reads the mock's records and pairs the i-th content
event with the i-th stamp. Delay = arrival - stamp. The direct path (client -> mock) measures
what the mock's own write and the client's read cost; the gateway's delay beyond it is what
forwarding adds. Same machine, same clock, so no clock offset enters.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from .client import RawConnection, RawSession, Reply
from .common import HOST, BenchError, fmt_ms, log
from .measure import check_reply
from .scenarios import RequestSpec
from .stats import percentile

CHUNK_DELAY = 0.02  # seconds between the mock's pieces
CONCURRENCY = (1, 16)
STREAM_ID = re.compile(rb'"id":"([^"]+)"')


@dataclass(slots=True)
class TimedReply(Reply):
    stream_id: str | None = None
    arrivals: list[float] = field(default_factory=list)  # wall clock, per content event


class TimedConnection(RawConnection):
    """The raw client's connection, also stamping every content event as it arrives."""

    def __init__(self, first_content: re.Pattern[bytes] | None) -> None:
        super().__init__(first_content)
        # perf_counter -> wall clock, fixed once: every stamp then costs one addition.
        self._offset = time.time() - time.perf_counter()
        self._scan = 0
        self._id: str | None = None
        self._arrivals: list[float] = []

    def body_grew(self, now: float) -> None:
        body, pattern = self._body, self._pattern
        while (end := body.find(b"\n\n", self._scan)) >= 0:
            event = bytes(body[self._scan : end])
            self._scan = end + 2
            if self._id is None and (found := STREAM_ID.search(event)):
                self._id = found.group(1).decode()
            if pattern is not None and pattern.search(event):
                self._arrivals.append(now + self._offset)

    def make_reply(self) -> Reply:
        reply = TimedReply(self._status, bytes(self._body), self._first, self._id, self._arrivals)
        self._scan, self._id, self._arrivals = 0, None, []
        return reply


class TimedSession(RawSession):
    async def _connect(self) -> RawConnection:
        loop = asyncio.get_running_loop()
        pattern = self._spec.first_content
        _, protocol = await loop.create_connection(
            lambda: TimedConnection(pattern), HOST, self._spec.port
        )
        return protocol


@dataclass
class DelayFigures:
    streams: int = 0
    errors: int = 0
    unmatched: int = 0  # streams whose id or piece count the mock's records did not match
    delays: list[float] = field(default_factory=list)  # seconds
    first_error: str | None = None

    def percentiles_ms(self) -> dict[str, float]:
        ordered = sorted(self.delays)
        out = {p: percentile(ordered, float(p[1:])) * 1000 for p in ("p50", "p90", "p99")}
        return out | {"max": ordered[-1] * 1000 if ordered else math.nan}

    def summary(self) -> dict[str, Any]:
        return {
            "streams": self.streams,
            "chunks": len(self.delays),
            "errors": self.errors,
            "unmatched_streams": self.unmatched,
            "delay_ms": {k: round(v, 3) for k, v in self.percentiles_ms().items()},
            "first_error": self.first_error,
        }


async def _phase(spec: RequestSpec, concurrency: int, seconds: float) -> list[TimedReply]:
    session = TimedSession(spec, concurrency)
    replies: list[TimedReply] = []
    deadline = time.perf_counter() + seconds

    async def worker(index: int) -> None:
        while time.perf_counter() < deadline:
            try:
                reply = await session.request(index)
            except OSError as exc:
                replies.append(TimedReply(0, f"{type(exc).__name__}: {exc}".encode(), None))
                await asyncio.sleep(0.01)
                continue
            assert isinstance(reply, TimedReply)
            replies.append(reply)

    try:
        async with asyncio.timeout(seconds + 30):
            await asyncio.gather(*(worker(i) for i in range(concurrency)))
    finally:
        await session.aclose()
    return replies


def _match(
    spec: RequestSpec, replies: list[TimedReply], sent: dict[str, list[float]]
) -> DelayFigures:
    figures = DelayFigures()
    for reply in replies:
        problem = check_reply(spec, reply) if reply.status else reply.body.decode()
        if problem is not None:
            figures.errors += 1
            figures.first_error = figures.first_error or problem
            continue
        figures.streams += 1
        stamps = sent.get(reply.stream_id or "")
        if stamps is None or len(stamps) != len(reply.arrivals):
            figures.unmatched += 1
            continue
        figures.delays += [
            arrived - stamp for arrived, stamp in zip(reply.arrivals, stamps, strict=True)
        ]
    return figures


async def _mock_stamps(mock_port: int) -> dict[str, list[float]]:
    async with httpx.AsyncClient(trust_env=False, timeout=30) as http:
        stats = (await http.get(f"http://{HOST}:{mock_port}/_mock/stats")).json()
    return {record["id"]: record["chunk_times"] for record in stats["requests"]}


async def configure_mock(mock_port: int, **changes: Any) -> None:
    async with httpx.AsyncClient(trust_env=False, timeout=10) as http:
        answer = await http.post(f"http://{HOST}:{mock_port}/_mock/config", json=changes)
    if answer.status_code != 200:
        raise BenchError(f"the mock refused {changes}: {answer.text}")


async def measure_chunk_delay(
    specs: dict[str, RequestSpec], *, mock_port: int, seconds: float, rounds: int
) -> dict[int, dict[str, DelayFigures]]:
    """Per concurrency, per target: the delays of every content chunk, pooled over rounds
    that rotate the targets' order."""
    out: dict[int, dict[str, DelayFigures]] = {}
    await configure_mock(mock_port, chunk_delay=CHUNK_DELAY)
    try:
        for c in CONCURRENCY:
            pooled = {name: DelayFigures() for name in specs}
            names = list(specs)
            for index in range(rounds):
                shift = index % len(names)
                for name in names[shift:] + names[:shift]:
                    # The mock keeps its last 1000 records: read them after every phase.
                    replies = await _phase(specs[name], c, seconds)
                    got = _match(specs[name], replies, await _mock_stamps(mock_port))
                    total = pooled[name]
                    total.streams += got.streams
                    total.errors += got.errors
                    total.unmatched += got.unmatched
                    total.delays += got.delays
                    total.first_error = total.first_error or got.first_error
                log(
                    f"  chunks c={c} {index + 1}/{rounds}: "
                    + ", ".join(
                        f"{n} p99 {fmt_ms(f.percentiles_ms()['p99'])} ms" for n, f in pooled.items()
                    )
                )
            out[c] = pooled
    finally:
        await configure_mock(mock_port, chunk_delay=0)
    return out


def chunk_section(results: dict[int, dict[str, DelayFigures]], chunks: int) -> list[str]:
    lines = [
        "## Chunk-forwarding delay",
        "",
        f"The mock sends {chunks} content pieces 20 ms apart and stamps each one's send time; "
        "the client stamps each content event's arrival. Delay = arrival - send, per chunk, "
        "pooled over every stream of the phase (chat → OpenAI-kind, pass-through). Direct "
        "shows what the mock's own write and the client's read take; **added** is the "
        "gateway's percentile minus direct's.",
        "",
        "| c | target | streams | chunks | p50 ms | p90 ms | p99 ms | max ms | added p50 / p99 "
        "| unmatched | errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c, figures in results.items():
        direct = figures.get("direct")
        base = direct.percentiles_ms() if direct else None
        for name, fig in figures.items():
            pct = fig.percentiles_ms()
            added = (
                f"{pct['p50'] - base['p50']:+.2f} / {pct['p99'] - base['p99']:+.2f}"
                if base is not None and name != "direct"
                else ""
            )
            lines.append(
                f"| {c} | {name} | {fig.streams} | {len(fig.delays)} | {fmt_ms(pct['p50'])} "
                f"| {fmt_ms(pct['p90'])} | {fmt_ms(pct['p99'])} | {fmt_ms(pct['max'])} "
                f"| {added} | {fig.unmatched} | {fig.errors} |"
            )
    lines.append("")
    return lines
