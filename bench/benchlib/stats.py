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
