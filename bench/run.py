#!/usr/bin/env python
"""Benchmark the proxy against the mock provider it forwards to and against LiteLLM, in one run.

    .venv/bin/python bench/run.py            # full run, about 10 minutes (+1.5 the first time)
    .venv/bin/python bench/run.py --quick    # smoke run, about 4-5 minutes
    .venv/bin/python bench/run.py --only idle --only cold      # some sections only
    .venv/bin/python bench/run.py --compare-clients   # which load generator to use
    .venv/bin/python bench/run.py --baseline-ref REF --redis-url redis://...
                                             # also an older revision's proxy, same rounds

The script starts its own mock provider, the proxy on Daphne, uvicorn and granian (one
process each, pinned to one core; the mock and the load generator share the other) and
LiteLLM (installed once from bench/litellm/requirements.lock into bench/.litellm-venv), in a
temporary var dir with a temporary SQLite database unless --database-url / --redis-url (or
DATABASE_URL / REDIS_URL) name other stores, and stops them all on exit, Ctrl-C included.

Sections, in this order: the main pair (chat completions to an OpenAI-kind provider) at
c = 1, 16, 64, streamed and not, on every server, LiteLLM and direct; every other client
format on every provider kind at c = 16; two Daphne processes against one; chunk-forwarding
delay; 1,000 open idle streams; the cold first request; then issue 12's targets, met or
missed. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchlib import litellm
from benchlib.baseline import (
    Baseline,
    baseline_stores,
    new_baseline,
    remove_worktree,
    resolve_baseline,
    start_baseline,
)
from benchlib.client import CLIENTS
from benchlib.common import BENCH_CHUNKS, RESULTS_DIR, BenchError, log
from benchlib.gateways import Gateways, start_gateways
from benchlib.measure import compare_clients
from benchlib.processes import Processes, child_env, choose_stores, run_guarded
from benchlib.report import machine_info, markdown_report, write_results
from benchlib.scenarios import scenarios
from benchlib.sections import Bench, make_plan, wanted
from benchlib.servers import SERVERS, Pinning
from benchlib.stats import tree_rss_mb
from benchlib.targets import evaluate


def raise_fd_limit(needed: int) -> int:
    """Room for the idle streams' sockets, here and (inherited) in every child."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(soft, needed)
    if hard != resource.RLIM_INFINITY:
        want = min(hard, want)
    if want > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def needs_litellm(args: argparse.Namespace) -> bool:
    labels = [s.label for s in scenarios() if s.section != "scaling"] + ["chunks"]
    return any(wanted(args, label) for label in labels)


