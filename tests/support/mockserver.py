"""Run the mock LLM provider (``manage.py mock_provider``) in a subprocess for a test session.

    mock = MockServer.start(chunks=4, chunk_delay=0.01)
    client = openai.OpenAI(base_url=mock.openai_base_url, api_key="sk-test")
    ...
    assert mock.calls() == 1
    mock.stop()

A real process on a real port, rather than the app in-process, so streaming, timing and
disconnects behave exactly as they will against a real provider.
"""

from __future__ import annotations

import atexit
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import httpx

REPO_ROOT = Path(__file__).resolve().parents[2]
LISTENING = re.compile(rb"mock provider listening on (http://\S+)")


class MockServer:
    """A running mock provider and a client for its control API (``/_mock/...``)."""

    def __init__(
        self, process: subprocess.Popen[bytes], url: str, stdout: IO[bytes], stderr: IO[bytes]
    ) -> None:
        self.process = process
        self.url = url
        self._stdout = stdout
        self._stderr = stderr
        # trust_env=False: a proxy from the environment must never sit between test and mock.
        self._client = httpx.Client(base_url=url, timeout=10.0, trust_env=False)
        # A crashed test run must not leave the mock behind, still holding its port.
        atexit.register(self.stop)

    @classmethod
    def start(
        cls,
        *,
        chunks: int = 8,
        chunk_delay: float = 0.0,
        ttft: float = 0.0,
        port: int | None = None,
        timeout: float = 15.0,
    ) -> MockServer:
        """Spawn the mock and wait until it listens; without `port`, the OS picks a free one."""
        command = [
            sys.executable,
            "manage.py",
            "mock_provider",
            f"--port={port or 0}",
            f"--chunks={chunks}",
            f"--chunk-delay={chunk_delay}",
            f"--ttft={ttft}",
        ]
        # Files, not pipes: nobody has to keep draining them while the mock runs.
        stdout = tempfile.TemporaryFile()
        stderr = tempfile.TemporaryFile()
        process = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        deadline = time.monotonic() + timeout
        while True:
            stdout.seek(0)
            found = LISTENING.search(stdout.read())
            if found:
                return cls(process, found.group(1).decode(), stdout, stderr)
            returncode = process.poll()
            if returncode is not None or time.monotonic() > deadline:
                if returncode is None:
                    process.kill()
                    process.wait()
                stderr.seek(0)
                output = stderr.read().decode(errors="replace")
                stdout.close()
                stderr.close()
                problem = f"did not start within {timeout}s"
                if returncode is not None:
                    problem = f"exited with status {returncode} during start"
                raise RuntimeError(f"mock provider {problem}; stderr:\n{output}")
            time.sleep(0.02)

    @property
    def openai_base_url(self) -> str:
        return self.url + "/v1"

    @property
    def anthropic_base_url(self) -> str:
        return self.url

    def stats(self) -> dict[str, Any]:
        return self._control("GET", "/_mock/stats")

    def requests(self) -> list[dict[str, Any]]:
        """The records of the provider calls received, oldest first."""
        records: list[dict[str, Any]] = self.stats()["requests"]
        return records

    def calls(self) -> int:
        count: int = self.stats()["calls"]
        return count

    def reset(self) -> dict[str, Any]:
        """Forget the records and restore the configuration the mock was started with."""
        return self._control("POST", "/_mock/reset")

    def configure(self, **config: Any) -> dict[str, Any]:
        """Merge `config` (chunks, chunk_delay, ttft, text, faults) and return the result."""
        return self._control("POST", "/_mock/config", config)

    def stop(self) -> None:
        """Stop the process (killing it if it does not exit promptly); safe to call twice."""
        atexit.unregister(self.stop)
        self._client.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._stdout.close()
        self._stderr.close()

    def __enter__(self) -> MockServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _control(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        response = self._client.request(method, path, json=body)
        if response.status_code != 200:
            raise RuntimeError(f"mock {method} {path}: {response.status_code} {response.text}")
        payload: dict[str, Any] = response.json()
        return payload
