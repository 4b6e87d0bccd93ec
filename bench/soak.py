#!/usr/bin/env python
"""A bounded soak test: minutes of mixed load and rotating upstream faults against one proxy.

    .venv/bin/python bench/soak.py             # 3 minutes of load, then the checks
    .venv/bin/python bench/soak.py --quick     # about 45 s of load: a smoke run
    .venv/bin/python bench/soak.py --json      # the same, JSON on stdout

It starts the mock provider and one proxy (Daphne) on loopback, as bench/run.py does, applies
bench/soak.toml, and sends a steady mix (OpenAI and Anthropic routes, streamed or not, some
streams abandoned by the client after the first content chunk, a few requests the proxy must
refuse) from one asyncio process while the mock's injected faults change every few seconds.
Meanwhile it samples the proxy's memory and open file descriptors. After the load it waits
for the usage ledger to drain and checks that the ledger, the weekly counters, the mock's own
usage records and what the client saw all agree. See bench/README.md, section "Soak".
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from benchlib.common import HOST, REPO_ROOT, RESULTS_DIR, log, sleep_or_stop
from benchlib.processes import Processes, run_guarded, start_stack
from benchlib.report import machine_info, write_results
from benchlib.soak_checks import analyse, checks, resource_summary, summarise_log
from benchlib.soak_load import Load, Result, request_kinds, sampler
from benchlib.soak_mock import (
    ANTHROPIC_KEY,
    MOCK_CHUNK_DELAY,
    MOCK_TTFT,
    OPENAI_KEY_1,
    OPENAI_KEY_2,
    FaultRotator,
    MockRecords,
    mock_poller,
)
from benchlib.soak_report import markdown_report
from benchlib.soak_stores import (
    DEFAULT_DATABASE_URL,
    DEFAULT_REDIS_URL,
    TENANT,
    RedisWatch,
    SoakStores,
    choose_stores,
    counters_from_admin,
    read_ledger,
    release_stores,
    start_private_redis,
)
from benchlib.stats import Sample, proc_sample

SOAK_CONFIG = REPO_ROOT / "bench" / "soak.toml"


async def soak_async(
    args: argparse.Namespace,
    *,
    mock_port: int,
    proxy_port: int,
    token: str,
    proxy_pid: int,
    redis_url: str | None,
) -> dict[str, Any]:
    mock = httpx.AsyncClient(base_url=f"http://{HOST}:{mock_port}", timeout=10, trust_env=False)
    try:
        await mock.post(
            "/_mock/config",
            json={"ttft": MOCK_TTFT, "chunk_delay": MOCK_CHUNK_DELAY, "faults": []},
        )
        stop = asyncio.Event()
        rotator = FaultRotator(mock, warmup=args.warmup, phase_seconds=args.phase_seconds)
        started = time.monotonic()
        load = Load(
            kinds=request_kinds(proxy_port, token),
            port=proxy_port,
            deadline=started + args.seconds,
            max_requests=args.max_requests,
            disconnect_share=args.disconnect_share,
            seed=args.seed,
            rotator=rotator,
            stop=stop,
            started=started,
        )
        samples: list[Sample] = []
        records = MockRecords()
        watch = RedisWatch(redis_url)
        helpers = [
            asyncio.create_task(rotator.run(started, stop)),
            asyncio.create_task(sampler(proxy_pid, load, samples, started, args.sample_seconds)),
            asyncio.create_task(mock_poller(mock, records, stop)),
            asyncio.create_task(watch.run(started, stop)),
        ]

        async def progress() -> None:
            while not stop.is_set():
                await sleep_or_stop(stop, 15)
                done = len(load.results)
                last = samples[-1] if samples else None
                log(
                    f"  {time.monotonic() - started:5.0f} s  {done:6d} requests  phase "
                    f"{rotator.current:18}  proxy RSS {last and last.rss_mb} MiB, "
                    f"fds {last and last.fds}"
                )

        helpers.append(asyncio.create_task(progress()))
        try:
            await asyncio.gather(*(load.worker(i) for i in range(args.workers)))
        finally:
            stop.set()
            for task in helpers:
                # Let the rotator clear the faults; the others end at once on `stop`.
                with_timeout = asyncio.wait_for(task, timeout=10)
                try:
                    await with_timeout
                except Exception as exc:  # reported, but the run's figures still stand
                    log(f"soak: a helper task failed: {exc!r}")
        load_seconds = time.monotonic() - started
        # The sampler's last sample is the end under load. This one is taken with the
        # client's connections closed, so it shows what the proxy holds at rest.
        stopped = proc_sample(proxy_pid, load_seconds, len(load.results))
        await records.poll(mock)
        return {
            "results": load.results,
            "samples": samples,
            "stopped": stopped,
            "records": records,
            "timeline": rotator.timeline,
            "load_seconds": load_seconds,
            "redis_watch": await watch.finish(),
        }
    finally:
        await mock.aclose()


def run_soak(args: argparse.Namespace) -> int:
    began = time.monotonic()
    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    machine = machine_info()
    workdir = Path(tempfile.mkdtemp(prefix="llm-proxy-soak-"))
    stores: SoakStores | None = None
    processes = Processes(workdir, dict(os.environ))
    try:
        log(f"soak: work dir {workdir}")
        if args.private_redis:
            args.redis_url = start_private_redis(processes)
        stores = choose_stores(args, workdir)
        if args.private_redis:
            stores.flush_at_end = False
            stores.stores.counters_label = f"Redis, a private redis-server on {args.redis_url}"
        log(f"soak: database {stores.stores.database_label}")
        log(f"soak: counters {stores.stores.counters_label}")
        keys = {
            "SOAK_OPENAI_KEY_1": OPENAI_KEY_1,
            "SOAK_OPENAI_KEY_2": OPENAI_KEY_2,
            "SOAK_ANTHROPIC_KEY": ANTHROPIC_KEY,
        }
        mock_port, token, proxy_port = start_stack(
            processes, stores.stores, config=SOAK_CONFIG, tenant=TENANT, extra_env=keys
        )
        proxy_pid = processes.pids()["proxy"]
        log(
            f"soak: mock on :{mock_port}, proxy on :{proxy_port} (pid {proxy_pid}); "
            f"{args.seconds:.0f} s of load with {args.workers} workers"
        )
        run = asyncio.run(
            soak_async(
                args,
                mock_port=mock_port,
                proxy_port=proxy_port,
                token=token,
                proxy_pid=proxy_pid,
                redis_url=stores.redis_url,
            )
        )
        results: list[Result] = run["results"]
        samples: list[Sample] = run["samples"]
        admitted = sum(1 for r in results if r.admitted)
        log(f"soak: load done, {len(results)} requests; waiting for the ledger to drain")
        ledger = read_ledger(processes, expected=admitted, wait=args.drain_wait)
        admin_usage = None
        if not ledger["live"]:
            admin_usage = counters_from_admin(processes, proxy_port)
        after = proc_sample(proxy_pid, time.monotonic() - began, len(results))
        proxy_log = summarise_log(processes.children["proxy"][1])
    finally:
        processes.stop()
        if stores is not None and not args.keep:
            release_stores(stores)
        if args.keep:
            log(f"soak: kept {workdir} and the stores")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    start_index = next(
        (i for i, s in enumerate(samples) if s.t >= args.warmup), max(len(samples) - 1, 0)
    )
    resources = resource_summary(samples, start_index)
    analysis = analyse(results, ledger, run["records"], admin_usage)
    found = checks(analysis, resources, results, ledger, proxy_log, run["redis_watch"])
    meta = {
        "date": date,
        "machine": machine,
        "stores": {
            "database": stores.stores.database_label,
            "counters": stores.stores.counters_label,
        },
        "mode": "quick" if args.quick else "full",
        "seconds": args.seconds,
        "load_seconds": run["load_seconds"],
        "warmup": args.warmup,
        "phase_seconds": args.phase_seconds,
        "sample_seconds": args.sample_seconds,
        "workers": args.workers,
        "disconnect_share": args.disconnect_share,
        "seed": args.seed,
        "requests": len(results),
        "kinds": [k.name for k in request_kinds(0, "")],
        "timeline": run["timeline"],
        "duration_s": time.monotonic() - began,
    }
    meta["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    data = {
        "meta": meta,
        "checks": [asdict(c) | {"label": c.label} for c in found],
        "analysis": analysis,
        "resources": resources,
        "stopped": asdict(run["stopped"]),
        "after_load": asdict(after),
        "samples": [asdict(s) for s in samples],
        "ledger_drain": ledger["drain"],
        "redis_watch": run["redis_watch"],
        "proxy_log": proxy_log,
    }
    report = markdown_report(meta, data)
    write_results("soak", Path(args.output), report, data, as_json=args.json)
    for c in found:
        log(f"soak: {c.label} {c.name}")
    return 1 if any(c.passed is False for c in found) else 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Soak the proxy: minutes of mixed load and rotating faults, then checks."
    )
    parser.add_argument("--quick", action="store_true", help="about 45 s of load")
    parser.add_argument("--minutes", type=float, help="minutes of load (default 3; quick 0.75)")
    parser.add_argument("--workers", type=int, default=16, help="concurrent requests (16)")
    parser.add_argument(
        "--max-requests", type=int, default=200_000, help="stop after this many (200000)"
    )
    parser.add_argument("--warmup", type=float, help="seconds before the first fault (10; quick 5)")
    parser.add_argument("--phase-seconds", type=float, help="seconds per fault phase (10; quick 6)")
    parser.add_argument("--sample-seconds", type=float, default=2.0, help="proxy sampling (2 s)")
    parser.add_argument(
        "--disconnect-share", type=float, default=0.10, help="streams the client abandons (0.10)"
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the request mix (1)")
    parser.add_argument(
        "--drain-wait", type=float, default=60.0, help="max seconds to wait for the ledger (60)"
    )
    parser.add_argument(
        "--database-url",
        help=f"the proxy's database, used as is (default: {DEFAULT_DATABASE_URL}, created and "
        "dropped by the run; SQLite if PostgreSQL is unreachable)",
    )
    parser.add_argument(
        "--redis-url",
        help=f"the proxy's Redis, FLUSHDB at start and end (default: {DEFAULT_REDIS_URL}; "
        "the embedded store if Redis is unreachable)",
    )
    parser.add_argument(
        "--private-redis",
        action="store_true",
        help="start a redis-server of the run's own (immune to other jobs' FLUSHALL)",
    )
    parser.add_argument(
        "--embedded", action="store_true", help="SQLite and the embedded counter store"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of markdown")
    parser.add_argument(
        "--output",
        default=str(RESULTS_DIR / "soak-latest.md"),
        help="the markdown report (JSON beside it); default bench/results/soak-latest.md",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the work dir, the database and the Redis DB"
    )
    args = parser.parse_args(argv)
    if args.minutes is None:
        args.minutes = 0.75 if args.quick else 3.0
    if args.warmup is None:
        args.warmup = 5.0 if args.quick else 10.0
    if args.phase_seconds is None:
        args.phase_seconds = 6.0 if args.quick else 10.0
    args.seconds = args.minutes * 60
    if args.seconds <= args.warmup or args.workers < 1 or args.phase_seconds <= 0:
        parser.error("--minutes must exceed the warm-up; --workers >= 1; --phase-seconds > 0")
    if not 0 <= args.disconnect_share <= 1:
        parser.error("--disconnect-share is a fraction between 0 and 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return run_guarded("soak", lambda: run_soak(args), "the mock and the proxy were stopped")


if __name__ == "__main__":
    sys.exit(main())
