"""Measuring: the closed loop, the probe that checks a target before any timing, the rounds
of one scenario, and the two load generators against each other."""

from __future__ import annotations

import asyncio
import json
import math
import time
from dataclasses import dataclass

import httpx

from .client import CLIENTS, Reply, Session, SplitSession
from .common import MOCK_KEY, BenchError, fmt_ms, log
from .scenarios import RequestSpec, Scenario, openai_spec
from .stats import Phase, ScenarioResult, Tally, percentiles_ms, tree_cpu


@dataclass(frozen=True)
class Target:
    """What one target of a scenario is: the request (one per process, when the load is
    split over several), and the processes whose CPU counts as the target's own."""

    specs: tuple[RequestSpec, ...]
    own: tuple[str, ...]

    def session(self, client: str, concurrency: int) -> Session:
        if len(self.specs) == 1:
            return CLIENTS[client](self.specs[0], concurrency)
        return SplitSession(list(self.specs), concurrency)


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

    cpu_before = {name: tree_cpu(pid) for name, pid in pids.items()}
    client_before = time.process_time()
    started = time.perf_counter()
    # One watchdog for the whole phase rather than a timeout per request, which would cost
    # the client a timer per request.
    async with asyncio.timeout(seconds + 30):
        await asyncio.gather(*(worker(i) for i in range(concurrency)))
    phase.elapsed = time.perf_counter() - started
    phase.cpu["client"] = time.process_time() - client_before
    for name, pid in pids.items():
        before, after = cpu_before[name], tree_cpu(pid)
        if before is not None and after is not None:
            phase.cpu[name] = after - before
    return phase


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
    targets: dict[str, Target],
    *,
    client: str,
    rounds: int,
    seconds: float,
    warmup: float,
    pids: dict[str, int],
) -> ScenarioResult:
    c = scenario.concurrency
    sessions = {name: target.session(client, c) for name, target in targets.items()}
    tallies = {name: Tally() for name in targets}
    names = list(targets)
    try:
        for name in names:
            # Opens the connections (the proxy's upstream pool too) and fills the caches.
            await measure(
                sessions[name], targets[name].specs[0], concurrency=c, seconds=warmup, pids={}
            )
        for index in range(rounds):
            # Rotate who goes first, so a drift in machine load hits every target alike: with
            # two targets this is plain alternation; with more, each takes every position.
            shift = index % len(names)
            order = names[shift:] + names[:shift]
            figures = []
            for name in order:
                phase = await measure(
                    sessions[name],
                    targets[name].specs[0],
                    concurrency=c,
                    seconds=seconds,
                    pids=pids,
                )
                tallies[name].add(phase)
                figures.append(f"{name} {phase.rps:.0f}/s")
                if phase.errors:
                    figures[-1] += f" ({phase.errors} errors)"
            log(f"  {scenario.label:36} {index + 1}/{rounds}: " + ", ".join(figures))
    finally:
        for session in sessions.values():
            await session.aclose()
    own = {name: target.own for name, target in targets.items()}
    return ScenarioResult(scenario, tallies, own)


async def compare_clients(
    *, mock_port: int, pid: int, rounds: int, seconds: float, warmup: float
) -> str:
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
                await measure(session, spec, concurrency=concurrency, seconds=warmup, pids={})
            for index in range(rounds):
                order = list(sessions) if index % 2 == 0 else list(sessions)[::-1]
                for name in order:
                    tallies[name].add(
                        await measure(
                            sessions[name],
                            spec,
                            concurrency=concurrency,
                            seconds=seconds,
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
                f"| {what} | {name} | {tally.rps:.1f} | {fmt_ms(lat['p50'])} "
                f"| {fmt_ms(lat['p99'])} | {cpu['client']:.3f} | {cpu.get('mock', math.nan):.3f} |"
            )
            log(f"  {what:18} {name:6} {tally.rps:8.1f}/s p50 {lat['p50']:.2f} ms")
    return "\n".join(lines)
