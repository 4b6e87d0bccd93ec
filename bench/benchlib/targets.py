"""Issue 12's targets, each measured per server and reported as met or missed with the
margin, never asserted: a run that misses one still succeeds."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .chunks import DelayFigures
from .cold import ColdStart
from .idle import IdleResult
from .servers import SERVERS
from .stats import ScenarioResult


@dataclass
class Check:
    target: str  # what is asked, in words
    unit: str  # "x", "%", "ms", "MiB"
    at_least: bool  # True: measured >= threshold; False: measured <= threshold
    threshold: float
    measured: dict[str, float | None]  # per server
    why_missing: str = ""  # shown where a figure could not be had

    def verdict(self, server: str) -> str:
        value = self.measured.get(server)
        if value is None or math.isnan(value):
            return f"n/a{f' ({self.why_missing})' if self.why_missing else ''}"
        met = value >= self.threshold if self.at_least else value <= self.threshold
        margin = abs(value - self.threshold)
        word = "met" if met else "**missed**"
        return f"{self._fmt(value)} — {word} by {self._fmt(margin)}"

    def _fmt(self, value: float) -> str:
        if self.unit == "x":
            return f"{value:.2f}x"
        if self.unit == "%":
            return f"{value:.1f} %"
        return f"{value:.2f} {self.unit}" if self.unit == "ms" else f"{value:.0f} {self.unit}"

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "target": self.target,
            "unit": self.unit,
            "threshold": self.threshold,
            "at_least": self.at_least,
            "measured": {},
        }
        for server, value in self.measured.items():
            if value is None or math.isnan(value):
                out["measured"][server] = None
                continue
            met = value >= self.threshold if self.at_least else value <= self.threshold
            out["measured"][server] = {
                "value": round(value, 4),
                "met": met,
                "margin": round(abs(value - self.threshold), 4),
            }
        return out


def _find(
    results: list[ScenarioResult], section: str, stream: bool, c: int
) -> ScenarioResult | None:
    for result in results:
        s = result.scenario
        if s.section == section and s.stream == stream and s.concurrency == c:
            return result
    return None


def _per_server(fn: Callable[[str], float | None], servers: list[str]) -> dict[str, float | None]:
    return {server: fn(server) for server in servers}


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def evaluate(
    *,
    grid: list[ScenarioResult],
    scaling: list[ScenarioResult],
    chunks: dict[int, dict[str, DelayFigures]],
    idle: list[IdleResult],
    cold: list[ColdStart],
    litellm_missing: str,
) -> list[Check]:
    servers = list(SERVERS)
    checks: list[Check] = []
    kinds = ((False, "non-stream"), (True, "stream"))
    for c in (16, 64):
        for stream, kind in kinds:
            r = _find(grid, "grid", stream, c)

            def rps(server: str, r: ScenarioResult | None = r) -> float | None:
                return r.rps_ratio(server, "litellm") if r else None

            checks.append(
                Check(
                    f"req/s ≥ 5x LiteLLM's, c={c} {kind}",
                    "x",
                    True,
                    5.0,
                    _per_server(rps, servers),
                    litellm_missing,
                )
            )
    for stream, kind in kinds:
        low, high = _find(grid, "grid", stream, 1), _find(grid, "grid", stream, 64)

        def flat(server: str, lo: Any = low, hi: Any = high) -> float | None:
            ratio = _ratio(hi.own_cpu(server), lo.own_cpu(server)) if lo and hi else None
            return None if ratio is None else (ratio - 1) * 100

        checks.append(
            Check(
                f"CPU/request at c=64 ≤ c=1's + 15 %, {kind}",
                "%",
                False,
                15.0,
                _per_server(flat, servers),
            )
        )
    for stream, kind, limit in ((False, "non-stream", 0.15), (True, "20-chunk stream", 0.10)):
        r = _find(grid, "grid", stream, 16)

        def cpu(server: str, r: ScenarioResult | None = r) -> float | None:
            return _ratio(r.own_cpu(server), r.own_cpu("litellm")) if r else None

        checks.append(
            Check(
                f"CPU/request ≤ {limit:.2f}x LiteLLM's, {kind}, c=16",
                "x",
                False,
                limit,
                _per_server(cpu, servers),
                litellm_missing,
            )
        )
    for stream, kind in ((False, "non-stream"), (True, "stream TTFB")):
        r = _find(grid, "grid", stream, 1)

        def added(server: str, r: ScenarioResult | None = r, ttfb: bool = stream) -> float | None:
            if r is None or "litellm" not in r.tallies:
                return None
            return _ratio(r.added(server, ttfb=ttfb), r.added("litellm", ttfb=ttfb))

        checks.append(
            Check(
                f"added p50 latency at c=1 ≤ 0.2x LiteLLM's added, {kind}",
                "x",
                False,
                0.2,
                _per_server(added, servers),
                litellm_missing,
            )
        )
    at16 = chunks.get(16, {})
    checks.append(
        Check(
            "chunk-forwarding delay p99 ≤ 1 ms at c=16 (mock send → client arrival)",
            "ms",
            False,
            1.0,
            {s: at16[s].percentiles_ms()["p99"] if s in at16 else None for s in servers},
        )
    )

    def first(server: str) -> float | None:
        diffs = [
            f["first_minus_warm_ms"]["total"]
            for f in (start.figures() for start in cold if start.server == server)
            if "first" in f
        ]
        return max(diffs) if diffs else None

    checks.append(
        Check(
            "first request after start ≤ 50 ms slower than a warm one (worst start)",
            "ms",
            False,
            50.0,
            _per_server(first, servers),
        )
    )
    idle_rss = {r.server: r.rss_open_mb for r in idle if r.opened == r.requested}
    checks.append(
        Check(
            "1,000 open streams on one process: RSS < 300 MiB",
            "MiB",
            False,
            300.0,
            {s: idle_rss.get(s) for s in servers},
            "not run, or not every stream opened",
        )
    )
    for stream, kind in kinds:
        r = _find(scaling, "scaling", stream, 64)
        value = r.rps_ratio("two", "one") if r else None
        checks.append(
            Check(
                f"two processes ≥ 1.8x one, c=64 {kind} (Daphne)",
                "x",
                True,
                1.8,
                {"daphne": value},
            )
        )
    return checks


def targets_section(checks: list[Check], servers: list[str]) -> list[str]:
    lines = [
        "## Targets (issue 12)",
        "",
        "Measured in this run on this machine, per server; `met by` / `missed by` is the "
        "distance to the target in its own unit. Reported, never asserted.",
        "",
        "| target | " + " | ".join(servers) + " |",
        "|---|" + "---|" * len(servers),
    ]
    for check in checks:
        cells = [check.verdict(s) if s in check.measured else "—" for s in servers]
        lines.append(f"| {check.target} | " + " | ".join(cells) + " |")
    lines.append("")
    return lines
