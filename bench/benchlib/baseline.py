"""The baseline: the proxy built from an older git revision, checked out in a detached
worktree and served like the current one, so that both are measured in the same rounds."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .common import BENCH_CONFIG, REPO_ROOT, BenchError, git, log
from .processes import Processes, Stores, child_env, redact
from .scenarios import Endpoint


@dataclass
class BaselineRev:
    ref: str  # as given on the command line
    commit: str  # the full hash it names
    title: str  # short hash and subject, for the report
    commits_between: list[str]  # short hash and subject of each commit from it to HEAD


def resolve_baseline(ref: str) -> BaselineRev:
    """The commit REF names, checked before anything is started."""
    found = git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    commit = found.stdout.strip()
    if found.returncode != 0 or not commit:
        raise BenchError(
            f"--baseline-ref {ref}: no such commit in {REPO_ROOT} (see `git log --oneline`)"
        )
    title = git("log", "-1", "--format=%h %s", commit).stdout.strip()
    between = git("log", "--format=%h %s", f"{commit}..HEAD").stdout.splitlines()
    return BaselineRev(ref, commit, title or commit[:7], between)


def remove_worktree(tree: Path) -> None:
    """Best effort: a leftover worktree only clutters `git worktree list`, so warn, not fail."""
    removed = git("worktree", "remove", "--force", str(tree))
    if removed.returncode != 0 and tree.exists():
        log(f"bench: could not remove the worktree {tree}: {removed.stderr.strip()}")
    # Clears the registration too when the directory went away by other means.
    git("worktree", "prune")


# Where the old apply_config names a field or section it does not know, e.g.
# "[tiers.bench]: unknown field(s) foo, bar." or "Unknown top-level section(s): limits."
UNKNOWN_FIELDS = re.compile(r"(\[[^\s:]*(?: #\d+)?): unknown field\(s\) ([\w, -]+)\.")
UNKNOWN_SECTIONS = re.compile(r"Unknown top-level section\(s\): ([\w, -]+)\.")
TABLE_WHERE = re.compile(r"^\[(\w+)\.([^\]]+)\](?:\.(\w+)\[(\d+)\])?$")
ARRAY_WHERE = re.compile(r"^\[\[(\w+)\]\] #(\d+)$")


def _strip_unknown(data: dict[str, Any], error: str) -> list[str]:
    """Drop what the old code's error names from the parsed config; what was dropped."""
    dropped: list[str] = []
    sections = UNKNOWN_SECTIONS.search(error)
    if sections:
        for name in sections.group(1).split(", "):
            if data.pop(name, None) is not None:
                dropped.append(f"[{name}]")
    for where, names in UNKNOWN_FIELDS.findall(error):
        table: Any = None
        if match := TABLE_WHERE.match(where):
            section, slug, array, index = match.groups()
            named = data.get(section)
            table = named.get(slug) if isinstance(named, dict) else None
            if array is not None and isinstance(table, dict):
                items = table.get(array, [])
                table = items[int(index)] if int(index) < len(items) else None
        elif match := ARRAY_WHERE.match(where):
            items = data.get(match.group(1))
            index = int(match.group(2)) - 1
            if isinstance(items, list) and 0 <= index < len(items):
                table = items[index]
        if not isinstance(table, dict):
            continue
        for name in names.split(", "):
            if table.pop(name, None) is not None:
                dropped.append(f"{where}.{name}")
    return dropped


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        # A JSON string is a valid TOML basic string (json.dumps never writes the one escape
        # TOML lacks, "\/").
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        pairs = ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items())
        return "{ " + pairs + " }"
    raise BenchError(f"cannot write {value!r} back as TOML")


def _named_tables(value: Any) -> bool:
    return (
        isinstance(value, dict) and bool(value) and all(isinstance(t, dict) for t in value.values())
    )


def _table_array(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(t, dict) for t in value)


