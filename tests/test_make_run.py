"""`make run` on a clean copy serves a working proxy, and the curl it prints works."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port

REPO = Path(__file__).resolve().parent.parent


def clean_copy(target: Path) -> None:
    """What a clone has: the tracked files and new ones git does not ignore."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO,
        check=True,
        capture_output=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_it_serves_the_printed_curl(tmp_path: Path) -> None:
    copy = tmp_path / "llm-proxy"
    clean_copy(copy)
    port, mock_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    venv = Path(sys.prefix)
    # The suite's own virtualenv stands in for the one `make run` would create (-o: do not
    # rebuild it); everything else happens in the copy from scratch: database, secrets, demo.
    process = subprocess.Popen(
        [
            "make",
            "-o",
            f"{venv}/.installed",
            "run",
            f"VENV={venv}",
            f"PORT={port}",
            f"MOCK_PORT={mock_port}",
        ],
        cwd=copy,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    assert process.stdout is not None
    output = ""
    try:
        deadline = time.monotonic() + 120
        while "password:" not in output:
            line = process.stdout.readline().decode()
            assert line or process.poll() is None, output
            output += line
            assert time.monotonic() < deadline, output
        curl = re.search(r"^curl -sN .*?-d '[^']*'$", output, re.MULTILINE | re.DOTALL)
        assert curl, output
        assert "password: " in output and "/admin/" in output
        assert "from openai import OpenAI" in output
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=1)
                httpx.get(f"http://127.0.0.1:{mock_port}/_mock/stats", timeout=1)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline and process.poll() is None, output
                time.sleep(0.2)
        result = subprocess.run(["bash", "-c", curl.group(0)], capture_output=True, timeout=30)
        stream = result.stdout.decode()
        assert result.returncode == 0, result.stderr
        assert stream.count("data: ") > 3 and stream.rstrip().endswith("data: [DONE]"), stream
        assert (copy / "var" / "llm-proxy.sqlite3").exists()
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(15)
