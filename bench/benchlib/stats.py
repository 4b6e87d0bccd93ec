"""Figures: percentiles, pooled rounds and their ratios, and readings of a process's CPU time,
memory, threads and open file descriptors from /proc."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .scenarios import Scenario
from .servers import tree_pids

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


# --- a process, read from /proc ---------------------------------------------------------------


def process_cpu(pid: int) -> float | None:
    """CPU seconds (user + system, all threads) a process has used so far; None off Linux."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def tree_cpu(pid: int) -> float | None:
    """CPU seconds of a process and its descendants; None once the process is gone."""
    own = process_cpu(pid)
    if own is None:
        return None
    return own + sum(process_cpu(child) or 0.0 for child in tree_pids(pid)[1:])


def tree_rss_mb(pid: int) -> float | None:
    """Resident memory of a process and its descendants in MiB (granian's supervisor and
    worker together); None off Linux."""
    sizes = [process_rss_mb(member) for member in tree_pids(pid)]
    known = [size for size in sizes if size is not None]
    return round(sum(known), 1) if known else None


def _status(pid: int) -> dict[str, str]:
    """/proc/<pid>/status as name -> value; OSError off Linux or once the process is gone."""
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {name: value.strip() for name, _, value in (line.partition(":") for line in lines)}


def _rss_mb(status: dict[str, str]) -> float | None:
    value = status.get("VmRSS")
    return round(int(value.split()[0]) / 1024, 1) if value else None


def process_rss_mb(pid: int) -> float | None:
    """Resident memory of a process in MiB; None off Linux."""
    with suppress(OSError):
        return _rss_mb(_status(pid))
    return None


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
        status = _status(pid)
        rss = _rss_mb(status)
        if "Threads" in status:
            threads = int(status["Threads"].split()[0])
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        pass
    return Sample(round(t, 1), requests, rss, fds, threads)


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
    slope: float = sxy / sxx * 1000
    return slope


# --- the benchmark's figures ------------------------------------------------------------------


@dataclass
class _Figures:
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


@dataclass
class Phase(_Figures):
    """One target measured for a few seconds."""


@dataclass
class Tally(_Figures):
    """One target's phases in one scenario, pooled over the rounds."""

    round_rps: list[float] = field(default_factory=list)

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


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None or math.isnan(value) else round(value, digits)


