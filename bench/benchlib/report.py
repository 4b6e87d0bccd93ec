"""The benchmark's report (markdown; the JSON is the scenarios' summaries), the machine it ran
on, and writing both where they belong."""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
from contextlib import suppress
from pathlib import Path
from typing import Any

import httpx

from .common import MOCK_CHUNKS, git, log
from .stats import ScenarioResult, Tally, percentiles_ms


def _git_revision() -> str:
    try:
        head = git("rev-parse", "--short", "HEAD", timeout=5).stdout.strip()
        dirty = git("status", "--porcelain", "--untracked-files=no", timeout=5).stdout.strip()
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


def fmt_ms(value: float) -> str:
    """A figure in ms for a table cell."""
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


def _percentiles(tally: Tally) -> tuple[dict[str, float], dict[str, float]]:
    """Whole response and TTFB (NaN where there is none) percentiles, in ms."""
    lat = percentiles_ms(tally.latencies)
    ttfb = percentiles_ms(tally.ttfbs) if tally.ttfbs else {"p50": math.nan, "p99": math.nan}
    return lat, ttfb


def scenario_rows(result: ScenarioResult) -> list[str]:
    """Rows: direct, proxy, and the proxy's difference; latency = whole response."""
    stream = result.scenario.stream
    rows = []
    stats: dict[str, tuple[dict[str, float], dict[str, float]]] = {}
    for target in ("direct", "proxy"):
        tally = result.tallies[target]
        lat, ttfb = stats[target] = _percentiles(tally)
        cells = [str(result.scenario.concurrency), target, f"{tally.rps:.1f}"]
        if stream:
            cells += [fmt_ms(ttfb["p50"]), fmt_ms(ttfb["p99"])]
        cells += [
            fmt_ms(lat["p50"]),
            fmt_ms(lat["p99"]),
            str(tally.errors),
            _cpu_cell(tally, target),
        ]
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
        lat, ttfb = stats[target] = _percentiles(tally)
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
            fmt_ms(ttfb["p50"]),
            fmt_ms(lat["p50"]),
            fmt_ms(lat["p99"]),
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
        f"({len(base['commits_between'])} commits, listed below). "
        f"Stores: the baseline had {base['database']} and {base.get('counters', 'no Redis')}; "
        f"the current proxy had {meta['stores']['database']}, and for counters "
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
        "in brackets, current ÷ baseline. It leaves out the Redis and database servers' own "
        "CPU (scripts run inside Redis), but counts work done in the proxy's process, such as "
        "an embedded store's scripts or a SQLite write.",
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


def write_results(
    name: str, output: Path, report: str, data: dict[str, Any], *, as_json: bool
) -> None:
    """The report at `output`, the JSON beside it, and one of the two on stdout."""
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(report)
    output.with_suffix(".json").write_text(json.dumps(data, indent=2) + "\n")
    log(f"{name}: wrote {output} and {output.with_suffix('.json')}")
    print(json.dumps(data, indent=2) if as_json else report)
