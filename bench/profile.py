#!/usr/bin/env python
"""Where the proxy's CPU goes: py-spy on the live Daphne process under the bench's load.

    .venv/bin/python bench/profile.py --database-url postgres://... --redis-url redis://...
    .venv/bin/python bench/profile.py --root /path/to/older/checkout   # the same, for a "before"

The bench's stack (benchlib: the mock, the proxy on Daphne, bench/config.toml), the proxy
pinned to one core and the mock and load generator to the other, a closed loop of the raw
client at each concurrency (non-stream and stream, OpenAI route), and `py-spy record
--nonblocking` on the proxy for the measured seconds. Each sample is charged to the innermost
frame that belongs to one of PARTS (idle samples, the loop waiting in epoll, are dropped);
the table gives each part's share of the samples, and the CPU per request the run measured
(higher than the bench's: the profiler costs the process too). Raw profiles (py-spy's
collapsed stacks) are kept in bench/results/profile/.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import re
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from benchlib.client import CLIENTS
from benchlib.common import BENCH_CONFIG, RESULTS_DIR, BenchError, log
from benchlib.measure import measure
from benchlib.processes import Processes, child_env, choose_stores, run_guarded, start_stack
from benchlib.scenarios import openai_spec
from benchlib.servers import Pinning, set_tree_affinity

# (part, pattern of a frame): a sample goes to the first part whose pattern matches its
# innermost matching frame, looked for from the leaf up.
PARTS: tuple[tuple[str, str], ...] = (
    ("JSON", r"\(json/|orjson"),
    ("logging", r"\(logging/|core/logs\.py"),
    ("metrics (prometheus-client)", r"prometheus_client/|core/metrics\.py|usage/metrics\.py"),
    ("JWT and crypto", r"\(jwt/|cryptography/|tenants/auth\.py"),
    ("Redis client and scripts", r"\(redis/|usage/counters\.py|usage/limits\.py|core/redis\.py"),
    ("ledger drain", r"usage/ledger\.py"),
    ("live console, spend alerts", r"usage/alerts\.py|console/|channels_redis/|channels/"),
    (
        "upstream client (httpx, httpcore, anyio, aiohttp)",
        r"\(httpx/|httpcore/|anyio/|h11/|aiohttp/|core/http\.py",
    ),
    ("translation and codecs", r"routing/codecs/|routing/sse\.py|routing/redaction\.py"),
    ("database (ORM, psycopg)", r"django/db/|psycopg"),
    ("Django handler, middleware, URLs", r"django/|asgiref/|proxy_site/middleware"),
    ("pipeline and views (own code)", r"routing/|usage/|tenants/|api/|proxy_site/"),
    ("Daphne / Twisted", r"daphne/|twisted/|autobahn/|zope/"),
    ("asyncio event loop", r"asyncio/|selectors\.py"),
)
_COMPILED = [(name, re.compile(pattern)) for name, pattern in PARTS]


def shares(collapsed: Path) -> tuple[dict[str, float], int]:
    """Each part's share of a py-spy collapsed-stack file's busy samples, and their count."""
    counts: collections.Counter[str] = collections.Counter()
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if "select (selectors" in frames[-1] or "EpollSelector.select" in frames[-1]:
            continue  # the loop waiting for something to do
        part = next(
            (name for frame in reversed(frames) for name, rx in _COMPILED if rx.search(frame)),
            "other",
        )
        counts[part] += int(count)
    total = sum(counts.values())
    return {name: 100 * counts[name] / total for name in [*dict(PARTS), "other"]}, total


async def profile_one(
    *,
    port: int,
    token: str,
    pid: int,
    stream: bool,
    concurrency: int,
    seconds: float,
    out: Path,
) -> float:
    """CPU ms per request while py-spy records `seconds` of this load into `out`."""
    spec = openai_spec(port=port, bearer=token, model="auto", stream=stream)
    session = CLIENTS["raw"](spec, concurrency)
    try:
        await measure(session, spec, concurrency=concurrency, seconds=1.0, pids={})  # warm
        spy = await asyncio.create_subprocess_exec(
            *(str(Path(sys.executable).parent / "py-spy"), "record", "--nonblocking"),
            *("-p", str(pid), "-r", "400", "-f", "raw", "-o", str(out)),
            *("-d", str(int(seconds) + 2)),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        await asyncio.sleep(0.5)  # py-spy attached
        phase = await measure(
            session, spec, concurrency=concurrency, seconds=seconds, pids={"proxy": pid}
        )
        _, err = await asyncio.wait_for(spy.communicate(), timeout=seconds + 30)
        if spy.returncode != 0:
            raise BenchError(f"py-spy failed: {err.decode(errors='replace')[-500:]}")
    finally:
        await session.aclose()
    if phase.errors or not phase.requests:
        raise BenchError(f"the load failed: {phase.first_error}")
    return 1000 * phase.cpu["proxy"] / phase.requests


def run(args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="llm-proxy-profile-"))
    out_dir = Path(args.output)
    out_dir.mkdir(parents=True, exist_ok=True)
    stores = choose_stores(args, workdir)
    root = Path(args.root).resolve()
    processes = Processes(workdir, child_env(workdir, stores, None), root=root)
    pinning = Pinning(True)
    rows: list[tuple[str, dict[str, float], int, float]] = []
    try:
        _, token, port = start_stack(
            processes, stores, config=Path(args.config or BENCH_CONFIG), tenant="bench"
        )
        pids = processes.pids()
        if pinning.proxy is not None and pinning.load is not None:
            set_tree_affinity(pids["proxy"], pinning.proxy)
            set_tree_affinity(pids["mock"], pinning.load)
            pinning.pin_self()
        for stream in (False, True):
            for concurrency in args.concurrency:
                label = f"{'stream' if stream else 'non-stream'} c={concurrency}"
                log(f"profile: {label}")
                out = out_dir / f"{'stream' if stream else 'answer'}-c{concurrency}.txt"
                cpu = asyncio.run(
                    profile_one(
                        port=port,
                        token=token,
                        pid=pids["proxy"],
                        stream=stream,
                        concurrency=concurrency,
                        seconds=args.seconds,
                        out=out,
                    )
                )
                part_shares, samples = shares(out)
                rows.append((label, part_shares, samples, cpu))
    finally:
        processes.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"Profile of {root} ({stores.database_label}; {stores.counters_label})\n")
    print("| part | " + " | ".join(label for label, *_ in rows) + " |")
    print("|---|" + "---|" * len(rows))
    for name in [*dict(PARTS), "other"]:
        print(f"| {name} | " + " | ".join(f"{s[name]:.1f} %" for _, s, _, _ in rows) + " |")
    print("| busy samples | " + " | ".join(str(n) for _, _, n, _ in rows) + " |")
    print("| CPU ms per request (profiled) | " + " | ".join(f"{c:.2f}" for *_, c in rows) + " |")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--database-url", help="the proxy's database (default: temporary SQLite)")
    parser.add_argument("--redis-url", help="the proxy's Redis (default: embedded store)")
    parser.add_argument("--root", default=str(Path(__file__).resolve().parent.parent))
    parser.add_argument("--config", help="the config to apply (default bench/config.toml)")
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--output", default=str(RESULTS_DIR / "profile"))
    args = parser.parse_args(argv)
    if not shutil.which("py-spy", path=str(Path(sys.executable).parent)):
        parser.error("py-spy is not installed in this venv (make install)")
    return run_guarded("profile", lambda: run(args), "the mock and the proxy were stopped")


if __name__ == "__main__":
    sys.exit(main())
