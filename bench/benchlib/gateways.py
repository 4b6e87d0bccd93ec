"""What a benchmark run starts and measures: the mock, the proxy on each ASGI server, LiteLLM,
and which of them could be measured (with what went wrong for those that could not)."""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, field
from pathlib import Path

from .common import BENCH_CHUNKS, BENCH_CONFIG, BenchError, log
from .litellm import MASTER_KEY, finish_install, start_install, start_litellm
from .processes import Processes, Stores, child_env
from .scenarios import Endpoint
from .servers import SERVERS, Pinning

WARNING_LINE = re.compile(r"\b(WARNING|ERROR|CRITICAL)\b|Traceback")
REQUEST_ID = re.compile(r"\breq_[0-9a-f]{8,}\b")
TIMESTAMP = re.compile(r"^\[?\d{4}-\d\d-\d\d[ T][\d:,.]+( \+\d{4})?\]?\s*")


@dataclass
class Gateways:
    """The running targets of a run and their processes."""

    processes: Processes
    pinning: Pinning
    mock_port: int = 0
    token: str = ""
    endpoints: dict[str, Endpoint] = field(default_factory=dict)  # by target name
    # What happened to a server or LiteLLM that is not measured (or only partly), by name.
    notes: dict[str, list[str]] = field(default_factory=dict)

    def note(self, name: str, text: str) -> None:
        self.notes.setdefault(name, []).append(text)
        log(f"bench: {name}: {text.splitlines()[0]}")

    @property
    def servers(self) -> list[str]:
        return [name for name in SERVERS if name in self.endpoints]

    def pids(self) -> dict[str, int]:
        return self.processes.pids()

    def log_warnings(self, limit: int = 6) -> None:
        """Note what each proxy process logged at WARNING or worse: each distinct line once
        with its count (timestamps and request ids left out), and a traceback by its last
        line: how the app behaves on a server shows there first."""
        for name, (_, path) in self.processes.children.items():
            server = name.split("-")[1] if name.startswith("cold-") else name
            if server not in SERVERS and not server.startswith("daphne-"):
                continue
            try:
                lines = path.read_text(errors="replace").splitlines()
            except OSError:
                continue
            counts: dict[str, int] = {}
            first: dict[str, str] = {}
            for index, line in enumerate(lines):
                if line.startswith("Traceback"):
                    # The exception is the first line after the indented frames.
                    tail = next((t for t in lines[index + 1 :] if not t.startswith(" ")), "")
                    line = f"traceback: {tail}"
                elif not WARNING_LINE.search(line) or "/readyz" in line:
                    # /readyz answers 503 (logged as an ERROR) until start-up's warm-up is
                    # done, and the bench polls it from the start.
                    continue
                text = REQUEST_ID.sub("req_…", TIMESTAMP.sub("", line)).strip()[:400]
                # Lines that differ in their figures only are one kind; the first is quoted.
                shape = re.sub(r"\d+", "#", text)
                first.setdefault(shape, text)
                counts[shape] = counts.get(shape, 0) + 1
            for shape, count in sorted(counts.items(), key=lambda item: -item[1])[:limit]:
                times = f" ({count} times)" if count > 1 else ""
                self.notes.setdefault(server, []).append(f"{name} logged{times}: {first[shape]}")


def start_gateways(
    args: argparse.Namespace, workdir: Path, stores: Stores, pinning: Pinning
) -> Gateways:
    """The mock, the schema, config and token, the proxy on each chosen server and LiteLLM.

    Daphne must start (it is the proxy as served); another server or LiteLLM that fails is
    noted and left out, so the rest of the run goes on. If set-up fails, what it had started
    is stopped before the error goes up (the caller has nothing to stop yet).
    """
    processes = Processes(workdir, child_env(workdir, stores, None))
    gateways = Gateways(processes, pinning)
    try:
        _start(gateways, args, workdir, stores)
    except BaseException:
        processes.stop()
        raise
    return gateways


def _start(gateways: Gateways, args: argparse.Namespace, workdir: Path, stores: Stores) -> None:
    processes, pinning = gateways.processes, gateways.pinning
    install = None if args.no_litellm else start_install(processes)
    gateways.mock_port = processes.start_mock(chunks=BENCH_CHUNKS, cpus=pinning.load)
    processes.manage("migrate", "--noinput")
    processes.env.update(child_env(workdir, stores, gateways.mock_port))
    # Room for the 1,000 idle streams: the upstream pool's default (512) would hold the rest
    # back; a deployment setting, the same for every server.
    processes.env["PROXY_UPSTREAM_MAX_CONNECTIONS"] = str(args.idle_streams + 64)
    processes.manage("apply_config", str(BENCH_CONFIG))
    gateways.token = processes.manage("issue_token", "bench", "--ttl", "1d").strip()
    for server in args.servers:
        try:
            port = processes.start_proxy(
                name=server, server=server, cpus=pinning.proxy, readyz=True
            )
        except BenchError as exc:
            if server == "daphne":
                raise
            # Not left idling beside the others for the rest of the run.
            processes.stop_child(server)
            gateways.note(server, f"did not start: {exc}")
            continue
        gateways.endpoints[server] = Endpoint(port, gateways.token)
    if args.no_litellm:
        why = args.no_litellm if isinstance(args.no_litellm, str) else "--no-litellm"
        gateways.note("litellm", f"not measured ({why})")
    elif install is not None:
        problem = finish_install(processes, install)
        if problem is not None:
            gateways.note("litellm", f"not measured: the install failed: {problem}")
        else:
            try:
                port = start_litellm(processes, gateways.mock_port, cpus=pinning.proxy)
                gateways.endpoints["litellm"] = Endpoint(port, MASTER_KEY)
            except BenchError as exc:
                gateways.note("litellm", f"not measured: it did not start: {exc}")
