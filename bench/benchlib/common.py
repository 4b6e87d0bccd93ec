"""What every part of the bench shares: where things are, the mock's settings, errors, logging."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
RESULTS_DIR = REPO_ROOT / "bench" / "results"
BENCH_CONFIG = REPO_ROOT / "bench" / "config.toml"
HOST = "127.0.0.1"
MOCK_KEY = "sk-bench-mock-key-0000"
MOCK_CHUNKS = 16


class BenchError(Exception):
    pass


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def git(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """A git command in this checkout, run to completion; check its returncode."""
    return subprocess.run(
        ["git", *args],
        cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


async def sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    """Sleep `seconds`, or less if `stop` is set meanwhile."""
    if seconds <= 0:
        return
    try:
        async with asyncio.timeout(seconds):
            await stop.wait()
    except TimeoutError:
        pass