def toml_dumps(data: dict[str, Any]) -> str:
    """Enough TOML for the shape of bench/config.toml: named tables, arrays of tables."""
    # Plain keys first: after the first [header] they would belong to that table.
    lines = [
        f"{_toml_key(k)} = {_toml_value(v)}"
        for k, v in data.items()
        if not _named_tables(v) and not _table_array(v)
    ]
    for name, section in data.items():
        if _named_tables(section):
            headed = [(f"[{_toml_key(name)}.{_toml_key(slug)}]", t) for slug, t in section.items()]
        elif _table_array(section):
            headed = [(f"[[{_toml_key(name)}]]", t) for t in section]
        else:
            continue
        for header, table in headed:
            lines += ["", header]
            lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in table.items()]
    text = "\n".join(lines) + "\n"
    # A writer this small gets checked, not trusted.
    try:
        same = tomllib.loads(text) == data
    except tomllib.TOMLDecodeError:
        same = False
    if not same:
        raise BenchError("the baseline's copy of the bench config did not read back the same")
    return text


def apply_config_compatible(processes: Processes, workdir: Path) -> list[str]:
    """Apply this tree's bench/config.toml with the old code, minus what the old code lacks.

    The old apply_config validates everything before writing, in one transaction, and names
    the first unknown thing it meets, so a refused file changes nothing and the next attempt
    can go on from there. Returns what had to be left out (empty: the file as it is).
    """
    dropped: list[str] = []
    path = BENCH_CONFIG
    data = tomllib.loads(BENCH_CONFIG.read_text())
    for _ in range(20):
        try:
            processes.manage("apply_config", str(path))
            return dropped
        except BenchError as exc:
            newly = _strip_unknown(data, str(exc))
            if not newly:
                raise
            dropped += newly
            path = workdir / "config-for-baseline.toml"
            path.write_text(toml_dumps(data))
            log(f"bench: the baseline's config schema lacks {', '.join(newly)}; left out")
    raise BenchError("the baseline's apply_config kept refusing the bench config")


@dataclass
class Baseline:
    rev: BaselineRev
    workdir: Path
    tree: Path
    processes: Processes
    stores: Stores
    port: int = 0
    token: str = ""
    config_dropped: list[str] = field(default_factory=list)

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint(self.port, self.token)


def baseline_stores(workdir: Path, *, database_url: str | None, redis_url: str | None) -> Stores:
    """The baseline's own stores: never the current proxy's (its own dev secrets, JWT keys,
    token and migrations). By default a temporary SQLite file and no Redis, which suits a
    revision older than the counter store; a newer one should get a scratch database and
    Redis DB of its own (--baseline-database-url / --baseline-redis-url), so that both sides
    are measured on the same kind of stores."""
    database = database_url or f"sqlite:///{workdir / 'baseline.sqlite3'}"
    label = redact(database_url) if database_url else "its own temporary SQLite file"
    counters = f"Redis {redact(redis_url)}" if redis_url else "no Redis (the embedded store)"
    return Stores(database, redis_url or None, label, counters)


def new_baseline(rev: BaselineRev, workdir: Path, mock_port: int, stores: Stores) -> Baseline:
    """Nothing started yet: the caller holds this before start_baseline, so that its finally
    block can stop the baseline and remove its worktree however far start-up got."""
    workdir.mkdir(parents=True, exist_ok=True)
    tree = workdir / "tree"
    env = child_env(workdir, stores, mock_port)
    return Baseline(rev, workdir, tree, Processes(workdir, env, root=tree), stores)


def start_baseline(baseline: Baseline, *, cpus: set[int] | None = None) -> None:
    """Check out the revision in a detached worktree and serve it like the current proxy
    (Daphne, on the cores the current proxy has)."""
    rev, tree, workdir = baseline.rev, baseline.tree, baseline.workdir
    added = git("worktree", "add", "--detach", str(tree), rev.commit, timeout=120)
    if added.returncode != 0:
        raise BenchError(f"git worktree add {rev.ref} failed: {added.stderr.strip()}")
    # Cheap insurance against measuring the current code twice: the venv holds an editable
    # install of this checkout, which must lose to the worktree on sys.path.
    where = subprocess.run(
        [sys.executable, "-c", "import routing; print(routing.__file__)"],
        cwd=tree,
        env=baseline.processes.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    ).stdout.strip()
    if not where or not Path(where).resolve().is_relative_to(tree.resolve()):
        raise BenchError(f"the baseline would import {where or 'nothing'}, not {tree}")
    baseline.processes.manage("migrate", "--noinput")
    baseline.config_dropped = apply_config_compatible(baseline.processes, workdir)
    baseline.token = baseline.processes.manage("issue_token", "bench", "--ttl", "1d").strip()
    baseline.port = baseline.processes.start_proxy(name="baseline", cpus=cpus)
