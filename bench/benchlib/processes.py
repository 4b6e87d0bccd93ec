"""The child processes of a run (the mock, the proxy, a private Redis), the stores the proxy is
given, its environment, and stopping it all on exit, on Ctrl-C and on SIGTERM."""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from .common import HOST, MOCK_CHUNKS, MOCK_KEY, REPO_ROOT, BenchError, log
from .servers import server_command

LISTENING = re.compile(rb"mock provider listening on http://[^:\s]+:(\d+)")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


# Access logs, one line per request and never the clue: Daphne's (on by default at verbosity
# 1), uvicorn's, granian's and LiteLLM's (uvicorn's again).
ACCESS_LOG_LINE = re.compile(r'^(\S+ - - \[|INFO: +\S+ - "|\[[-\d :+]+\] \S+ - ")')


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    kept = [line for line in text.splitlines() if not ACCESS_LOG_LINE.match(line)]
    return "\n".join(kept[-lines:])


class Processes:
    """The child processes of this run: started here, and always stopped here."""

    def __init__(self, workdir: Path, env: dict[str, str], *, root: Path = REPO_ROOT) -> None:
        self.workdir = workdir
        self.env = env
        # The checkout the children run from: this one, or a baseline worktree. Both the
        # script and `-m` put their directory first on sys.path, ahead of the venv's editable
        # install of this checkout, so the code imported is root's.
        self.root = root
        self.children: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}

    def manage(self, *args: str, timeout: float = 180) -> str:
        """Run a management command to completion; its stdout, or BenchError with stderr."""
        result = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=self.root,
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise BenchError(
                f"manage.py {' '.join(args)} failed ({result.returncode}):\n"
                + result.stderr.decode(errors="replace")[-3000:]
            )
        return result.stdout.decode()

    def spawn(
        self,
        name: str,
        command: list[str],
        *,
        cpus: set[int] | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start a child logging to <workdir>/<name>.log; `cpus` pins it (and every thread
        and child it starts) before it runs a line of its own."""
        log_path = self.workdir / f"{name}.log"
        # A file, not a pipe: nobody has to keep draining it while the child runs.
        handle: IO[bytes] = log_path.open("wb")

        def pin() -> None:
            if cpus is not None:
                os.sched_setaffinity(0, cpus)

        try:
            process = subprocess.Popen(
                command,
                cwd=self.root,
                env=self.env if env is None else env,
                stdin=subprocess.DEVNULL,
                stdout=handle,
                stderr=subprocess.STDOUT,
                preexec_fn=pin if cpus is not None else None,
            )
        finally:
            handle.close()
        self.children[name] = (process, log_path)
        return process

    def stop_child(self, name: str) -> None:
        """Stop one child now (SIGTERM, then SIGKILL after 5 s); its log stays readable."""
        process, _ = self.children[name]
        if process.poll() is None:
            process.terminate()
            _reap(name, process)

    def output(self, name: str) -> str:
        """The end of a child's output, access log left out."""
        return _tail(self.children[name][1]) if name in self.children else ""

    def failed(self, name: str, problem: str) -> BenchError:
        return BenchError(f"{name} {problem}; its output:\n{self.output(name)}")

    def start_mock(
        self, *, timeout: float = 30, chunks: int = MOCK_CHUNKS, cpus: set[int] | None = None
    ) -> int:
        process = self.spawn(
            "mock",
            [
                sys.executable,
                "manage.py",
                "mock_provider",
                f"--host={HOST}",
                "--port=0",
                f"--chunks={chunks}",
                "--chunk-delay=0",
                "--ttft=0",
            ],
            cpus=cpus,
        )
        log_path = self.children["mock"][1]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = LISTENING.search(log_path.read_bytes())
            if found:
                return int(found.group(1))
            if process.poll() is not None:
                raise self.failed("mock", f"exited with status {process.returncode}")
            time.sleep(0.02)
        raise self.failed("mock", f"did not listen within {timeout}s")

    def start_proxy(
        self,
        *,
        name: str = "proxy",
        server: str = "daphne",
        timeout: float = 60,
        cpus: set[int] | None = None,
        readyz: bool = False,
    ) -> int:
        """Serve the proxy on `server` and wait until it answers: any HTTP answer to
        /v1/models (401 without a token) by default, which older revisions give too, or
        with `readyz` a 200 from /readyz (database, Redis and ledger drain checked), or a 503
        for the ledger drain alone (ready_but_ledger; logged)."""
        # Daphne cannot report a port it chose itself, so one is picked here; the tiny race
        # with another process taking it in between would show up as a start-up failure.
        port = free_port()
        process = self.spawn(name, server_command(server, port), cpus=cpus)
        answer = wait_until_ready(
            self,
            name,
            process,
            f"http://{HOST}:{port}" + ("/readyz" if readyz else "/v1/models"),
            timeout=timeout,
            need_ok=readyz,
            also_ready=ready_but_ledger if readyz else None,
        )
        if readyz and answer.status_code != 200:
            log(f"bench: {name}: /readyz says {answer.text}; taken as ready (the probes drain it)")
        return port

    def pids(self) -> dict[str, int]:
        """The children still running, by name."""
        return {
            name: process.pid
            for name, (process, _) in self.children.items()
            if process.poll() is None
        }

    def stop(self) -> None:
        for process, _ in self.children.values():
            if process.poll() is None:
                process.terminate()
        for name, (process, _) in self.children.items():
            _reap(name, process)


def ready_but_ledger(response: httpx.Response) -> bool:
    """/readyz's 503 whose only failing check is the ledger drain. A fresh process starts its
    drain with its first billed request, so ledger entries an earlier, stopped process left
    behind (a run cut short) keep /readyz at 503 until then; the bench's probes are that first
    request. The caller notes it."""
    if response.status_code != 503:
        return False
    try:
        checks = response.json().get("checks", {})
    except ValueError:
        return False
    failing = {name for name, outcome in checks.items() if outcome != "ok"}
    return failing == {"ledger"}


def wait_until_ready(
    processes: Processes,
    name: str,
    process: subprocess.Popen[bytes],
    url: str,
    *,
    timeout: float,
    need_ok: bool,
    also_ready: Callable[[httpx.Response], bool] | None = None,
) -> httpx.Response:
    """Poll `url` until it answers (200 if `need_ok`, or whatever `also_ready` accepts after a
    few seconds); that answer, or BenchError with the child's log if the child exits or the
    time runs out."""
    started = time.monotonic()
    deadline = started + timeout
    status = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise processes.failed(name, f"exited with status {process.returncode}")
        try:
            response = httpx.get(url, timeout=2, trust_env=False)
            status = response.status_code
            if not need_ok or status == 200:
                return response
            # Only once start-up's own warm-up has had its time.
            if also_ready and time.monotonic() - started > 10 and also_ready(response):
                return response
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    seen = f" (last answer: HTTP {status})" if status is not None else ""
    raise processes.failed(name, f"was not ready within {timeout}s{seen}")


def _reap(name: str, process: subprocess.Popen[bytes]) -> None:
    """Wait for a child told to stop (SIGTERM sent); SIGKILL after 5 s."""
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        log(f"{name} (pid {process.pid}) ignored SIGTERM; killing it")
        process.kill()
        process.wait()


def redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


@dataclass
class Stores:
    database_url: str
    redis_url: str | None
    database_label: str
    counters_label: str


def choose_stores(args: argparse.Namespace, workdir: Path) -> Stores:
    database_url = args.database_url or os.environ.get("DATABASE_URL") or ""
    redis_url = args.redis_url or os.environ.get("REDIS_URL") or None
    if database_url:
        source = "--database-url" if args.database_url else "env DATABASE_URL"
        database_label = f"{redact(database_url)} (from {source})"
    else:
        database_url = f"sqlite:///{workdir / 'bench.sqlite3'}"
        database_label = "SQLite, temporary file (default)"
    if redis_url:
        source = "--redis-url" if args.redis_url else "env REDIS_URL"
        counters_label = f"Redis {redact(redis_url)} (from {source})"
    else:
        counters_label = "embedded in-process store (REDIS_URL unset)"
    return Stores(database_url, redis_url, database_label, counters_label)


def child_env(workdir: Path, stores: Stores, mock_port: int | None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("REDIS_URL", None)
    env.update(
        {
            # Isolated from the developer's var/: fresh dev secrets, static dir and database.
            "PROXY_VAR_DIR": str(workdir / "var"),
            "DATABASE_URL": stores.database_url,
            "LOG_LEVEL": "WARNING",
            "BENCH_MOCK_KEY": MOCK_KEY,
        }
    )
    if stores.redis_url:
        env["REDIS_URL"] = stores.redis_url
    if mock_port is not None:
        env["BENCH_MOCK_PORT"] = str(mock_port)
    return env


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Let `kill PID` clean up like Ctrl-C does (the finally blocks stop the children)."""

    def handler(signum: int, frame: Any) -> None:
        # Whatever Ctrl-C would do right now: inside asyncio.run, the runner's handler cancels
        # the main task (so every await unwinds cleanly); outside it, KeyboardInterrupt.
        on_interrupt = signal.getsignal(signal.SIGINT)
        if callable(on_interrupt):
            on_interrupt(signal.SIGINT, frame)
        else:
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def start_stack(
    processes: Processes,
    stores: Stores,
    *,
    config: Path,
    tenant: str,
    extra_env: dict[str, str] | None = None,
) -> tuple[int, str, int]:
    """The mock, the proxy's schema, config and token, then the proxy: (mock port, token,
    proxy port). `extra_env` goes to every child on top of child_env's."""
    processes.env = child_env(processes.workdir, stores, None) | (extra_env or {})
    # The mock needs no database, so it starts while the schema is migrated.
    mock_port = processes.start_mock()
    processes.manage("migrate", "--noinput")
    processes.env.update(child_env(processes.workdir, stores, mock_port))
    processes.manage("apply_config", str(config))
    token = processes.manage("issue_token", tenant, "--ttl", "1d").strip()
    proxy_port = processes.start_proxy()
    return mock_port, token, proxy_port


def run_guarded(name: str, body: Callable[[], int], stopped: str) -> int:
    """A command's exit status: body's, 2 on a BenchError, 130 on Ctrl-C or `kill`.

    By the time either is caught, body's finally blocks have stopped what it started.
    """
    try:
        with sigterm_as_interrupt():
            return body()
    except BenchError as exc:
        log(f"{name}: {exc}")
        return 2
    except KeyboardInterrupt:
        log(f"{name}: interrupted; {stopped}")
        return 130
