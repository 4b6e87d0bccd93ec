"""The cold first request: a fresh proxy process, asked the moment it reports ready.

The bench starts a new process of the server (pinned like the others), polls GET /readyz
every 5 ms from the start, and as soon as it answers 200 opens a connection and sends a
stream request (chat → OpenAI-kind), then 99 more, one after another on that connection.
Request 1 is the cold one; "warm" is the median of requests 51-100, and request 100 is
reported beside it.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

from .client import RawSession, get
from .common import BenchError, fmt_ms, log
from .measure import check_reply
from .processes import Processes, free_port
from .scenarios import Endpoint, Scenario
from .servers import server_command

REQUESTS = 100
WARM_FROM = 50  # index of the first request counted as warm (the 51st)


@dataclass
class ColdStart:
    server: str
    ready_s: float = 0.0  # process start -> first 200 from /readyz
    ttfb_ms: list[float] = field(default_factory=list)  # per request, in order
    total_ms: list[float] = field(default_factory=list)
    error: str | None = None

    def figures(self) -> dict[str, Any]:
        if not self.total_ms:
            return {"server": self.server, "error": self.error}
        warm_ttfb = statistics.median(self.ttfb_ms[WARM_FROM:])
        warm_total = statistics.median(self.total_ms[WARM_FROM:])
        return {
            "server": self.server,
            "ready_s": round(self.ready_s, 3),
            "first": {"ttfb_ms": round(self.ttfb_ms[0], 3), "total_ms": round(self.total_ms[0], 3)},
            "request_100": {
                "ttfb_ms": round(self.ttfb_ms[-1], 3),
                "total_ms": round(self.total_ms[-1], 3),
            },
            "warm_median": {"ttfb_ms": round(warm_ttfb, 3), "total_ms": round(warm_total, 3)},
            "first_minus_warm_ms": {
                "ttfb": round(self.ttfb_ms[0] - warm_ttfb, 3),
                "total": round(self.total_ms[0] - warm_total, 3),
            },
            "error": self.error,
        }


async def _wait_ready(port: int, process_alive: Any, limit: float) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if not process_alive():
            raise BenchError("the process exited before it was ready")
        try:
            reply = await get(port, "/readyz")
            if reply.status == 200:
                return
        except OSError:
            pass  # not listening yet
        await asyncio.sleep(0.005)
    raise BenchError(f"/readyz did not answer 200 within {limit:.0f} s")


async def cold_start(
    processes: Processes,
    server: str,
    name: str,
    scenario: Scenario,
    *,
    token: str,
    cpus: set[int] | None,
) -> ColdStart:
    result = ColdStart(server)
    port = free_port()
    started = time.perf_counter()
    process = processes.spawn(name, server_command(server, port), cpus=cpus)
    try:
        await _wait_ready(port, lambda: process.poll() is None, limit=60)
        result.ready_s = time.perf_counter() - started
        spec = scenario.gateway_spec(Endpoint(port, token))
        session = RawSession(spec, 1)
        try:
            await session.connect(0)
            for _ in range(REQUESTS):
                sent = time.perf_counter()
                reply = await session.request(0)
                done = time.perf_counter()
                problem = check_reply(spec, reply)
                if problem is not None:
                    raise BenchError(problem)
                assert reply.first_content is not None
                result.ttfb_ms.append((reply.first_content - sent) * 1000)
                result.total_ms.append((done - sent) * 1000)
        finally:
            await session.aclose()
    except (BenchError, OSError) as exc:
        result.error = f"{exc}; its output:\n{processes.output(name)}"
    finally:
        processes.stop_child(name)
    if result.total_ms and len(result.total_ms) == REQUESTS:
        warm = statistics.median(result.total_ms[WARM_FROM:])
        log(
            f"  cold {server}: ready after {result.ready_s:.2f} s, first "
            f"{result.total_ms[0]:.1f} ms, warm {warm:.1f} ms"
        )
    else:
        result.error = result.error or "fewer requests than planned"
        log(f"  cold {server}: {result.error.splitlines()[0]}")
    return result


def cold_section(results: list[ColdStart]) -> list[str]:
    lines = [
        "## Cold first request",
        "",
        "A fresh process per start; the first request (a stream, chat → OpenAI-kind) is sent "
        "the moment GET /readyz first answers 200, on a connection opened just before it. "
        "Warm = median of requests 51-100 on the same connection. Ready = process start → "
        "first 200 from /readyz.",
        "",
        "| server | ready s | first TTFB ms | first total ms | #100 total ms | warm TTFB ms "
        "| warm total ms | first - warm total ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        f = r.figures()
        if "first" not in f:
            lines.append(f"| {r.server} | failed: {(r.error or '').splitlines()[0]} ||||||| ")
            continue
        lines.append(
            f"| {r.server} | {f['ready_s']:.2f} | {fmt_ms(f['first']['ttfb_ms'])} "
            f"| {fmt_ms(f['first']['total_ms'])} | {fmt_ms(f['request_100']['total_ms'])} "
            f"| {fmt_ms(f['warm_median']['ttfb_ms'])} | {fmt_ms(f['warm_median']['total_ms'])} "
            f"| **{f['first_minus_warm_ms']['total']:+.2f}** |"
        )
    lines.append("")
    return lines
