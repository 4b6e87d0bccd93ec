"""What every part of the bench shares: where things are, the mock's settings, errors, logging."""

from __future__ import annotations

import asyncio
import math
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
RESULTS_DIR = REPO_ROOT / "bench" / "results"
BENCH_CONFIG = REPO_ROOT / "bench" / "config.toml"
HOST = "127.0.0.1"
MOCK_KEY = "sk-bench-mock-key-0000"
# The soak's mock answers 16 pieces (bench/soak.py); the benchmark's 20, as issue 12 asks.
MOCK_CHUNKS = 16
BENCH_CHUNKS = 20
# LiteLLM, the gateway the proxy is compared with: a pinned, hashed lock committed in bench/,
# installed once into an ignored folder and reused by later runs.
LITELLM_LOCK = REPO_ROOT / "bench" / "litellm" / "requirements.lock"
LITELLM_VENV = REPO_ROOT / "bench" / ".litellm-venv"


class BenchError(Exception):
    pass


def fmt_ms(value: float) -> str:
    """A figure in ms for a table cell."""
    return "n/a" if math.isnan(value) else f"{value:.2f}"


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