def run_bench(args: argparse.Namespace) -> int:
    started = time.monotonic()
    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    machine = machine_info()
    plan = make_plan(args)
    # A mistyped ref must fail before anything is started.
    rev = resolve_baseline(args.baseline_ref) if args.baseline_ref else None
    fd_limit = raise_fd_limit(2 * args.idle_streams + 512)
    pinning = Pinning(not args.no_pin)
    pinning.pin_self()
    if not args.no_litellm and not needs_litellm(args):
        args.no_litellm = "no section of this run measures it"
    workdir = Path(tempfile.mkdtemp(prefix="llm-proxy-bench-"))
    stores = choose_stores(args, workdir)
    gw: Gateways | None = None
    baseline: Baseline | None = None
    try:
        log(f"bench: work dir {workdir}; database {stores.database_label}; {pinning.describe()}")
        installed_before = litellm.installed()
        gw = start_gateways(args, workdir, stores, pinning)
        setup_s = time.monotonic() - started
        if rev is not None:
            log(f"bench: baseline {rev.title}")
            base_stores = baseline_stores(
                workdir / "baseline",
                database_url=args.baseline_database_url,
                redis_url=args.baseline_redis_url,
            )
            baseline = new_baseline(rev, workdir / "baseline", gw.mock_port, base_stores)
            try:
                start_baseline(baseline, cpus=pinning.proxy)
            except BenchError as exc:
                raise BenchError(f"baseline {rev.title}: {exc}") from None
        log(
            f"bench: mock on :{gw.mock_port}; "
            + ", ".join(f"{n} on :{e.port}" for n, e in gw.endpoints.items())
            + f"; set-up took {setup_s:.1f} s"
        )
        rss_start = tree_rss_mb(gw.pids()["daphne"])
        findings = asyncio.run(Bench(args, gw, plan, baseline).run())
        rss_end = tree_rss_mb(gw.pids()["daphne"])
        if findings.failed():
            for name in gw.servers:
                log(f"bench: there were errors; {name} output:\n{gw.processes.output(name)}")
    finally:
        if gw is not None:
            gw.processes.stop()
            # Before the work dir (and the logs in it) goes.
            gw.log_warnings()
        if baseline is not None:
            baseline.processes.stop()
            # Before the work dir goes: the worktree lives inside it.
            remove_worktree(baseline.tree)
        if args.keep_tmp:
            log(f"bench: kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    lite_note = gw.notes["litellm"][0].splitlines()[0] if "litellm" in gw.notes else ""
    findings.notes = gw.notes
    findings.checks = evaluate(
        grid=findings.grid,
        scaling=findings.scaling,
        chunks=findings.chunks,
        idle=findings.idle,
        cold=findings.cold,
        litellm_missing="" if "litellm" in gw.endpoints else "no LiteLLM",
    )
    meta: dict[str, Any] = {
        "date": date,
        "machine": machine | {"loadavg_end": [round(x, 2) for x in os.getloadavg()]},
        "stores": {"database": stores.database_label, "counters": stores.counters_label},
        "mode": "quick" if args.quick else "full",
        "plan": {
            "grid": str(plan.grid),
            "pairs": str(plan.pairs),
            "chunks": f"{plan.chunk_rounds} rounds of {plan.chunk_seconds} s per target",
            "idle_window_s": plan.idle_window,
            "cold_starts": plan.cold_starts,
        },
        "client": args.client,
        "chunks": BENCH_CHUNKS,
        "pinning": pinning.describe(),
        "servers": gw.servers,
        "upstream_max_connections": gw.processes.env.get("PROXY_UPSTREAM_MAX_CONNECTIONS"),
        "fd_limit": fd_limit,
        "litellm": {
            "version": litellm.version() if "litellm" in gw.endpoints else None,
            "status": "measured" if "litellm" in gw.endpoints else lite_note,
            "installed_this_run": not installed_before and litellm.installed(),
        },
        "setup_s": round(setup_s, 1),
        "duration_s": time.monotonic() - started,
        "daphne_rss_mb": {"start": rss_start, "end": rss_end},
        "idle_note": f"The load generator's open-file limit: {fd_limit}.",
    }
    if baseline is not None:
        meta["baseline"] = {
            "ref": baseline.rev.ref,
            "commit": baseline.rev.commit,
            "title": baseline.rev.title,
            "commits_between": baseline.rev.commits_between,
            "database": baseline.stores.database_label,
            "counters": baseline.stores.counters_label,
            "config_dropped": baseline.config_dropped,
        }
    report = markdown_report(meta, findings, gw.servers)
    write_results("bench", Path(args.output), report, findings.data(meta), as_json=args.json)
    return 1 if findings.failed() else 0


def run_compare_clients(args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="llm-proxy-bench-"))
    stores = choose_stores(args, workdir)
    processes = Processes(workdir, child_env(workdir, stores, None))
    rounds = args.rounds or 4
    seconds = args.seconds or 2.0
    warmup = 1.0 if args.warmup is None else args.warmup
    try:
        mock_port = processes.start_mock()
        table_text = asyncio.run(
            compare_clients(
                mock_port=mock_port,
                pid=processes.pids()["mock"],
                rounds=rounds,
                seconds=seconds,
                warmup=warmup,
            )
        )
    finally:
        processes.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    print(
        f"# Load generators against the mock directly ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
        f"nproc {os.cpu_count()}, Python {platform.python_version()})\n\n"
        f"{rounds} alternating rounds of {seconds} s each. The better client is the "
        "one giving the higher direct req/s at lower client CPU.\n\n" + table_text
    )
    return 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark the proxy on three ASGI servers against the mock directly and "
        "against LiteLLM, in one run."
    )
    parser.add_argument(
        "--quick", action="store_true", help="a ~4-5 min smoke run: every section, shorter"
    )
    parser.add_argument("--rounds", type=int, help="rounds per closed-loop scenario")
    parser.add_argument("--seconds", type=float, help="seconds per target per round")
    parser.add_argument("--warmup", type=float, help="warm-up seconds per target per scenario")
    parser.add_argument(
        "--client", choices=sorted(CLIENTS), default="raw", help="load generator (default raw)"
    )
    parser.add_argument(
        "--only",
        action="append",
        metavar="TEXT",
        help="run only the scenarios and sections whose label contains TEXT, e.g. 'grid', "
        "'pairs', 'scaling', 'chunks', 'idle', 'cold', 'stream c=16', 'messages>' (repeatable)",
    )
    parser.add_argument(
        "--servers",
        default=",".join(SERVERS),
        help=f"ASGI servers to serve the proxy on, comma-separated (default {','.join(SERVERS)};"
        " daphne is always included)",
    )
    parser.add_argument(
        "--no-litellm", action="store_true", help="do not install or measure LiteLLM"
    )
    parser.add_argument("--no-pin", action="store_true", help="pin no process to a core")
    parser.add_argument(
        "--idle-streams", type=int, default=1000, help="open idle streams per server (1000)"
    )
    parser.add_argument("--database-url", help="the proxy's database (default: temporary SQLite)")
    parser.add_argument("--redis-url", help="the proxy's Redis (default: embedded store)")
    parser.add_argument(
        "--baseline-ref",
        metavar="REF",
        help="also measure the proxy built from git revision REF (a detached worktree, own "
        "stores and var dir) in the main grid's rounds, and report current vs baseline",
    )
    parser.add_argument(
        "--baseline-database-url",
        help="the baseline's own scratch database (default: a temporary SQLite file)",
    )
    parser.add_argument(
        "--baseline-redis-url",
        help="the baseline's own scratch Redis DB (default: none, the embedded store)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of markdown")
    parser.add_argument(
        "--output",
        default=str(RESULTS_DIR / "latest.md"),
        help="where to write the markdown report (JSON beside it); default bench/results/latest.md",
    )
    parser.add_argument("--keep-tmp", action="store_true", help="keep the work dir and logs")
    parser.add_argument(
        "--compare-clients",
        action="store_true",
        help="measure the raw and httpx load generators against the mock, then exit",
    )
    args = parser.parse_args(argv)
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    unknown = set(servers) - set(SERVERS)
    if unknown:
        parser.error(
            f"--servers: unknown {', '.join(sorted(unknown))}; known: {', '.join(SERVERS)}"
        )
    args.servers = [s for s in SERVERS if s in servers or s == "daphne"]
    if args.rounds is not None and args.rounds < 1:
        parser.error("--rounds must be >= 1")
    if (args.seconds is not None and args.seconds <= 0) or (args.warmup or 0) < 0:
        parser.error("--seconds must be > 0 and --warmup >= 0")
    if args.idle_streams < 1:
        parser.error("--idle-streams must be >= 1")
    if args.baseline_ref and args.compare_clients:
        parser.error("--baseline-ref measures proxies; --compare-clients measures no proxy")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return run_guarded(
        "bench",
        lambda: run_compare_clients(args) if args.compare_clients else run_bench(args),
        "the mock, the proxies and LiteLLM (and any baseline) were stopped",
    )


if __name__ == "__main__":
    sys.exit(main())
