"""LiteLLM, the gateway the proxy is compared with: installed by the bench from a pinned,
hashed lock into an ignored folder (once; later runs reuse it), started with one worker, a
master key and no database, in front of the same mock.

Its model names are the proxy's (`auto`, `auto-responses`, `claude-bench`), so a scenario's
request is the same bytes to both but for the port and the credential.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass

from .common import HOST, LITELLM_LOCK, LITELLM_VENV, MOCK_KEY, BenchError, log
from .processes import Processes, free_port, wait_until_ready
from .scenarios import ROUTE_MODELS, UPSTREAM_MODELS

MASTER_KEY = "sk-bench-litellm-master"
MARKER = LITELLM_VENV / ".installed"


def _lock_digest() -> str:
    return hashlib.sha256(LITELLM_LOCK.read_bytes()).hexdigest()


def installed() -> bool:
    """The venv holds exactly what the lock names (the marker records the lock's hash)."""
    return MARKER.exists() and MARKER.read_text().strip() == _lock_digest()


@dataclass
class Install:
    """An install running in the background while the rest of the set-up goes on."""

    process: subprocess.Popen[bytes] | None  # None: nothing to do, or could not start
    problem: str | None = None


def start_install(processes: Processes) -> Install:
    """Begin installing LiteLLM unless the venv is already current."""
    if installed():
        return Install(None)
    if not LITELLM_LOCK.exists():
        return Install(None, f"{LITELLM_LOCK} is missing")
    log(f"bench: installing LiteLLM into {LITELLM_VENV} (once; about 1.5 min)")
    shutil.rmtree(LITELLM_VENV, ignore_errors=True)
    python = LITELLM_VENV / "bin" / "python"
    # --no-deps with --require-hashes: exactly the files the lock names, nothing resolved.
    script = " && ".join(
        [
            shlex.join([sys.executable, "-m", "venv", str(LITELLM_VENV)]),
            shlex.join(
                [
                    str(python),
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    "--require-hashes",
                    "--no-deps",
                    "-r",
                    str(LITELLM_LOCK),
                ]
            ),
        ]
    )
    return Install(processes.spawn("litellm-install", ["sh", "-c", script]))


def finish_install(processes: Processes, install: Install, *, timeout: float = 600) -> str | None:
    """Wait for the install; None when LiteLLM is ready to run, else why it is not."""
    if install.problem is not None:
        return install.problem
    if install.process is not None:
        try:
            code = install.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            install.process.kill()
            return f"the install took more than {timeout:.0f} s"
        if code != 0:
            lines = [
                line
                for line in processes.output("litellm-install").splitlines()
                if not line.startswith("WARNING: Location")
            ]
            return f"pip install failed ({code}): " + " / ".join(lines[-3:])
        MARKER.write_text(_lock_digest() + "\n")
    if not (LITELLM_VENV / "bin" / "litellm").exists():
        return f"no litellm executable in {LITELLM_VENV}"
    return None


def version() -> str:
    for meta in (LITELLM_VENV / "lib").glob("python*/site-packages/litellm-*.dist-info"):
        return meta.name.removeprefix("litellm-").removesuffix(".dist-info")
    return "unknown"


def config_yaml(mock_port: int) -> str:
    """Every route of bench/config.toml, as LiteLLM models on the same mock (JSON is YAML)."""
    base = f"http://{HOST}:{mock_port}"
    models = []
    for route, name in ROUTE_MODELS.items():
        provider = "anthropic" if route == "anthropic" else "openai"
        models.append(
            {
                "model_name": name,
                "litellm_params": {
                    "model": f"{provider}/{UPSTREAM_MODELS[route]}",
                    "api_base": base if provider == "anthropic" else f"{base}/v1",
                    "api_key": MOCK_KEY,
                },
            }
        )
    return json.dumps({"model_list": models, "general_settings": {"master_key": MASTER_KEY}})


def start_litellm(
    processes: Processes, mock_port: int, *, cpus: set[int] | None, timeout: float = 120
) -> int:
    """LiteLLM's proxy on a free port, one worker, no database; its port once it is ready."""
    config = processes.workdir / "litellm.yaml"
    config.write_text(config_yaml(mock_port))
    port = free_port()
    env = {
        name: value
        for name, value in os.environ.items()
        # Its own database and cache would come from these; it gets neither.
        if name not in ("DATABASE_URL", "REDIS_URL", "REDIS_HOST")
        and not name.startswith("LITELLM")
    }
    env |= {
        # The packaged model cost map, not a download at start-up.
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_DONT_SHOW_FEEDBACK_BOX": "true",
        "NO_PROXY": "*",
    }
    command = [
        str(LITELLM_VENV / "bin" / "litellm"),
        "--config",
        str(config),
        "--host",
        HOST,
        "--port",
        str(port),
        "--num_workers",
        "1",
    ]
    process = processes.spawn("litellm", command, cpus=cpus, env=env)
    try:
        wait_until_ready(
            processes,
            "litellm",
            process,
            f"http://{HOST}:{port}/health/readiness",
            timeout=timeout,
            need_ok=True,
        )
    except BenchError:
        processes.stop_child("litellm")
        raise
    return port
