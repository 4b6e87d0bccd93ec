"""The sections of a benchmark run, in order, and how long each is measured: the main pair's
grid and the other pairs (closed loops), two processes against one, the chunk-forwarding
delay, the open idle streams and the cold first request."""

from __future__ import annotations

import argparse
import asyncio
import os
import re
from dataclasses import dataclass
from typing import Any

from .baseline import Baseline
from .chunks import measure_chunk_delay
from .cold import cold_start
from .common import BenchError, log
from .gateways import Gateways
from .idle import hold_idle_streams
from .measure import Target, probe, run_scenario
from .report import Findings
from .scenarios import LITELLM_PAIRS, MAIN_PAIR, Endpoint, Scenario, scenarios
from .servers import set_tree_affinity

# Seconds between the ledger drain's passes (PROXY_LEDGER_DRAIN_INTERVAL's default).
LEDGER_DRAIN_INTERVAL = 1.0


@dataclass(frozen=True)
class Rounds:
    rounds: int
    seconds: float  # per target per round
    warmup: float  # per target per scenario

    def __str__(self) -> str:
        return f"{self.rounds} rounds of {self.seconds} s per target after {self.warmup} s warm-up"


@dataclass(frozen=True)
class Plan:
    grid: Rounds  # the main pair's full grid, and two processes against one
    pairs: Rounds  # every other pair at one point
    chunk_rounds: int
    chunk_seconds: float
    idle_window: float
    cold_starts: int


def make_plan(args: argparse.Namespace) -> Plan:
    if args.quick:
        grid, pairs = Rounds(2, 0.6, 0.3), Rounds(2, 0.5, 0.2)
        plan = Plan(grid, pairs, chunk_rounds=1, chunk_seconds=1.5, idle_window=2, cold_starts=1)
    else:
        grid, pairs = Rounds(3, 2.0, 1.0), Rounds(3, 1.2, 0.5)
        plan = Plan(grid, pairs, chunk_rounds=2, chunk_seconds=2.0, idle_window=5, cold_starts=2)
    # --rounds / --seconds / --warmup override every closed-loop section alike.
    overrides = {k: getattr(args, k) for k in ("rounds", "seconds", "warmup")}
    if any(v is not None for v in overrides.values()):

        def over(r: Rounds) -> Rounds:
            return Rounds(
                overrides["rounds"] or r.rounds,
                overrides["seconds"] or r.seconds,
                r.warmup if overrides["warmup"] is None else overrides["warmup"],
            )

        plan = Plan(
            over(plan.grid),
            over(plan.pairs),
            plan.chunk_rounds,
            plan.chunk_seconds,
            plan.idle_window,
            plan.cold_starts,
        )
    return plan


def wanted(args: argparse.Namespace, label: str) -> bool:
    """--only TEXT: a substring of the label, where a trailing number is whole ("c=1" is not
    "c=16")."""

    def matches(text: str) -> bool:
        tail = r"(?!\d)" if text[-1:].isdigit() else ""
        return re.search(re.escape(text) + tail, label) is not None

    return not args.only or any(matches(text) for text in args.only)


