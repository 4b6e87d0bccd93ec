"""The soak's verdict: what the client saw against the ledger, the counters and the mock's
records; the proxy's resources over the run; its log; and the PASS / FAIL checks on all that."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .soak_load import Result
from .soak_mock import MockRecords
from .stats import Sample, slope_per_1000


# What the ledger should say for what the client saw: (status, http_status) options.
def expected_ledger(result: Result) -> set[tuple[str, int]]:
    outcome = result.outcome
    if outcome == "ok":
        return {("ok", 200)}
    if outcome == "client disconnected":
        # The proxy may have finished relaying before it noticed the client leave.
        return {("client_disconnected", 499), ("ok", 200)}
    if outcome.startswith("stream error: "):
        code = outcome.removeprefix("stream error: ")
        return (
            {("upstream_timeout", 504)} if code == "upstream_timeout" else {("upstream_error", 502)}
        )
    if result.status >= 400:
        status = "upstream_timeout" if result.status == 504 else "upstream_error"
        return {(status, result.status)}
    return set()


@dataclass
class Check:
    name: str
    passed: bool | None  # None: skipped
    detail: str

    @property
    def label(self) -> str:
        return {True: "PASS", False: "FAIL", None: "SKIP"}[self.passed]


def analyse(
    results: list[Result],
    ledger: dict[str, Any],
    mock: MockRecords,
    admin_usage: str | None,
) -> dict[str, Any]:
    rows = {row["request_id"]: row for row in ledger["rows"]}
    seen = {r.request_id: r for r in results if r.request_id}
    admitted = {rid for rid, r in seen.items() if r.admitted}
    refused = {rid for rid, r in seen.items() if r.admitted is False}
    no_response = sum(1 for r in results if r.status == 0)
    missing = sorted(admitted - rows.keys())
    refused_with_row = sorted(refused & rows.keys())
    unknown_rows = sorted(rows.keys() - seen.keys())

    # What the ledger says against what the client saw, request by request.
    disagree: list[dict[str, Any]] = []
    crosstab: Counter[tuple[str, str]] = Counter()
    for rid in admitted & rows.keys():
        result, row = seen[rid], rows[rid]
        crosstab[(result.outcome, f"{row['status']} {row['http_status']}")] += 1
        if (row["status"], row["http_status"]) not in expected_ledger(result):
            disagree.append({"request_id": rid, "client": result.outcome, "ledger": row})

    # Token sums: ledger == counters, per usage week.
    weeks: dict[str, dict[str, int]] = defaultdict(lambda: {"tokens": 0, "nanos": 0, "rows": 0})
    for row in ledger["rows"]:
        w = weeks[row["week"]]
        w["tokens"] += row["input_tokens"] + row["output_tokens"]
        w["nanos"] += row["cost_nanos"]
        w["rows"] += 1
    counter_cmp = []
    for week, sums in sorted(weeks.items()):
        counter = ledger["weeks"].get(week, {})
        counter_cmp.append(
            {
                "week": week,
                "rows": sums["rows"],
                "ledger_tokens": sums["tokens"],
                "counter_tokens": int(counter["used_tokens"]) if "used_tokens" in counter else None,
                "ledger_nanos": sums["nanos"],
                "counter_nanos": int(counter["used_nanos"]) if "used_nanos" in counter else None,
            }
        )
    admin_tokens: int | None = None
    if admin_usage:
        found = re.match(r"([\d,]+) ", admin_usage)
        admin_tokens = int(found.group(1).replace(",", "")) if found else None

    # The provider's own count, request by request, where the proxy billed it.
    joined = mismatched = 0
    ledger_sum = [0, 0]
    mock_sum = [0, 0]
    unjoinable = 0
    mismatches: list[dict[str, Any]] = []
    own_counts = {"rows": 0, "ledger_output": 0, "mock_chunks": 0, "joined": 0}
    for rid, row in rows.items():
        answered = seen.get(rid)
        record = mock.records.get(answered.upstream_id or "") if answered else None
        if not row["usage_reported"]:
            own_counts["rows"] += 1
            if record is not None:
                own_counts["joined"] += 1
                own_counts["ledger_output"] += row["output_tokens"]
                own_counts["mock_chunks"] += record["chunks_sent"]
            continue
        if record is None or record["usage"] is None:
            unjoinable += 1
            continue
        joined += 1
        mine = (row["input_tokens"], row["output_tokens"])
        theirs = (record["usage"]["input_tokens"], record["usage"]["output_tokens"])
        ledger_sum[0] += mine[0]
        ledger_sum[1] += mine[1]
        mock_sum[0] += theirs[0]
        mock_sum[1] += theirs[1]
        if mine != theirs:
            mismatched += 1
            if len(mismatches) < 5:
                mismatches.append({"request_id": rid, "ledger": mine, "mock": theirs})

    outcomes: dict[str, Counter[str]] = defaultdict(Counter)
    by_phase: dict[str, Counter[str]] = defaultdict(Counter)
    for r in results:
        outcomes[r.outcome][r.kind] += 1
        by_phase[r.phase][r.outcome] += 1
    return {
        "admitted": len(admitted),
        "refused": len(refused),
        "no_response": no_response,
        "rows": len(rows),
        "missing": missing,
        # Where the missing rows come from: what the client saw, and when.
        "missing_by": Counter(
            f"{seen[rid].kind}: {seen[rid].outcome} (phase {seen[rid].phase})" for rid in missing
        ).most_common(10),
        "missing_t": [min(seen[rid].t for rid in missing), max(seen[rid].t for rid in missing)]
        if missing
        else None,
        "refused_with_row": refused_with_row,
        "unknown_rows": unknown_rows,
        "disagree": disagree,
        "crosstab": {f"{a} | {b}": n for (a, b), n in sorted(crosstab.items())},
        "counters": counter_cmp,
        "admin_usage": admin_usage,
        "admin_tokens": admin_tokens,
        "mock": {
            "calls": mock.calls,
            "records_seen": len(mock.records),
            "polls": mock.polls,
            "reported_rows": len(rows) - own_counts["rows"],
            "joined": joined,
            "unjoinable": unjoinable,
            "mismatched": mismatched,
            "mismatches": mismatches,
            "ledger_tokens": {"input": ledger_sum[0], "output": ledger_sum[1]},
            "mock_tokens": {"input": mock_sum[0], "output": mock_sum[1]},
            "own_counts": own_counts,
        },
        "outcomes": {k: dict(v) for k, v in outcomes.items()},
        "by_phase": {k: dict(v) for k, v in by_phase.items()},
        # Every answer other than ok or a deliberate refusal, with when it was sent: a fault
        # in a phase that should have none may be the next phase's, met at the switch.
        "not_ok": [
            {
                "kind": r.kind,
                "phase": r.phase,
                "outcome": r.outcome,
                "sent_t": round(r.t - r.seconds, 2),
                "seconds": round(r.seconds, 3),
            }
            for r in results
            if r.outcome not in ("ok", "client disconnected") and r.admitted is not False
        ],
    }


def resource_summary(samples: list[Sample], start_index: int) -> dict[str, Any]:
    steady = samples[start_index:]
    out: dict[str, Any] = {}
    for attr in ("rss_mb", "fds", "threads"):
        values = [getattr(s, attr) for s in steady if getattr(s, attr) is not None]
        if not values:
            continue
        slope = slope_per_1000(steady, attr)
        # The second half alone: growth that is only the process warming up (allocator
        # arenas, pools, caches) flattens out there, while a leak keeps its slope.
        late = slope_per_1000(steady[len(steady) // 2 :], attr)
        out[attr] = {
            "start": values[0],
            "end": values[-1],
            "min": min(values),
            "max": max(values),
            "slope_per_1000": None if slope is None else round(slope, 3),
            "slope_second_half": None if late is None else round(late, 3),
        }
    return out


# Thresholds for the resource checks, explained in bench/README.md.
FD_MARGIN = 8
RSS_MARGIN_MB = 20.0


def checks(
    analysis: dict[str, Any],
    resources: dict[str, Any],
    results: list[Result],
    ledger: dict[str, Any],
    log_summary: dict[str, Any],
    watch: dict[str, Any],
) -> list[Check]:
    out = []
    if watch["watched"]:
        calls = watch["flush_calls"]
        out.append(
            Check(
                "the soak's Redis DB was left alone by other processes",
                not watch["wipes"],
                (
                    f"emptied from outside at t = {', '.join(map(str, watch['wipes']))} s"
                    if watch["wipes"]
                    else "its canary key stayed"
                )
                + f"; FLUSHALL / FLUSHDB calls on the server during the load: "
                f"{calls.get('flushall')} / {calls.get('flushdb')}",
            )
        )
    fds = resources.get("fds")
    if fds:
        out.append(
            Check(
                "no growth in open file descriptors",
                fds["end"] <= fds["start"] + FD_MARGIN,
                f"{fds['start']} -> {fds['end']} under load (allowed: start + {FD_MARGIN}); "
                f"min {fds['min']}, max {fds['max']}",
            )
        )
    rss = resources.get("rss_mb")
    if rss:
        out.append(
            Check(
                "RSS growth bounded",
                rss["end"] <= rss["start"] + RSS_MARGIN_MB,
                f"{rss['start']} -> {rss['end']} MiB (allowed: start + {RSS_MARGIN_MB:.0f} MiB); "
                f"slope {rss['slope_per_1000']} MiB per 1000 requests, "
                f"{rss['slope_second_half']} over the second half",
            )
        )
    statuses = Counter(r.status for r in results)
    internal = sum(1 for r in results if "internal_error" in r.outcome)
    out.append(
        Check(
            "no 500s",
            statuses[500] == 0 and internal == 0,
            f"{statuses[500]} responses with status 500, {internal} internal_error events",
        )
    )
    broken = Counter(
        r.outcome
        for r in results
        if r.status == 0
        or r.outcome.startswith("incomplete")
        or (r.admitted is False and r.kind.startswith(("openai", "anthropic")))
    )
    out.append(
        Check(
            "every answer well-formed (no transport error, timeout, truncated body, refusal)",
            not broken,
            ", ".join(f"{k}: {v}" for k, v in broken.most_common()) or "none",
        )
    )
    a = analysis
    rows_ok = not a["missing"] and not a["refused_with_row"] and not a["unknown_rows"]
    out.append(
        Check(
            "ledger rows == admitted requests",
            rows_ok,
            f"{a['rows']} rows, {a['admitted']} admitted; {len(a['missing'])} admitted without "
            f"a row, {len(a['refused_with_row'])} refused with a row, {len(a['unknown_rows'])} "
            f"rows for no response seen ({a['no_response']} requests got no response)"
            + (
                "; NOT the proxy's doing if the Redis DB was emptied from outside (above): the "
                "entries not yet drained went with it"
                if watch["wipes"] and a["missing"]
                else ""
            ),
        )
    )
    out.append(
        Check(
            "ledger status == what the client saw",
            not a["disagree"],
            f"{len(a['disagree'])} of {a['admitted']} admitted requests disagree",
        )
    )
    if ledger["live"]:
        bad = [
            c
            for c in a["counters"]
            if c["ledger_tokens"] != c["counter_tokens"] or c["ledger_nanos"] != c["counter_nanos"]
        ]
        detail = "; ".join(
            f"week {c['week']}: ledger {c['ledger_tokens']} tokens / {c['ledger_nanos']} nano-USD, "
            f"counter {c['counter_tokens']} / {c['counter_nanos']}"
            for c in a["counters"]
        )
        out.append(Check("ledger == Redis weekly counters (tokens and cost)", not bad, detail))
        leftovers = (
            ledger["reservations"],
            ledger["inflight"],
            ledger["pending"],
            ledger["dead_letter"],
        )
        out.append(
            Check(
                "no reservation, lease or ledger entry left behind",
                not any(leftovers),
                "reservations {}, in-flight leases {}, undrained entries {}, dead letters {}; "
                "reserved total {}".format(*leftovers, ledger["reserved_total"] or "{}"),
            )
        )
    else:
        this_week = a["counters"][-1] if a["counters"] else None
        if a["admin_tokens"] is None or this_week is None:
            out.append(
                Check("ledger == weekly counter (embedded store)", None, "admin page unreadable")
            )
        else:
            out.append(
                Check(
                    "ledger == weekly counter (embedded store, read from the admin)",
                    this_week["ledger_tokens"] == a["admin_tokens"],
                    f"ledger {this_week['ledger_tokens']} tokens, counter {a['admin_tokens']} "
                    f"({a['admin_usage']})",
                )
            )
    m = a["mock"]
    out.append(
        Check(
            "ledger == mock's usage, request by request (provider-reported rows)",
            m["mismatched"] == 0 and m["joined"] > 0,
            f"{m['joined']} of {m['reported_rows']} rows joined to the mock's record, "
            f"{m['mismatched']} differ; ledger {m['ledger_tokens']} vs mock {m['mock_tokens']}",
        )
    )
    out.append(
        Check(
            "proxy log: no ERROR or traceback",
            log_summary["errors"] == 0 and log_summary["tracebacks"] == 0,
            f"{log_summary['errors']} ERROR/CRITICAL lines, {log_summary['tracebacks']} "
            f"tracebacks ({log_summary['routine_5xx']} routine ERROR lines of Django's for "
            "the 502/504 answers the faults provoke are not counted)",
        )
    )
    return out


# Django logs every 5xx response at ERROR; these two are the answers the injected faults
# provoke. "Internal Server Error" (a 500) stays an error.
ROUTINE_5XX = ("Bad Gateway:", "Gateway Timeout:")
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (\w+) (\S+) (.*)$")
REQUEST_ID_PREFIX = re.compile(r"^\s*(req_[0-9a-f]+\s+)?")


def summarise_log(path: Path) -> dict[str, Any]:
    """The proxy's own log lines (the access log left out), grouped by shape."""
    counts: Counter[str] = Counter()
    levels: Counter[str] = Counter()
    tracebacks = 0
    first_traceback: list[str] = []
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        lines = []
    in_traceback = False
    for line in lines:
        if line.startswith("Traceback"):
            tracebacks += 1
            in_traceback = tracebacks == 1
        if in_traceback and len(first_traceback) < 40:
            first_traceback.append(line)
        found = LOG_LINE.match(line)
        if found:
            in_traceback = False
            level, name, message = found.groups()
            # The plain format puts the request id before the message (an empty one outside
            # a request), so Django's 502 / 504 line starts with it.
            message = REQUEST_ID_PREFIX.sub("", message)
            if name == "django.request" and message.startswith(ROUTINE_5XX):
                level = "ROUTINE"  # Django's own line for a 502/504 the faults caused
            levels[level] += 1
            shape = re.sub(r"\b(req_[0-9a-f]+|\d+(\.\d+)?)\b", "#", message)[:140]
            counts[f"{level} {name} {shape}"] += 1
    return {
        "errors": levels["ERROR"] + levels["CRITICAL"],
        "warnings": levels["WARNING"],
        "routine_5xx": levels["ROUTINE"],
        "tracebacks": tracebacks,
        "top": counts.most_common(12),
        "first_traceback": first_traceback,
    }
