"""The report's tables of closed-loop scenarios: the main pair on every server and LiteLLM,
every format on every provider kind, two processes against one, and the baseline."""

from __future__ import annotations

import math
from typing import Any

from .common import fmt_ms
from .scenarios import FORMAT_PATHS, ROUTE_LABELS
from .stats import ScenarioResult


def _delta(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:+.2f}"


def _ratio_cell(result: ScenarioResult, over: str, target: str) -> str:
    ratio = result.rps_ratio(target, over)
    if ratio is None:
        return "n/a"
    rounds = result.round_ratios(over, target)
    spread = f" ({min(rounds):.2f}-{max(rounds):.2f})" if len(rounds) > 1 else ""
    return f"{ratio:.2f}x{spread}"


def _cpu_cells(result: ScenarioResult, target: str) -> list[str]:
    """The serving process's CPU per request, the same in units of the mock's per direct
    request, and the mock's and the load generator's own per request of this target."""
    own = result.own_cpu(target)
    vs = result.cpu_vs_mock(target)
    cpu = result.tallies[target].cpu_ms_per_request()
    mock, client = cpu.get("mock"), cpu.get("client")
    return [
        "n/a" if own is None else f"{own:.2f}",
        "" if target == "direct" or vs is None else f"{vs:.1f}x",
        "" if target == "direct" or mock is None else f"{mock:.2f}",
        "n/a" if client is None else f"{client:.2f}",
    ]


