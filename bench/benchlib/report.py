"""The benchmark's report (markdown, and the same figures as JSON), the machine it ran on, and
writing both where they belong."""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from .chunks import DelayFigures, chunk_section
from .cold import ColdStart, cold_section
from .common import git, log
from .idle import IdleResult, idle_section
from .servers import version_of
from .stats import ScenarioResult
from .tables import baseline_section, litellm_table, pairs_table, scaling_table, scenario_table
from .targets import Check, targets_section


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
        "uvicorn": version_of("uvicorn"),
        "granian": version_of("granian"),
        "httpx": httpx.__version__,
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
        "git": _git_revision(),
    }


@dataclass
class Findings:
    """Everything a run measured, section by section (a section not run stays empty)."""

    grid: list[ScenarioResult] = field(default_factory=list)
    pairs: list[ScenarioResult] = field(default_factory=list)
    scaling: list[ScenarioResult] = field(default_factory=list)
    chunks: dict[int, dict[str, DelayFigures]] = field(default_factory=dict)
    idle: list[IdleResult] = field(default_factory=list)
    cold: list[ColdStart] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    notes: dict[str, list[str]] = field(default_factory=dict)

    def scenarios(self) -> list[ScenarioResult]:
        return self.grid + self.pairs + self.scaling

    def failed(self) -> bool:
        """Any request that failed while measured (probes and set-up fail the run earlier)."""
        return (
            any(t.errors for r in self.scenarios() for t in r.tallies.values())
            or any(f.errors for by in self.chunks.values() for f in by.values())
            or any(r.failed for r in self.idle)
        )

    def data(self, meta: dict[str, Any]) -> dict[str, Any]:
        data: dict[str, Any] = _no_nan(
            {
                "meta": meta,
                "targets": [check.summary() for check in self.checks],
                "scenarios": [r.summary() for r in self.scenarios()],
                "chunk_delay": {
                    str(c): {name: fig.summary() for name, fig in by.items()}
                    for c, by in self.chunks.items()
                },
                "idle_streams": [r.summary() for r in self.idle],
                "cold_start": [start.figures() for start in self.cold],
                "notes": self.notes,
            }
        )
        return data