class Bench:
    """One run's sections, in order, against the gateways started for it."""

    def __init__(
        self, args: argparse.Namespace, gw: Gateways, plan: Plan, baseline: Baseline | None
    ) -> None:
        self.args, self.gw, self.plan, self.baseline = args, gw, plan, baseline
        self.findings = Findings()

    def pids(self) -> dict[str, int]:
        pids = self.gw.pids()
        if self.baseline is not None:
            pids |= self.baseline.processes.pids()
        return pids

    def targets_of(self, scenario: Scenario) -> dict[str, Target]:
        gw = self.gw
        targets = {"direct": Target((scenario.direct(gw.mock_port),), ("mock",))}
        servers = gw.servers if scenario.section == "grid" else ["daphne"]
        for server in servers:
            targets[server] = Target((scenario.gateway_spec(gw.endpoints[server]),), (server,))
        if "litellm" in gw.endpoints and scenario.pair in LITELLM_PAIRS:
            spec = scenario.gateway_spec(gw.endpoints["litellm"])
            targets["litellm"] = Target((spec,), ("litellm",))
        if self.baseline is not None and scenario.section == "grid":
            spec = scenario.gateway_spec(self.baseline.endpoint)
            targets["baseline"] = Target((spec,), ("baseline",))
        return targets

    async def probe_all(self, chosen: list[Scenario]) -> dict[tuple[str, str], str]:
        """One request of every kind to every target, checked in full, before any timing.
        Direct and Daphne must answer; another target that fails is left out of what it
        failed, and the report says so. Returns (target, pair and kind) -> why."""
        failed: dict[tuple[str, str], str] = {}
        seen: set[tuple[str, str]] = set()
        for scenario in chosen:
            kind = f"{scenario.pair.label} {'stream' if scenario.stream else 'non-stream'}"
            for name, target in self.targets_of(scenario).items():
                if (name, kind) in seen:
                    continue
                seen.add((name, kind))
                try:
                    await probe(target.specs[0], self.args.client, f"{kind} {name}")
                except BenchError as exc:
                    output = self.gw.processes.output(name) if name != "direct" else ""
                    if name in ("direct", "daphne", "baseline"):
                        raise BenchError(f"{exc}\n{name} output:\n{output}") from None
                    failed[(name, kind)] = str(exc).splitlines()[0]
                    self.gw.note(name, f"left out of {kind}: {exc}\n{output}")
        return failed

    async def closed_loops(self) -> None:
        chosen = [
            s for s in scenarios() if s.section in ("grid", "pairs") and wanted(self.args, s.label)
        ]
        if not chosen:
            return
        log("bench: probes")
        failed = await self.probe_all(chosen)
        for scenario in chosen:
            kind = f"{scenario.pair.label} {'stream' if scenario.stream else 'non-stream'}"
            targets = self.targets_of(scenario)
            excluded = {n: why for (n, k), why in failed.items() if k == kind and n in targets}
            for name in excluded:
                del targets[name]
            rounds = self.plan.grid if scenario.section == "grid" else self.plan.pairs
            result = await run_scenario(
                scenario,
                targets,
                client=self.args.client,
                rounds=rounds.rounds,
                seconds=rounds.seconds,
                warmup=rounds.warmup,
                pids=self.pids(),
            )
            result.excluded = excluded
            if scenario.section == "grid":
                self.findings.grid.append(result)
            else:
                self.findings.pairs.append(result)

    async def scaling(self) -> None:
        chosen = [s for s in scenarios() if s.section == "scaling" and wanted(self.args, s.label)]
        if not chosen:
            return
        gw, pinning = self.gw, self.gw.pinning
        log("bench: two Daphne processes against one (nothing pinned)")
        ports = [
            gw.processes.start_proxy(name=name, cpus=pinning.all, readyz=True)
            for name in ("daphne-a", "daphne-b")
        ]
        mock = gw.pids()["mock"]
        set_tree_affinity(mock, pinning.all)
        os.sched_setaffinity(0, pinning.all)
        try:
            for scenario in chosen:
                a, b = (scenario.gateway_spec(Endpoint(port, gw.token)) for port in ports)
                for spec, name in ((a, "daphne-a"), (b, "daphne-b")):
                    await probe(spec, self.args.client, f"{scenario.label} {name}")
                targets = {
                    "one": Target((a,), ("daphne-a",)),
                    "two": Target((a, b), ("daphne-a", "daphne-b")),
                }
                self.findings.scaling.append(
                    await run_scenario(
                        scenario,
                        targets,
                        client=self.args.client,
                        rounds=self.plan.grid.rounds,
                        seconds=self.plan.grid.seconds,
                        warmup=self.plan.grid.warmup,
                        pids=self.pids(),
                    )
                )
        finally:
            for name in ("daphne-a", "daphne-b"):
                gw.processes.stop_child(name)
            if pinning.load is not None:
                set_tree_affinity(mock, pinning.load)
            pinning.pin_self()

    def stream_targets(self) -> dict[str, Any]:
        scenario = Scenario("chunks", MAIN_PAIR, True, 1)
        specs = {"direct": scenario.direct(self.gw.mock_port)}
        for name, endpoint in self.gw.endpoints.items():
            specs[name] = scenario.gateway_spec(endpoint)
        return specs

    async def chunks(self) -> None:
        if not wanted(self.args, "chunks"):
            return
        log("bench: chunk-forwarding delay")
        self.findings.chunks = await measure_chunk_delay(
            self.stream_targets(),
            mock_port=self.gw.mock_port,
            seconds=self.plan.chunk_seconds,
            rounds=self.plan.chunk_rounds,
        )

    async def idle(self) -> None:
        if not wanted(self.args, "idle"):
            return
        log(f"bench: {self.args.idle_streams} open idle streams")
        specs = self.stream_targets()
        pids = self.gw.pids()
        for server in self.gw.servers:
            self.findings.idle.append(
                await hold_idle_streams(
                    server,
                    pids[server],
                    specs[server],
                    mock_port=self.gw.mock_port,
                    count=self.args.idle_streams,
                    window=self.plan.idle_window,
                    gateways=[pids[name] for name in self.gw.endpoints if name in pids],
                )
            )

    async def cold(self) -> None:
        if not wanted(self.args, "cold"):
            return
        log("bench: cold first request")
        scenario = Scenario("cold", MAIN_PAIR, True, 1)
        for server in self.gw.servers:
            for index in range(self.plan.cold_starts):
                start = await cold_start(
                    self.gw.processes,
                    server,
                    f"cold-{server}-{index + 1}",
                    scenario,
                    token=self.gw.token,
                    cpus=self.gw.pinning.proxy,
                )
                if start.error:
                    self.gw.note(server, f"cold start {index + 1} failed: {start.error}")
                self.findings.cold.append(start)
        # A stopped process leaves its last second of ledger entries in Redis, and a process
        # drains only after it has served a request: one through Daphne drains them now, so
        # that no entry is left to age (an old one keeps every later /readyz at 503).
        spec = scenario.gateway_spec(self.gw.endpoints["daphne"])
        await probe(spec, self.args.client, "ledger drain after the cold starts")
        await asyncio.sleep(2 * LEDGER_DRAIN_INTERVAL)

    async def run(self) -> Findings:
        await self.closed_loops()
        await self.scaling()
        await self.chunks()
        await self.idle()
        await self.cold()
        return self.findings
