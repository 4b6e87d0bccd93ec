"""Real agent programs driven headless against a base URL: Claude Code and Codex CLI.

    cli = ensure_claude_code()            # `make agents`: npm ci from agents/package-lock.json
    run = run_claude_code(base_url=proxy.url, api_key=token, prompt="...", workdir=tmp_path)
    assert run.returncode == 0, run.describe()

    ensure_codex()
    run = run_codex(base_url=proxy.url + "/v1", api_key=token, prompt="...", workdir=tmp_path)

Claude Code (the npm package, a plain Node script at the version the lock pins) runs with the
quiet-traffic settings it documents, in a fresh HOME, with an environment built from nothing
(so no proxy, key or database URL of the test process leaks into it). Even so it calls out by
itself: with an API key it asks ``api.anthropic.com/api/claude_code/organizations/metrics_enabled``
(sending that key) whatever the settings say, and resolves that name.

Codex (npm ``@openai/codex``: a Node launcher that execs the Rust binary of the platform
package npm installs beside it, ``@openai/codex-linux-x64`` and so on, all from the registry)
runs as ``codex exec`` with a fresh CODEX_HOME whose config.toml names one model provider, the
base URL given. Left to its defaults it also syncs its curated plugin marketplace
(github.com, api.github.com, chatgpt.com) and sends analytics (ab.chatgpt.com);
codex_config() turns both off, and then the provider's ``POST /responses`` are all it sends.

Two walls keep whatever an agent still tries on this machine:

- ``HTTPS_PROXY``/``HTTP_PROXY`` (and for Codex ``ALL_PROXY``) point at a loopback trap that
  answers 403 and records what was asked (``AgentRun.egress``); ``NO_PROXY`` exempts loopback,
  where the proxy under test is.
- When the kernel lets us, it runs in a network namespace of its own holding only a loopback
  interface, so nothing can leave however it tries. The proxy (and the trap) live in the test's
  namespace, so this module carries their ports in over Unix sockets, which do not belong to a
  network namespace: inside, a relay listens on the same 127.0.0.1 port and forwards each
  connection to a socket file; outside, a thread forwards that socket to the real port. The
  agent sees the same base URL either way.

This file is also the in-namespace half, run as a script (stdlib only, no project imports):
``python agents.py --netns-exec --forward PORT=SOCKET ... -- COMMAND...``.
"""

from __future__ import annotations

import argparse
import fcntl
import functools
import json
import os
import shutil
import socket
import socketserver
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest

REPO = Path(__file__).resolve().parents[2]
AGENTS_DIR = REPO / "agents"
CLAUDE_CODE_CLI = AGENTS_DIR / "node_modules" / "@anthropic-ai" / "claude-code" / "cli.js"
CODEX_CLI = AGENTS_DIR / "node_modules" / "@openai" / "codex" / "bin" / "codex.js"
# Written by `make agents` after npm ci; older than the lock means the install is stale.
_INSTALLED = AGENTS_DIR / "node_modules" / ".installed"
_LOCK = AGENTS_DIR / "package-lock.json"

# The model names Claude Code 2.1.112 asks for when nobody picks one: the main loop, and the
# small fast model of its background calls (session titles; not sent under the quiet settings,
# but a route for it costs nothing). `--model` and ANTHROPIC_MODEL change the first,
# ANTHROPIC_DEFAULT_HAIKU_MODEL (or the older ANTHROPIC_SMALL_FAST_MODEL) the second.
CLAUDE_CODE_MODEL = "claude-sonnet-4-6"
CLAUDE_CODE_SMALL_MODEL = "claude-haiku-4-5-20251001"

# What Claude Code documents for running without its own services (no telemetry, error
# reports, update checks, feedback), plus no retries: a test of a failing proxy should fail
# at once, and the provider should see exactly the calls the agent meant.
QUIET_ENV: Mapping[str, str] = {
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "DISABLE_TELEMETRY": "1",
    "DISABLE_AUTOUPDATER": "1",
    "DISABLE_ERROR_REPORTING": "1",
    "DISABLE_BUG_COMMAND": "1",
    "CLAUDE_CODE_MAX_RETRIES": "0",
    "API_TIMEOUT_MS": "60000",
}

_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost"})