def _no_nan(value: Any) -> Any:
    """NaN (a percentile of nothing) as null: JSON has no NaN, and strict parsers refuse it."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: _no_nan(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_no_nan(item) for item in value]
    return value


def _header(meta: dict[str, Any]) -> list[str]:
    m = meta["machine"]
    lite = meta["litellm"]
    return [
        "# llm-proxy benchmark: the proxy on three ASGI servers, LiteLLM, and direct",
        "",
        f"- Date: {meta['date']}; took {meta['duration_s']:.0f} s in all"
        + (
            f" (LiteLLM install {meta['litellm_install_s']:.0f} s)"
            if meta.get("litellm_install_s")
            else ""
        ),
        f"- Machine: {m['os']}, nproc {m['nproc']} ({m['cpu']}), load average at start "
        f"{' / '.join(str(x) for x in m['loadavg_start'])}, at end "
        f"{' / '.join(str(x) for x in m.get('loadavg_end', []))}",
        f"- Software: Python {m['python']}, Django {m['django']}, Daphne {m['daphne']}, "
        f"uvicorn {m['uvicorn']}, granian {m['granian']}, httpx {m['httpx']}, LiteLLM "
        f"{lite['version'] or 'not measured'}; git {m['git']}",
        f"- Pinning: {meta['pinning']}",
        f"- Servers: one process each, access log on (Daphne's default; uvicorn's default; "
        "granian with `--access-log`), same app, same stores, "
        f"`PROXY_UPSTREAM_MAX_CONNECTIONS={meta['upstream_max_connections']}` "
        "(room for the idle streams), `LOG_LEVEL=WARNING`. LiteLLM: one worker, master key, "
        "no database, its own default logging.",
        f"- Stores: database {meta['stores']['database']}; counters and cache "
        f"{meta['stores']['counters']}",
        f"- Rounds: {meta['mode']} mode; main grid {meta['plan']['grid']}; other pairs "
        f"{meta['plan']['pairs']}; order rotated every round; load generator `{meta['client']}` "
        "(one asyncio process, one keep-alive connection per concurrent request)",
        f"- Upstream: the mock provider (Daphne, no access log), {meta['chunks']} content chunks "
        "per reply, no delay (but in the chunk-delay and idle-stream sections)",
        "",
        "Direct = client → mock. Gateway = client → gateway → mock. Ratios and added "
        "milliseconds carry over between machines; absolute figures are this machine's. "
        "Own CPU ms/req: CPU time (user + system, the process and its children) of the "
        "process serving the target, per completed request; `= x mock's direct` divides it "
        "by the mock's CPU per direct request, which machine load disturbs least.",
        "",
    ]


def _notes(notes: dict[str, list[str]]) -> list[str]:
    if not notes:
        return []
    out = ["## Server notes", ""]
    for name, texts in notes.items():
        for text in texts:
            first, *rest = text.splitlines()
            out.append(f"- **{name}**: {first}")
            if rest:
                out += ["", "  ```", *(f"  {line}" for line in rest[-12:]), "  ```"]
    out.append("")
    return out


def _errors(findings: Findings) -> list[str]:
    errors = [
        (r.scenario.label, t, r.tallies[t].first_error)
        for r in findings.scenarios()
        for t in r.tallies
        if r.tallies[t].first_error
    ]
    errors += [
        (f"chunks c={c}", name, f.first_error)
        for c, by in findings.chunks.items()
        for name, f in by.items()
        if f.first_error
    ]
    if not errors:
        return []
    out = ["## Errors", ""]
    out += [f"- {label}, {target}: {problem}" for label, target, problem in errors]
    out.append("")
    return out


def markdown_report(meta: dict[str, Any], findings: Findings, servers: list[str]) -> str:
    out = _header(meta)
    if findings.checks:
        out += targets_section(findings.checks, servers)
    grid = findings.grid
    for stream in (False, True):
        chosen = [r for r in grid if r.scenario.stream == stream]
        if chosen:
            kind = f"streaming ({meta['chunks']} chunks)" if stream else "non-streaming"
            out += [
                f"## Main pair, {kind}: `/v1/chat/completions` → OpenAI-kind (pass-through)",
                "",
                *scenario_table(chosen, stream=stream),
                "",
            ]
    if any("litellm" in r.tallies for r in grid + findings.pairs):
        out += [
            "## Against LiteLLM (same rounds, same mock)",
            "",
            "`A ÷ LiteLLM req/s`: the server's throughput over LiteLLM's, min-max over the "
            "rounds in brackets; `CPU/req`: the server's own CPU per request over LiteLLM's.",
            "",
            *litellm_table(grid + findings.pairs, servers),
            "",
        ]
    if findings.pairs:
        out += [
            "## Every client format on every provider kind "
            f"(c={findings.pairs[0].scenario.concurrency})",
            "",
            "Direct = the mock in the provider's own format (chat completions, Messages, or "
            "Responses for the provider marked `responses_api`). TTFB for streams, the whole "
            "response otherwise. LiteLLM where its upstream call has the proxy's format.",
            "",
            *pairs_table(findings.pairs),
            "",
        ]
    if findings.scaling:
        out += [
            "## Two processes against one (Daphne, c=64)",
            "",
            "Two Daphne processes on the same stores, the load generator dealing its 64 "
            "connections round-robin between them, against one of them with all 64. For this "
            "section nothing is pinned (the proxies, the mock and the load generator share "
            "both cores as the kernel sees fit), one and two alike.",
            "",
            *scaling_table(findings.scaling),
            "",
        ]
    if findings.chunks:
        out += chunk_section(findings.chunks, meta["chunks"])
    if findings.idle:
        out += idle_section(findings.idle, note=meta.get("idle_note", ""))
    if findings.cold:
        out += cold_section(findings.cold)
    if "baseline" in meta:
        out += baseline_section(meta, grid)
    out += _notes(findings.notes)
    out += _errors(findings)
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
