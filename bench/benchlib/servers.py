"""The ASGI servers the proxy is measured on, the CPU pinning of a run, and a process's tree.

Every server serves the same application (`proxy_site.asgi:application`) on the same stores,
one process (one worker), with an access log as Daphne writes one by default (`make run`), so
that the servers differ in the server alone.
"""

from __future__ import annotations

import os
import sys
from contextlib import suppress
from pathlib import Path

from .common import HOST

APP = "proxy_site.asgi:application"
SERVERS = ("daphne", "uvicorn", "granian")


def server_command(server: str, port: int) -> list[str]:
    """How `server` serves the proxy on `port`: one process, access log on."""
    python = [sys.executable, "-m"]
    if server == "daphne":
        # As `make run` serves it; Daphne logs every request at its default verbosity.
        return [*python, "daphne", "-b", HOST, "-p", str(port), APP]
    if server == "uvicorn":
        # uvicorn's access log is on by default too (its --no-access-log would turn it off).
        return [
            *python,
            "uvicorn",
            APP,
            "--host",
            HOST,
            "--port",
            str(port),
            "--loop",
            "uvloop",
            "--http",
            "httptools",
        ]
    if server == "granian":
        # granian logs no requests unless asked to; one worker process under its supervisor.
        return [
            *python,
            "granian",
            "--interface",
            "asgi",
            "--loop",
            "uvloop",
            "--host",
            HOST,
            "--port",
            str(port),
            "--workers",
            "1",
            "--access-log",
            APP,
        ]
    raise ValueError(f"unknown ASGI server {server!r}")


def version_of(module: str) -> str:
    try:
        imported = __import__(module)
    except ImportError:
        return "not installed"
    return str(getattr(imported, "__version__", "unknown"))


# --- pinning ----------------------------------------------------------------------------------


class Pinning:
    """Which cores a run gives whom: the proxy under test (any server, LiteLLM too) gets
    core 0 to itself, and the mock and the load generator share core 1, as in the earlier
    measurement. With fewer than two usable cores, or --no-pin, nothing is pinned."""

    def __init__(self, enabled: bool) -> None:
        cores = sorted(os.sched_getaffinity(0))
        self.all = set(cores)
        self.enabled = enabled and len(cores) >= 2
        self.proxy: set[int] | None = {cores[0]} if self.enabled else None
        self.load: set[int] | None = {cores[1]} if self.enabled else None

    def describe(self) -> str:
        if not self.enabled:
            return "not pinned (fewer than two cores, or --no-pin)"
        assert self.proxy is not None and self.load is not None
        return (
            f"proxy / LiteLLM process pinned to core {min(self.proxy)}, mock and load "
            f"generator to core {min(self.load)} (sched_setaffinity, as taskset does)"
        )

    def pin_self(self) -> None:
        """The load generator (this process) onto the mock's core."""
        if self.load is not None:
            os.sched_setaffinity(0, self.load)


def set_tree_affinity(pid: int, cores: set[int]) -> None:
    """Every thread of a process and of its children onto `cores` (taskset -a -p)."""
    for member in tree_pids(pid):
        with suppress(OSError):
            for task in os.listdir(f"/proc/{member}/task"):
                with suppress(OSError):
                    os.sched_setaffinity(int(task), cores)


# --- a process and its children ---------------------------------------------------------------


def tree_pids(pid: int) -> list[int]:
    """The process and its descendants: granian serves from a worker under a supervisor, and
    what a server spawns counts as its own cost."""
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        with suppress(OSError):
            for task in os.listdir(f"/proc/{current}/task"):
                with suppress(OSError):
                    children = Path(f"/proc/{current}/task/{task}/children").read_text()
                    queue += [int(child) for child in children.split()]
    return found