@dataclass
class ScenarioResult:
    """One scenario's targets, pooled over its rounds.

    `own` names, per target, the processes whose CPU is that target's own: the mock's for
    direct, the serving process's for a gateway (both processes' for two behind one client).
    """

    scenario: Scenario
    tallies: dict[str, Tally]
    own: dict[str, tuple[str, ...]]
    # Targets left out of this scenario, and why (their probe failed).
    excluded: dict[str, str] = field(default_factory=dict)

    def own_cpu(self, target: str) -> float | None:
        """CPU ms per request of the process(es) serving `target`."""
        tally = self.tallies.get(target)
        if tally is None:
            return None
        cpu = tally.cpu_ms_per_request()
        parts = [cpu[name] for name in self.own[target] if name in cpu]
        return sum(parts) if parts else None

    def cpu_vs_mock(self, target: str) -> float | None:
        """A target's CPU per request in units of the mock's CPU per direct request.

        Contention on a shared machine inflates every process's CPU time alike, so this
        quotient holds far steadier than either figure does on its own.
        """
        own, mock = self.own_cpu(target), self.own_cpu("direct")
        return own / mock if own is not None and mock else None

    def rps_ratio(self, target: str, over: str = "direct") -> float | None:
        below, above = self.tallies.get(over), self.tallies.get(target)
        if below is None or above is None or not below.rps:
            return None
        return above.rps / below.rps

    def round_ratios(self, over: str = "direct", target: str = "daphne") -> list[float]:
        """target's req/s over `over`'s, round by round (both measured in the same round)."""
        if over not in self.tallies or target not in self.tallies:
            return []
        below, above = self.tallies[over].round_rps, self.tallies[target].round_rps
        return [a / b for b, a in zip(below, above, strict=True) if b]

    def percentile(self, target: str, pct: str, *, ttfb: bool = False) -> float:
        tally = self.tallies.get(target)
        if tally is None:
            return math.nan
        values = tally.ttfbs if ttfb else tally.latencies
        return percentiles_ms(values)[pct] if values else math.nan

    def added(self, target: str, pct: str = "p50", *, ttfb: bool = False) -> float:
        """What `target` adds to the direct path at that percentile, in ms."""
        return self.percentile(target, pct, ttfb=ttfb) - self.percentile("direct", pct, ttfb=ttfb)

    def vs_baseline(self) -> dict[str, Any] | None:
        """The current proxy against the baseline proxy: what the newer code costs."""
        if "baseline" not in self.tallies:
            return None
        base, current = self.tallies["baseline"], self.tallies["daphne"]
        base_cpu, current_cpu = self.own_cpu("baseline"), self.own_cpu("daphne")
        out: dict[str, Any] = {
            "rps_ratio": _round(self.rps_ratio("daphne", "baseline"), 4),
            "round_rps_ratios": [round(r, 4) for r in self.round_ratios("baseline")],
            "baseline_rps_vs_direct": _round(self.rps_ratio("baseline"), 4),
            "added_latency_ms": {
                k: round(self.percentile("daphne", k) - self.percentile("baseline", k), 3)
                for k in ("p50", "p99")
            },
            "cpu_ms_per_request": {"proxy": _round(current_cpu), "baseline": _round(base_cpu)},
            "added_cpu_ms_per_request": (
                round(current_cpu - base_cpu, 3)
                if current_cpu is not None and base_cpu is not None
                else None
            ),
            # In units of the mock's CPU per direct request, which contention disturbs far
            # less than either absolute figure.
            "baseline_cpu_vs_direct_mock": _round(self.cpu_vs_mock("baseline"), 2),
            "cpu_ratio": (
                round(current_cpu / base_cpu, 3) if current_cpu is not None and base_cpu else None
            ),
        }
        if base.ttfbs and current.ttfbs:
            out["added_ttfb_ms"] = {
                k: round(
                    self.percentile("daphne", k, ttfb=True)
                    - self.percentile("baseline", k, ttfb=True),
                    3,
                )
                for k in ("p50", "p99")
            }
        return out

    def summary(self) -> dict[str, Any]:
        pair = self.scenario.pair
        targets: dict[str, Any] = {}
        for name, tally in self.tallies.items():
            entry = tally.summary() | {"own_cpu_ms_per_request": _round(self.own_cpu(name))}
            if name != "direct" and "direct" in self.tallies:
                entry["vs_direct"] = {
                    "rps_ratio": _round(self.rps_ratio(name), 4),
                    "round_rps_ratios": [round(r, 4) for r in self.round_ratios(target=name)],
                    "added_latency_ms": {k: _round(self.added(name, k)) for k in ("p50", "p99")},
                    "cpu_vs_direct_mock": _round(self.cpu_vs_mock(name), 2),
                }
                if tally.ttfbs:
                    entry["vs_direct"]["added_ttfb_ms"] = {
                        k: _round(self.added(name, k, ttfb=True)) for k in ("p50", "p99")
                    }
            targets[name] = entry
        out: dict[str, Any] = {
            "label": self.scenario.label,
            "section": self.scenario.section,
            "client_format": pair.fmt,
            "route": pair.route,
            "passthrough": pair.passthrough,
            "stream": self.scenario.stream,
            "concurrency": self.scenario.concurrency,
            "targets": targets,
            "excluded": self.excluded,
        }
        if "baseline" in self.tallies:
            out["vs_baseline"] = self.vs_baseline()
        return out