def node_binary() -> str | None:
    return shutil.which("node")


def ensure_claude_code() -> Path:
    """The Claude Code CLI script, installed from the lock first when missing or stale."""
    return _ensure_installed(CLAUDE_CODE_CLI)


def ensure_codex() -> Path:
    """The Codex CLI launcher (bin/codex.js), installed from the lock first when missing or stale.

    The launcher only finds the binary; a missing platform package (npm skipped the optional
    dependency) fails here rather than as a puzzling exit 1 in the first test.
    """
    cli = _ensure_installed(CODEX_CLI)
    with tempfile.TemporaryDirectory(prefix="codex-home-") as home:
        done = subprocess.run(
            [node_binary() or "node", str(cli), "--version"],
            capture_output=True,
            text=True,
            timeout=60,
            env={"PATH": os.environ.get("PATH", ""), "HOME": home, "CODEX_HOME": home},
        )
    if done.returncode != 0:
        raise RuntimeError(f"Codex does not start on this machine:\n{done.stdout}{done.stderr}")
    return cli


def _ensure_installed(cli: Path) -> Path:
    if (
        cli.is_file()
        and _INSTALLED.is_file()
        and _INSTALLED.stat().st_mtime >= _LOCK.stat().st_mtime
    ):
        return cli
    if not shutil.which("npm"):
        # Nothing can install them here (a machine with node but without npm).
        pytest.skip(f"{cli.relative_to(AGENTS_DIR)} is not installed and npm is missing")
    if shutil.which("make"):
        command = ["make", "--no-print-directory", "agents"]
    else:
        command = ["npm", "ci", "--prefix", str(AGENTS_DIR), "--no-audit", "--no-fund"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    if done.returncode != 0 or not cli.is_file():
        raise RuntimeError(
            f"installing {cli.relative_to(AGENTS_DIR)} failed ({' '.join(command)}):\n"
            f"{done.stdout}{done.stderr}"
        )
    return cli


@functools.cache
def netns_command() -> tuple[str, ...] | None:
    """How to start a process in a new loopback-only network namespace, or None if refused.

    Plain ``unshare --net`` as root; an unprivileged user gets one inside a user namespace.
    """
    if not shutil.which("unshare"):
        return None
    for command in (("unshare", "--net"), ("unshare", "--user", "--map-root-user", "--net")):
        probe = [*command, sys.executable, __file__, "--netns-exec", "--", "true"]
        try:
            if subprocess.run(probe, capture_output=True, timeout=30).returncode == 0:
                return command
        except (OSError, subprocess.TimeoutExpired):
            continue
    return None


@dataclass(frozen=True)
class AgentRun:
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    isolated: bool  # ran in its own loopback-only network namespace
    egress: list[str] = field(default_factory=list)  # proxy requests the trap refused

    def describe(self) -> str:
        return (
            f"exit {self.returncode} after {self.seconds:.1f}s (isolated={self.isolated})\n"
            f"stdout:\n{self.stdout}\nstderr:\n{self.stderr}\nrefused egress: {self.egress}"
        )


def run_claude_code(
    *,
    base_url: str,
    api_key: str,
    prompt: str,
    workdir: Path,
    model: str | None = None,
    small_model: str | None = None,
    auth: str = "api_key",
    allowed_tools: Sequence[str] = ("Bash",),
    isolate: bool = True,
    timeout: float = 180.0,
    extra_env: Mapping[str, str] | None = None,
) -> AgentRun:
    """Run ``claude -p PROMPT --allowedTools ... --output-format text`` against ``base_url``.

    ``workdir/project`` is its working directory (made if missing: put the task's files there)
    and ``workdir/home`` its HOME. ``auth`` "api_key" sends the key as ``x-api-key``
    (ANTHROPIC_API_KEY), "auth_token" as ``Authorization: Bearer`` (ANTHROPIC_AUTH_TOKEN).
    With ``isolate`` it runs in a loopback-only network namespace when the kernel allows one.
    """
    node = _node()
    if auth not in ("api_key", "auth_token"):
        raise ValueError(f"auth must be 'api_key' or 'auth_token', not {auth!r}")
    port = _loopback_port(base_url)
    cli = ensure_claude_code()
    project, home = _dirs(workdir)
    env = {
        **_base_env(node=node, home=home),
        "ANTHROPIC_BASE_URL": base_url,
        "ANTHROPIC_API_KEY" if auth == "api_key" else "ANTHROPIC_AUTH_TOKEN": api_key,
        **QUIET_ENV,
    }
    if small_model or model:
        env["ANTHROPIC_DEFAULT_HAIKU_MODEL"] = small_model or model or ""
        env["ANTHROPIC_SMALL_FAST_MODEL"] = small_model or model or ""
    command = [node, str(cli), "-p", prompt, "--output-format", "text"]
    if allowed_tools:
        command += ["--allowedTools", ",".join(allowed_tools)]
    if model:
        command += ["--model", model]
    return _run_agent(
        command,
        cwd=project,
        env=env,
        port=port,
        isolate=isolate,
        timeout=timeout,
        extra_env=extra_env,
    )


# --- Codex ------------------------------------------------------------------------------------

# The model name the Codex runs ask for: one of the models in the catalog built into Codex
# 0.171.0 (`codex debug models`) that is not "code mode only" (gpt-5.6 and later offer a
# single JavaScript `exec` tool inside an `additional_tools` input item instead of plain
# tools). For it Codex sends what a user of a current non-code-mode model gets: its shell
# tool as the function tool `exec_command` ({"cmd": "..."}), `apply_patch` as a `custom` tool
# with a Lark grammar, `tool_search` and `web_search` tools, `reasoning.effort` and
# `text.verbosity`. A name outside the catalog works too, with a warning and fallback
# metadata (no custom tool, a `namespace` tool of sub-agent functions instead).
CODEX_MODEL = "gpt-5.5"
# Codex's shell tool for that model ("unified exec"); its arguments are {"cmd": "..."} and
# its output comes back as a `function_call_output` whose text wraps the command's output
# ("Chunk ID: ...\nWall time: ...\nProcess exited with code 0\n...\nOutput:\n<output>").
CODEX_SHELL_TOOL = "exec_command"
# The provider id in config.toml and the variable its `env_key` names (Codex sends its value
# as `Authorization: Bearer`).
CODEX_PROVIDER = "llmproxy"
CODEX_KEY_ENV = "LLM_PROXY_TOKEN"


def codex_config(*, base_url: str, model: str = CODEX_MODEL) -> str:
    """The config.toml of a run: one Responses provider at ``base_url``, nothing else called.

    Every key is checked: the runs pass ``--strict-config``, so a setting this Codex version
    renamed or dropped fails the run instead of being ignored.
    """
    return "\n".join(
        [
            "# Written by tests/support/agents.py for one `codex exec` run.",
            f"model = {_toml_string(model)}",
            f"model_provider = {_toml_string(CODEX_PROVIDER)}",
            "check_for_update_on_startup = false",
            "",
            f"[model_providers.{CODEX_PROVIDER}]",
            'name = "llm-proxy under test"',
            f"base_url = {_toml_string(base_url)}",
            f"env_key = {_toml_string(CODEX_KEY_ENV)}",
            'wire_api = "responses"',
            # Codex retries a failed request 4 times and a broken stream 5 times by default:
            # a test of a failing proxy should fail at once, and the provider should see
            # exactly the calls the agent meant.
            "request_max_retries = 0",
            "stream_max_retries = 0",
            "",
            "[features]",
            # The curated plugin marketplace: synced from github.com / api.github.com and
            # listed from chatgpt.com at every start.
            "plugins = false",
            "",
            "[analytics]",
            "enabled = false",  # ab.chatgpt.com
            "",
            "[feedback]",
            "enabled = false",
            "",
            "[otel]",
            'exporter = "none"',
            "",
        ]
    )


def run_codex(
    *,
    base_url: str,
    api_key: str,
    prompt: str,
    workdir: Path,
    model: str = CODEX_MODEL,
    config_overrides: Sequence[str] = (),
    isolate: bool = True,
    timeout: float = 180.0,
    extra_env: Mapping[str, str] | None = None,
) -> AgentRun:
    """Run ``codex exec PROMPT`` with its model provider at ``base_url`` (``.../v1``).

    Codex posts to ``base_url + "/responses"``, streamed, with ``api_key`` as a bearer token.
    ``workdir/project`` is its working directory (made if missing: put the task's files
    there), ``workdir/home`` its HOME and ``workdir/codex_home`` its CODEX_HOME (config.toml
    from :func:`codex_config`; sessions and logs land there too). It runs shell commands
    without asking and without its own sandbox (``--sandbox danger-full-access``, under
    which `codex exec` never asks for approval): the network namespace is the sandbox, and
    bubblewrap may not work inside one. ``config_overrides`` are extra ``-c key=value``
    flags. Its stdout is the final answer alone; the transcript goes to stderr.
    """
    node = _node()
    port = _loopback_port(base_url)
    cli = ensure_codex()
    project, home = _dirs(workdir)
    codex_home = workdir / "codex_home"
    codex_home.mkdir(parents=True, exist_ok=True)
    (codex_home / "config.toml").write_text(codex_config(base_url=base_url, model=model))
    env = {
        **_base_env(node=node, home=home),
        "CODEX_HOME": str(codex_home),
        CODEX_KEY_ENV: api_key,
    }
    command = [
        node,
        str(cli),
        "exec",
        "--strict-config",
        "--skip-git-repo-check",
        "--sandbox",
        "danger-full-access",
        "--color",
        "never",
    ]
    for override in config_overrides:
        command += ["-c", override]
    command += ["--", prompt]
    return _run_agent(
        command,
        cwd=project,
        env=env,
        port=port,
        isolate=isolate,
        timeout=timeout,
        extra_env=extra_env,
        # Codex (Rust, reqwest) also honours ALL_PROXY.
        proxy_variables=("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY"),
    )


def _toml_string(value: str) -> str:
    # A JSON string is a valid TOML basic string (same escapes).
    return json.dumps(value)


# --- shared -----------------------------------------------------------------------------------


def _node() -> str:
    node = node_binary()
    if node is None:
        raise RuntimeError("node is not installed")
    return node


def _loopback_port(base_url: str) -> int:
    target = urlsplit(base_url)
    if target.hostname not in _LOOPBACK_HOSTS or target.port is None:
        raise ValueError(f"base_url must be http://127.0.0.1:PORT on this machine: {base_url}")
    return target.port


def _dirs(workdir: Path) -> tuple[Path, Path]:
    project, home = workdir / "project", workdir / "home"
    project.mkdir(parents=True, exist_ok=True)
    home.mkdir(parents=True, exist_ok=True)
    return project, home


def _base_env(*, node: str, home: Path) -> dict[str, str]:
    """What every agent gets, built from nothing: no variable of the test process leaks in."""
    env = {
        "PATH": os.pathsep.join(
            dict.fromkeys([str(Path(node).parent), "/usr/local/bin", "/usr/bin", "/bin"])
        ),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "TERM": "dumb",
        "NO_COLOR": "1",
    }
    if os.path.exists("/bin/bash"):
        env["SHELL"] = "/bin/bash"
    return env


def _run_agent(
    command: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    port: int,
    isolate: bool,
    timeout: float,
    extra_env: Mapping[str, str] | None,
    proxy_variables: Sequence[str] = ("HTTPS_PROXY", "HTTP_PROXY"),
) -> AgentRun:
    """Run ``command`` behind the egress trap, in a loopback-only namespace when allowed.

    ``port`` is the loopback port of the server under test (carried into the namespace);
    ``extra_env`` goes on last, so a test can override anything, the trap included.
    """
    with ExitStack() as stack:
        trap = stack.enter_context(_egress_trap())
        trap_url = f"http://127.0.0.1:{trap.port}"
        full_env = {
            **env,
            **dict.fromkeys(proxy_variables, trap_url),
            "NO_PROXY": "127.0.0.1,localhost,::1",
            **(extra_env or {}),
        }
        argv = list(command)
        netns = netns_command() if isolate else None
        if netns is not None:
            sockets = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="agent-ns-")))
            forwards = []
            for forwarded in dict.fromkeys([port, trap.port]):
                path = sockets / f"{forwarded}.sock"
                stack.enter_context(_unix_to_tcp(path, forwarded))
                forwards += ["--forward", f"{forwarded}={path}"]
            argv = [*netns, sys.executable, __file__, "--netns-exec", *forwards, "--", *argv]

        started = time.monotonic()
        try:
            done = subprocess.run(
                argv,
                cwd=cwd,
                env=full_env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
            returncode, stdout, stderr = done.returncode, done.stdout, done.stderr
        except subprocess.TimeoutExpired as expired:
            returncode = -1
            stdout = _text(expired.stdout)
            stderr = _text(expired.stderr) + f"\n[timed out after {timeout}s]"
        return AgentRun(
            returncode=returncode,
            stdout=stdout,
            stderr=stderr,
            seconds=time.monotonic() - started,
            isolated=netns is not None,
            egress=list(trap.requests),
        )


def _text(output: str | bytes | None) -> str:
    if isinstance(output, bytes):
        return output.decode(errors="replace")
    return output or ""


# --- relays: byte pumps between a TCP port and a Unix socket ------------------------------


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        try:
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def _splice(a: socket.socket, b: socket.socket) -> None:
    """Copy both ways until both sides have finished; each half-closes the other on EOF."""
    other = threading.Thread(target=_pump, args=(b, a), daemon=True)
    other.start()
    _pump(a, b)
    other.join()
    a.close()
    b.close()


class _UnixToTcpServer(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True

    def __init__(self, path: Path, port: int) -> None:
        self.port = port
        super().__init__(str(path), _UnixToTcpHandler)


class _UnixToTcpHandler(socketserver.BaseRequestHandler):
    server: _UnixToTcpServer

    def handle(self) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", self.server.port), timeout=10)
        except OSError:
            return
        upstream.settimeout(None)
        _splice(self.request, upstream)


@contextmanager
def _unix_to_tcp(path: Path, port: int) -> Iterator[None]:
    """Outside the namespace: connections on socket file ``path`` go to 127.0.0.1:``port``."""
    server = _UnixToTcpServer(path, port)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()


class _TcpToUnixServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int, path: str) -> None:
        self.path = path
        super().__init__(("127.0.0.1", port), _TcpToUnixHandler)


class _TcpToUnixHandler(socketserver.BaseRequestHandler):
    server: _TcpToUnixServer

    def handle(self) -> None:
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            upstream.connect(self.server.path)
        except OSError:
            upstream.close()
            return
        _splice(self.request, upstream)


# --- the egress trap: a loopback HTTP proxy that refuses everything -----------------------


class _TrapServer(socketserver.ThreadingTCPServer):
    daemon_threads = True

    def __init__(self) -> None:
        self.requests: list[str] = []
        super().__init__(("127.0.0.1", 0), _TrapHandler)

    @property
    def port(self) -> int:
        return int(self.server_address[1])


class _TrapHandler(socketserver.StreamRequestHandler):
    server: _TrapServer

    def handle(self) -> None:
        line = self.rfile.readline(8192).decode("latin-1").strip()
        if line:
            self.server.requests.append(line)
        self.wfile.write(
            b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )


@contextmanager
def _egress_trap() -> Iterator[_TrapServer]:
    server = _TrapServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


# --- the in-namespace half ------------------------------------------------------------------


def _loopback_up() -> None:
    """``ip link set lo up`` without needing iproute2: SIOCGIFFLAGS / SIOCSIFFLAGS on "lo"."""
    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH14s", b"lo", 0, b"")
        flags = struct.unpack("16sH14s", fcntl.ioctl(sock, siocgifflags, request))[1]
        fcntl.ioctl(sock, siocsifflags, struct.pack("16sH14s", b"lo", flags | iff_up, b""))


def _netns_exec(forwards: Sequence[str], command: Sequence[str]) -> int:
    """Bring loopback up, listen on each forwarded port, run ``command``, return its status."""
    _loopback_up()
    for spec in forwards:
        port, _, path = spec.partition("=")
        server = _TcpToUnixServer(int(port), path)
        threading.Thread(target=server.serve_forever, daemon=True).start()
    return subprocess.run(list(command)).returncode


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--netns-exec", action="store_true", required=True)
    parser.add_argument("--forward", action="append", default=[], metavar="PORT=SOCKET")
    parser.add_argument("command", nargs="+")
    args = parser.parse_args(argv)
    return _netns_exec(args.forward, args.command)


if __name__ == "__main__":
    sys.exit(main())
