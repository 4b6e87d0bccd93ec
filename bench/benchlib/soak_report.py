"""The soak's markdown report (the JSON is the data it is rendered from)."""

from __future__ import annotations

import json
from typing import Any

from .common import MOCK_CHUNKS
from .soak_mock import FAULT_PHASES, MOCK_CHUNK_DELAY, MOCK_TTFT
from .soak_stores import TENANT


def _cell(value: Any) -> str:
    return "n/a" if value is None else str(value)


def markdown_report(meta: dict[str, Any], data: dict[str, Any]) -> str:
    a = data["analysis"]
    res = data["resources"]
    m = meta["machine"]
    out = [
        "# llm-proxy soak test",
        "",
        f"- Date: {meta['date']}; git {m['git']}",
        f"- Machine: {m['os']}, nproc {m['nproc']} ({m['cpu']}); Python {m['python']}, "
        f"Django {m['django']}, Daphne {m['daphne']}",
        f"- Stores: database {meta['stores']['database']}; counters {meta['stores']['counters']}",
        f"- Load: {meta['seconds']:.0f} s ({meta['mode']}"
        + (
            f"; {meta['load_seconds']:.0f} s until the last answer"
            if meta["load_seconds"] - meta["seconds"] >= 1
            else ""
        )
        + f"), {meta['workers']} workers in one asyncio process, closed loop; "
        f"{meta['requests']} requests ({meta['requests'] / meta['load_seconds']:.1f}/s); "
        f"{meta['disconnect_share']:.0%} of streams abandoned by the client after the first "
        "content chunk",
        f"- Mock: {MOCK_CHUNKS} chunks, first after {MOCK_TTFT * 1000:.0f} ms, then every "
        f"{MOCK_CHUNK_DELAY * 1000:.0f} ms; faults rotated every {meta['phase_seconds']:.0f} s "
        f"after a {meta['warmup']:.0f} s warm-up: {', '.join(p.name for p in FAULT_PHASES)}",
        f"- Took {meta['duration_s']:.0f} s in all",
        "",
        "## Checks",
        "",
    ]
    out += [f"- **{c['label']}** {c['name']}: {c['detail']}" for c in data["checks"]]
    out += ["", "## Requests by outcome", ""]
    kinds = meta["kinds"]
    out.append("| outcome | " + " | ".join(kinds) + " | total |")
    out.append("|---|" + "---|" * (len(kinds) + 1))
    for outcome, per_kind in sorted(a["outcomes"].items(), key=lambda kv: -sum(kv[1].values())):
        cells = [str(per_kind.get(k, "")) for k in kinds]
        out.append(f"| {outcome} | " + " | ".join(cells) + f" | {sum(per_kind.values())} |")
    out += ["", "By fault phase (what was injected when the request was sent):", ""]
    out.append("| phase | requests | outcomes other than ok |")
    out.append("|---|---|---|")
    for phase in ["warm-up", *[p.name for p in FAULT_PHASES]]:
        counts = a["by_phase"].get(phase)
        if not counts:
            continue
        other = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()) if k != "ok") or "-"
        out.append(f"| {phase} | {sum(counts.values())} | {other} |")
    out += [
        "",
        "## Proxy resources",
        "",
        f"Sampled every {meta['sample_seconds']:.0f} s. Start = the first sample after the "
        "warm-up, end = the last one under load; slope = least-squares fit against requests "
        "served over that span. Load stopped = just after the last response, the client's "
        "connections closed; drained = after the ledger check.",
        "",
        "| | start | end | min | max | slope per 1000 requests | second half | load stopped "
        "| drained |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    stopped, after = data["stopped"], data["after_load"]
    for attr, label in (("rss_mb", "RSS MiB"), ("fds", "open fds"), ("threads", "threads")):
        r = res.get(attr)
        if r:
            out.append(
                f"| {label} | {r['start']} | {r['end']} | {r['min']} | {r['max']} | "
                f"{_cell(r['slope_per_1000'])} | {_cell(r['slope_second_half'])} | "
                f"{_cell(stopped.get(attr))} | "
                f"{_cell(after.get(attr))} |"
            )
    out += [
        "",
        "## Usage ledger",
        "",
        f"- Rows for tenant `{TENANT}`: {a['rows']}; admitted requests (responses past "
        f"admission): {a['admitted']}; refused before admission: {a['refused']}",
        f"- Drain: {' → '.join(str(h['rows']) for h in data['ledger_drain'][:12])} rows "
        f"(polled every 0.5 s after the load stopped)",
    ]
    for c in a["counters"]:
        line = (
            f"- Week {c['week']}: ledger {c['ledger_tokens']} tokens / {c['ledger_nanos']} nano-USD"
        )
        if c["counter_tokens"] is not None:
            line += f"; Redis counter {c['counter_tokens']} / {_cell(c['counter_nanos'])}"
        out.append(line)
    if a["admin_usage"] is not None:
        out.append(f"- Embedded counters, from the admin page: {a['admin_usage']}")
    mk = a["mock"]
    out += [
        f"- Mock: {mk['calls']} calls, {mk['records_seen']} records collected over "
        f"{mk['polls']} polls; {mk['joined']} of {mk['reported_rows']} provider-reported rows "
        f"joined to their mock record by the answer's id ({mk['unjoinable']} not), "
        f"{mk['mismatched']} differ. Tokens over the joined rows: ledger "
        f"{mk['ledger_tokens']}, mock {mk['mock_tokens']}",
        f"- Rows with the proxy's own counts (stream cut short, usage_reported false): "
        f"{mk['own_counts']['rows']}; for {mk['own_counts']['joined']} of them the ledger has "
        f"{mk['own_counts']['ledger_output']} output tokens where the mock sent "
        f"{mk['own_counts']['mock_chunks']} pieces (not expected to match: the proxy counts "
        "what it received before it stopped reading)",
        "",
        "Client outcome against ledger status (admitted requests):",
        "",
        "| client saw | ledger status, http_status | requests |",
        "|---|---|---|",
    ]
    for key, n in a["crosstab"].items():
        client, ledger = key.split(" | ")
        out.append(f"| {client} | {ledger} | {n} |")
    if a["disagree"]:
        out += ["", "First disagreements:", ""]
        out += [f"- `{json.dumps(d)}`" for d in a["disagree"][:5]]
    if a["missing"]:
        first, last = a["missing_t"]
        out += [
            "",
            f"Admitted without a row: {len(a['missing'])}, completed between t = {first} and "
            f"{last} s of the load; first ids {', '.join(a['missing'][:3])}. By kind, outcome "
            "and phase:",
            "",
        ]
        out += [f"- {what}: {n}" for what, n in a["missing_by"]]
    logs = data["proxy_log"]
    out += ["", "## Proxy log", ""]
    out.append(
        f"{logs['errors']} ERROR/CRITICAL lines, {logs['routine_5xx']} routine ERROR lines "
        f"(Django's `Bad Gateway` / `Gateway Timeout`), {logs['warnings']} WARNING lines, "
        f"{logs['tracebacks']} tracebacks; Daphne's access log left out."
    )
    if logs["top"]:
        out += ["", "| lines | level, logger, message |", "|---|---|"]
        out += [f"| {n} | `{shape}` |" for shape, n in logs["top"]]
    if logs["first_traceback"]:
        out += ["", "First traceback:", "", "```", *logs["first_traceback"], "```"]
    out.append("")
    return "\n".join(out)
