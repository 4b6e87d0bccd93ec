#!/usr/bin/env python
"""Benchmark the proxy against the mock provider it forwards to, both measured in one run.

    .venv/bin/python bench/run.py            # full run, about 3 minutes
    .venv/bin/python bench/run.py --quick    # smoke run, about 30 seconds
    .venv/bin/python bench/run.py --compare-clients   # which load generator to use
    .venv/bin/python bench/run.py --baseline-ref REF --redis-url redis://...
                                             # also an older revision's proxy, same rounds

The script starts its own mock provider and proxy (Daphne) on free loopback ports, in a
temporary var dir with a temporary SQLite database unless --database-url / --redis-url (or
DATABASE_URL / REDIS_URL) name other stores, and stops them on exit, Ctrl-C included.

Each scenario (route x stream x concurrency) is measured in several short rounds that alternate
direct (client -> mock) and proxy (client -> proxy -> mock), so both see the same machine
conditions; the report gives both sides' figures and their ratio. With --baseline-ref, a third
target joins the rotation: the proxy built from an older git revision (a detached worktree,
its own var dir and SQLite file), so the cost of everything added since shows as current vs
baseline, measured in the same rounds. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchlib.baseline import (
    Baseline,
    baseline_stores,
    new_baseline,
    remove_worktree,
    resolve_baseline,
    start_baseline,
)
from benchlib.client import CLIENTS
from benchlib.common import BENCH_CONFIG, MOCK_CHUNKS, RESULTS_DIR, BenchError, log
from benchlib.measure import compare_clients, probe, run_scenario
from benchlib.processes import Processes, child_env, choose_stores, run_guarded, start_stack
from benchlib.report import machine_info, markdown_report, write_results
from benchlib.scenarios import Endpoint, RequestSpec, Scenario, scenarios
from benchlib.stats import ScenarioResult, process_rss_mb


async def bench_async(
    args: argparse.Namespace,
    *,
    mock_port: int,
    proxy_port: int,
    token: str,
    pids: dict[str, int],
    baseline: Endpoint | None = None,
) -> list[ScenarioResult]:
    chosen = [s for s in scenarios() if not args.only or any(o in s.label for o in args.only)]

    def specs_of(scenario: Scenario) -> dict[str, RequestSpec]:
        return scenario.specs(
            mock_port=mock_port, proxy_port=proxy_port, token=token, baseline=baseline
        )

    # Every kind of request to every target once, before timing anything.
    for scenario in chosen:
        if scenario.concurrency == 1:
            for target, spec in specs_of(scenario).items():
                await probe(spec, args.client, f"{scenario.label} {target}")
    results = []
    for scenario in chosen:
        specs = specs_of(scenario)
        results.append(
            await run_scenario(
                scenario,
                specs,
                client=args.client,
                rounds=args.rounds,
                seconds=args.seconds,
                warmup=args.warmup,
                pids=pids,
            )
        )
    return results


def run_bench(args: argparse.Namespace) -> int:
    started = time.monotonic()
    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    machine = machine_info()
    # A mistyped ref must fail before anything is started.
    rev = resolve_baseline(args.baseline_ref) if args.baseline_ref else None
    workdir = Path(tempfile.mkdtemp(prefix="llm-proxy-bench-"))
    stores = choose_stores(args, workdir)
    processes = Processes(workdir, child_env(workdir, stores, None))
    baseline: Baseline | None = None
    base_rss: dict[str, float | None] = {"start": None, "end": None}
    try:
        log(f"bench: work dir {workdir}; database {stores.database_label}")
        mock_port, token, proxy_port = start_stack(
            processes, stores, config=BENCH_CONFIG, tenant="bench"
        )
        proxy_pid = processes.pids()["proxy"]
        rss_start = process_rss_mb(proxy_pid)
        pids = processes.pids()
        if rev is not None:
            log(f"bench: baseline {rev.title}")
            baseline_dir = workdir / "baseline"
            base_stores = baseline_stores(
                baseline_dir,
                database_url=args.baseline_database_url,
                redis_url=args.baseline_redis_url,
            )
            baseline = new_baseline(rev, baseline_dir, mock_port, base_stores)
            try:
                start_baseline(baseline)
            except BenchError as exc:
                raise BenchError(f"baseline {rev.title}: {exc}") from None
            pids |= baseline.processes.pids()
            base_rss["start"] = process_rss_mb(pids["baseline"])
        log(
            f"bench: mock on :{mock_port}, proxy on :{proxy_port}"
            + (f", baseline on :{baseline.port}" if baseline else "")
            + f"; setup took {time.monotonic() - started:.1f} s"
        )
        try:
            results = asyncio.run(
                bench_async(
                    args,
                    mock_port=mock_port,
                    proxy_port=proxy_port,
                    token=token,
                    pids=pids,
                    baseline=baseline.endpoint if baseline else None,
                )
            )
        except BenchError as exc:
            # A failed probe is nearly always explained by the proxy's own log.
            problem = f"{exc}\nproxy output:\n{processes.output('proxy')}"
            if baseline is not None:
                problem += f"\nbaseline output:\n{baseline.processes.output('baseline')}"
            raise BenchError(problem) from None
        # Memory that grows with the requests served shows here (the whole run's worth).
        rss_end = process_rss_mb(proxy_pid)
        if baseline is not None:
            base_rss["end"] = process_rss_mb(pids["baseline"])
        if any(t.errors for r in results for t in r.tallies.values()):
            log(f"bench: there were errors; proxy output:\n{processes.output('proxy')}")
            if baseline is not None:
                log(f"bench: baseline output:\n{baseline.processes.output('baseline')}")
    finally:
        processes.stop()
        if baseline is not None:
            baseline.processes.stop()
            # Before the work dir goes: the worktree lives inside it.
            remove_worktree(baseline.tree)
        if args.keep_tmp:
            log(f"bench: kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    meta: dict[str, Any] = {
        "date": date,
        "machine": machine,
        "stores": {"database": stores.database_label, "counters": stores.counters_label},
        "mode": "quick" if args.quick else "full",
        "rounds": args.rounds,
        "seconds": args.seconds,
        "warmup": args.warmup,
        "client": args.client,
        "mock_chunks": MOCK_CHUNKS,
        "duration_s": time.monotonic() - started,
        "proxy_rss_mb": {"start": rss_start, "end": rss_end},
        # Measured requests only; the warm-ups and probes served before rss_end come on top.
        "proxy_requests_served": sum(r.tallies["proxy"].requests for r in results),
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
            "rss_mb": base_rss,
            "requests_served": sum(r.tallies["baseline"].requests for r in results),
        }
    meta["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    report = markdown_report(meta, results)
    data = {"meta": meta, "scenarios": [r.summary() for r in results]}
    write_results("bench", Path(args.output), report, data, as_json=args.json)
    failed = any(t.errors for r in results for t in r.tallies.values())
    return 1 if failed else 0


def run_compare_clients(args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="llm-proxy-bench-"))
    stores = choose_stores(args, workdir)
    processes = Processes(workdir, child_env(workdir, stores, None))
    try:
        mock_port = processes.start_mock()
        table_text = asyncio.run(
            compare_clients(
                mock_port=mock_port,
                pid=processes.pids()["mock"],
                rounds=args.rounds,
                seconds=args.seconds,
                warmup=args.warmup,
            )
        )
    finally:
        processes.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    print(
        f"# Load generators against the mock directly ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
        f"nproc {os.cpu_count()}, Python {platform.python_version()})\n\n"
        f"{args.rounds} alternating rounds of {args.seconds} s each. The better client is the "
        "one giving the higher direct req/s at lower client CPU.\n\n" + table_text
    )
    return 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark the proxy against the mock provider directly, in one run."
    )
    parser.add_argument("--quick", action="store_true", help="a ~30 s smoke run")
    parser.add_argument("--rounds", type=int, help="alternating rounds per scenario")
    parser.add_argument("--seconds", type=float, help="seconds per target per round")
    parser.add_argument("--warmup", type=float, help="warm-up seconds per target per scenario")
    parser.add_argument(
        "--client", choices=sorted(CLIENTS), default="raw", help="load generator (default raw)"
    )
    parser.add_argument(
        "--only",
        action="append",
        metavar="TEXT",
        help="run only scenarios whose label contains TEXT, e.g. 'openai non-stream' (repeatable)",
    )
    parser.add_argument("--database-url", help="the proxy's database (default: temporary SQLite)")
    parser.add_argument("--redis-url", help="the proxy's Redis (default: embedded store)")
    parser.add_argument(
        "--baseline-ref",
        metavar="REF",
        help="also measure the proxy built from git revision REF (a detached worktree, own "
        "stores and var dir) in the same rounds, and report current vs baseline",
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
    quick_defaults = {"rounds": 2, "seconds": 0.8, "warmup": 0.4}
    full_defaults = {"rounds": 5, "seconds": 2.4, "warmup": 1.0}
    for name, value in (quick_defaults if args.quick else full_defaults).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.rounds < 1 or args.seconds <= 0 or args.warmup < 0:
        parser.error("--rounds must be >= 1, --seconds > 0 and --warmup >= 0")
    if args.baseline_ref and args.compare_clients:
        parser.error("--baseline-ref measures proxies; --compare-clients measures no proxy")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return run_guarded(
        "bench",
        lambda: run_compare_clients(args) if args.compare_clients else run_bench(args),
        "the mock and the proxy (and any baseline) were stopped",
    )


if __name__ == "__main__":
    sys.exit(main())