def scenario_table(results: list[ScenarioResult], *, stream: bool) -> list[str]:
    """Per concurrency, a row per target: figures, and the ratio and added ms vs direct."""
    head = ["c", "target", "streams/s" if stream else "req/s", "vs direct (rounds)"]
    if stream:
        head += ["TTFB p50 ms", "TTFB added p50"]
    head += ["p50 ms", "p99 ms", "added p50 / p99", "errors"]
    head += ["own CPU ms/req", "= x mock's direct", "mock CPU ms/req", "client CPU ms/req"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for result in results:
        for target, tally in result.tallies.items():
            direct = target == "direct"
            cells = [str(result.scenario.concurrency), target, f"{tally.rps:.1f}"]
            cells.append("" if direct else _ratio_cell(result, "direct", target))
            if stream:
                ttfb = result.percentile(target, "p50", ttfb=True)
                added = "" if direct else _delta(result.added(target, ttfb=True))
                cells += [fmt_ms(ttfb), added]
            cells += [
                fmt_ms(result.percentile(target, "p50")),
                fmt_ms(result.percentile(target, "p99")),
                ""
                if direct
                else f"{_delta(result.added(target))} / {_delta(result.added(target, 'p99'))}",
                str(tally.errors),
                *_cpu_cells(result, target),
            ]
            lines.append("| " + " | ".join(cells) + " |")
        for target, why in result.excluded.items():
            lines.append(f"| {result.scenario.concurrency} | {target} | left out: {why} |")
    return lines


def litellm_table(results: list[ScenarioResult], servers: list[str]) -> list[str]:
    """Each server against LiteLLM, measured in the same rounds: throughput and CPU."""
    rows = [r for r in results if "litellm" in r.tallies]
    if not rows:
        return []
    head = ["scenario", "LiteLLM req/s", "LiteLLM CPU ms/req"]
    head += [f"{s} ÷ LiteLLM req/s" for s in servers]
    head += [f"{s} ÷ LiteLLM CPU/req" for s in servers]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        s = r.scenario
        cpu = r.own_cpu("litellm")
        cells = [
            f"{s.pair.label} {'stream' if s.stream else 'non-stream'} c={s.concurrency}",
            f"{r.tallies['litellm'].rps:.1f}",
            "n/a" if cpu is None else f"{cpu:.2f}",
        ]
        cells += [
            _ratio_cell(r, "litellm", server) if server in r.tallies else "n/a"
            for server in servers
        ]
        for server in servers:
            own = r.own_cpu(server)
            cells.append("n/a" if own is None or not cpu else f"{own / cpu:.3f}x")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def pairs_table(results: list[ScenarioResult]) -> list[str]:
    head = [
        "client format",
        "provider",
        "how",
        "kind",
        "target",
        "req/s",
        "vs direct",
        "TTFB / p50 ms",
        "added p50 ms",
        "own CPU ms/req",
        "= x mock's direct",
        "errors",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        pair, s = r.scenario.pair, r.scenario
        for target, tally in r.tallies.items():
            direct = target == "direct"
            first = target == next(iter(r.tallies))
            latency = r.percentile(target, "p50", ttfb=s.stream)
            own, vs = r.own_cpu(target), r.cpu_vs_mock(target)
            cells = [
                f"`{FORMAT_PATHS[pair.fmt]}`" if first else "",
                ROUTE_LABELS[pair.route] if first else "",
                ("pass-through" if pair.passthrough else "translated") if first else "",
                ("stream" if s.stream else "non-stream") if first else "",
                target,
                f"{tally.rps:.1f}",
                "" if direct else _ratio_cell(r, "direct", target),
                fmt_ms(latency),
                "" if direct else _delta(r.added(target, ttfb=s.stream)),
                "n/a" if own is None else f"{own:.2f}",
                "" if direct or vs is None else f"{vs:.1f}x",
                str(tally.errors),
            ]
            lines.append("| " + " | ".join(cells) + " |")
        for target, why in r.excluded.items():
            lines.append(f"| | | | | {target} | left out: {why} |")
    return lines


def scaling_table(results: list[ScenarioResult]) -> list[str]:
    head = ["kind", "target", "req/s", "two ÷ one (rounds)", "p50 ms", "p99 ms", "errors"]
    head += ["CPU ms/req (both processes)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        for target, tally in r.tallies.items():
            own = r.own_cpu(target)
            cells = [
                "stream" if r.scenario.stream else "non-stream",
                target,
                f"{tally.rps:.1f}",
                f"**{_ratio_cell(r, 'one', 'two')}**" if target == "two" else "",
                fmt_ms(r.percentile(target, "p50")),
                fmt_ms(r.percentile(target, "p99")),
                str(tally.errors),
                "n/a" if own is None else f"{own:.2f}",
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def baseline_rows(result: ScenarioResult, baseline_name: str) -> list[str]:
    """Rows: direct, baseline, current, and current vs baseline; latency = whole response."""
    rows = []
    mock_cpu = result.own_cpu("direct")
    names = {"direct": "direct", "baseline": f"baseline {baseline_name}", "daphne": "current"}
    for target, name in names.items():
        tally = result.tallies[target]
        cpu = result.own_cpu(target)
        if cpu is None:
            cpu_cell = "n/a"
        elif target == "direct":
            cpu_cell = f"mock {cpu:.2f}"
        else:
            times = f" = {cpu / mock_cpu:.1f}x mock's direct" if mock_cpu else ""
            cpu_cell = f"{cpu:.2f}{times}"
        cells = [
            result.scenario.label if target == "direct" else "",
            name,
            f"{tally.rps:.1f}",
            "" if target == "direct" else _ratio_cell(result, "direct", target),
            fmt_ms(result.percentile(target, "p50", ttfb=True)),
            fmt_ms(result.percentile(target, "p50")),
            fmt_ms(result.percentile(target, "p99")),
            str(tally.errors),
            cpu_cell,
        ]
        rows.append("| " + " | ".join(cells) + " |")
    vs: dict[str, Any] = result.vs_baseline() or {}
    current_cpu, base_cpu = result.own_cpu("daphne"), result.own_cpu("baseline")
    if current_cpu is None or base_cpu is None:
        cpu_cell = "n/a"
    else:
        cpu_cell = f"**{_delta(current_cpu - base_cpu)} ({current_cpu / base_cpu:.2f}x)**"
    ttfb = vs.get("added_ttfb_ms", {}).get("p50", math.nan)
    cells = [
        "",
        "**current vs baseline**",
        f"**{_ratio_cell(result, 'baseline', 'daphne')}**",
        "",
        _delta(ttfb),
        f"**{_delta(vs['added_latency_ms']['p50'])}**",
        f"**{_delta(vs['added_latency_ms']['p99'])}**",
        "",
        cpu_cell,
    ]
    rows.append("| " + " | ".join(cells) + " |")
    return rows


def baseline_section(meta: dict[str, Any], results: list[ScenarioResult]) -> list[str]:
    base = meta["baseline"]
    short = base["title"].split(" ", 1)[0]
    out = [
        f"## Current proxy vs baseline `{short}`",
        "",
        f"Baseline = the proxy built from `{base['title']}` (`--baseline-ref {base['ref']}`), "
        "served by Daphne from a detached worktree with the same Python, pinned like the "
        "current one, measured in the same rounds of the main pair's grid against the same "
        f"mock. The difference is everything between the two revisions "
        f"({len(base['commits_between'])} commits, listed below). Stores: the baseline had "
        f"{base['database']} and {base.get('counters', 'no Redis')}; the current proxy had "
        f"{meta['stores']['database']} and {meta['stores']['counters']}.",
        "",
    ]
    if meta["stores"]["counters"].startswith("embedded"):
        out += [
            "**Not a production-like figure:** the current proxy had no Redis, so its "
            "admission and settlement scripts ran in-process through fakeredis/lupa. Run with "
            "`--redis-url redis://...` (a scratch DB number) for the figure that matters.",
            "",
        ]
    if base["config_dropped"]:
        dropped = ", ".join(f"`{d}`" for d in base["config_dropped"])
        out += [f"The baseline's config schema lacked {dropped}; it got the rest.", ""]
    head = ["scenario", "target", "req/s", "vs direct", "TTFB p50 ms", "p50 ms", "p99 ms"]
    head += ["errors", "own CPU ms/request"]
    out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for result in results:
        if "baseline" in result.tallies:
            out += baseline_rows(result, short)
    out += ["", f"Commits from `{short}` to this run's HEAD:", ""]
    out += [f"- `{line}`" for line in base["commits_between"]]
    out.append("")
    return out
