"""Settings come from the environment, and a bad value stops the process with a clear message."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from core.devsecrets import ensure_dev_secrets, read_dev_secrets
from core.env import (
    database_from_url,
    env_bool,
    env_choice,
    env_float,
    env_int,
    load_json_or_file,
)

REPO = Path(__file__).resolve().parent.parent
# What the suite's own environment carries that a bare start must not see (conftest hands
# this process's secrets down to the servers it starts).
SUITE_ENV = ("DATABASE_URL", "REDIS_URL", "SECRET_KEY", "PROXY_ENCRYPTION_KEYS", "JWT_SIGNING_JWK")


def bare_env(**env: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if k not in SUITE_ENV}
    return {**base, **env}


def start(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=REPO,
        env=bare_env(PROXY_VAR_DIR=str(tmp_path), **env),
        capture_output=True,
        text=True,
        timeout=60,
    )


def settings_in_new_process(cwd: Path, **env: str) -> dict[str, object]:
    """Some settings as a fresh process sees them, with the ASGI application built too."""
    code = (
        "import json\n"
        "from proxy_site.asgi import application\n"
        "from django.conf import settings as s\n"
        "print(json.dumps({name: getattr(s, name) for name in ("
        "'SECRET_KEY', 'PROXY_ENCRYPTION_KEYS', 'JWT_SIGNING_JWK', 'DEV_SECRETS', "
        "'PROXY_MAX_BODY_BYTES', 'DATA_UPLOAD_MAX_MEMORY_SIZE')}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        env=bare_env(PYTHONPATH=str(REPO), DJANGO_SETTINGS_MODULE="proxy_site.settings", **env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # nothing logged or warned at import
    loaded: dict[str, object] = json.loads(result.stdout)
    return loaded


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DEBUG": "maybe"}, "DEBUG='maybe' is not valid"),
        (
            {"PROXY_MAX_BODY_BYTES": "4MB"},
            "PROXY_MAX_BODY_BYTES='4MB' is not valid: expected an integer",
        ),
        ({"PROXY_CONTEXT_TTL": "-1"}, "PROXY_CONTEXT_TTL='-1' is not valid"),
        ({"DATABASE_URL": "mysql://db/x"}, "DATABASE_URL='mysql://db/x' is not valid"),
        ({"REDIS_URL": "http://cache"}, "REDIS_URL='http://cache' is not valid"),
        ({"REDIS_CLUSTER": "yes"}, "REDIS_CLUSTER is on: REDIS_URL must name"),
        (
            {"REDIS_CLUSTER": "yes", "REDIS_URL": "redis://a:7000,redis://b:7000/2"},
            "REDIS_URL='redis://b:7000/2' is not valid: expected no database number",
        ),
        (
            {"CHANNEL_LAYER_REDIS_URL": "http://feed"},
            "CHANNEL_LAYER_REDIS_URL='http://feed' is not valid",
        ),
        (
            {"PROXY_ENCRYPTION_KEYS": "not-a-key"},
            "PROXY_ENCRYPTION_KEYS entry #1 is not a valid Fernet key",
        ),
        ({"JWT_ALGORITHMS": "none"}, "JWT_ALGORITHMS='none' is not valid"),
        ({"JWT_JWKS": '{"keys": []}'}, "JWT_JWKS: expected"),
        ({"JWT_JWKS": "/nonexistent/jwks.json"}, "JWT_JWKS: cannot read"),
        ({"PROXY_ENV": "staging"}, "PROXY_ENV='staging' is not valid"),
    ],
)
def test_it_refuses_to_start_on_a_malformed_value(
    tmp_path: Path, env: dict[str, str], message: str
) -> None:
    result = start(tmp_path, **env)
    assert result.returncode != 0
    assert message in result.stderr


def test_it_requires_every_secret_in_production(tmp_path: Path) -> None:
    result = start(tmp_path, PROXY_ENV="production")
    assert result.returncode != 0
    assert "must be set when PROXY_ENV=production" in result.stderr
    assert not (tmp_path / "dev-secrets.json").exists()  # production never generates secrets


def test_it_refuses_debug_in_production(tmp_path: Path) -> None:
    result = start(tmp_path, PROXY_ENV="production", DEBUG="true", SECRET_KEY="x" * 50)
    assert result.returncode != 0
    assert "DEBUG must be off" in result.stderr


def test_it_starts_with_no_environment_at_all(tmp_path: Path) -> None:
    result = start(tmp_path)
    assert result.returncode == 0, result.stderr
    # manage.py, the entry point (not settings), made the shared development secrets on first
    # need, so later processes read the same ones; nothing else (no static/).
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dev-secrets.json"]


def test_it_leaves_production_secrets_to_the_environment(tmp_path: Path) -> None:
    result = start(tmp_path, PROXY_ENV="production")
    assert result.returncode != 0  # production secrets are mandatory
    assert list(tmp_path.iterdir()) == []  # and never generated


def test_it_writes_no_file_when_settings_are_imported(tmp_path: Path) -> None:
    workdir, var_dir = tmp_path / "cwd", tmp_path / "var"
    workdir.mkdir()
    var_dir.mkdir()
    loaded = settings_in_new_process(workdir, PROXY_VAR_DIR=str(var_dir))
    assert list(workdir.iterdir()) == []
    assert list(var_dir.iterdir()) == []
    # Without the file the process still has usable secrets, its own.
    assert isinstance(loaded["SECRET_KEY"], str) and len(loaded["SECRET_KEY"]) >= 50
    assert isinstance(loaded["JWT_SIGNING_JWK"], str) and loaded["JWT_SIGNING_JWK"]


def test_it_makes_the_dev_secrets_file_once(tmp_path: Path) -> None:
    path = tmp_path / "var" / "dev-secrets.json"
    first = ensure_dev_secrets(path)
    written = path.read_bytes()
    assert set(first) == {"SECRET_KEY", "PROXY_ENCRYPTION_KEY", "JWT_SIGNING_JWK", "ADMIN_PASSWORD"}
    assert json.loads(first["JWT_SIGNING_JWK"])["alg"] == "EdDSA"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ensure_dev_secrets(path) == first
    assert path.read_bytes() == written
    assert sorted(p.name for p in path.parent.iterdir()) == ["dev-secrets.json"]  # no tmp left


def test_it_puts_the_dev_secrets_where_settings_read_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROXY_VAR_DIR", str(tmp_path))
    made = ensure_dev_secrets()
    assert (tmp_path / "dev-secrets.json").exists()
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    loaded = settings_in_new_process(workdir, PROXY_VAR_DIR=str(tmp_path))
    assert loaded["SECRET_KEY"] == made["SECRET_KEY"]
    assert loaded["PROXY_ENCRYPTION_KEYS"] == [made["PROXY_ENCRYPTION_KEY"]]
    assert loaded["JWT_SIGNING_JWK"] == made["JWT_SIGNING_JWK"]
    assert loaded["DEV_SECRETS"] == made


def test_it_refuses_a_damaged_dev_secrets_file(tmp_path: Path) -> None:
    path = tmp_path / "dev-secrets.json"
    path.write_text('{"SECRET_KEY": "only this"}')
    with pytest.raises(ImproperlyConfigured, match=r"dev-secrets\.json is not a development"):
        read_dev_secrets(path)
    result = start(tmp_path)
    assert result.returncode != 0
    assert "make dev-secrets" in result.stderr


def test_it_lets_django_read_every_body_the_proxy_accepts() -> None:
    assert settings.DATA_UPLOAD_MAX_MEMORY_SIZE is not None
    assert settings.DATA_UPLOAD_MAX_MEMORY_SIZE >= settings.PROXY_MAX_BODY_BYTES


@pytest.mark.parametrize(
    ("proxy_limit", "django_limit"),
    [
        (16 * 1024 * 1024, 16 * 1024 * 1024),  # a bigger proxy limit raises Django's with it
        (2048, 2_621_440),  # a small one leaves the admin Django's default
    ],
)
def test_it_keeps_the_django_body_cap_at_or_above_the_proxy_limit(
    tmp_path: Path, proxy_limit: int, django_limit: int
) -> None:
    loaded = settings_in_new_process(
        tmp_path, PROXY_VAR_DIR=str(tmp_path), PROXY_MAX_BODY_BYTES=str(proxy_limit)
    )
    assert loaded["PROXY_MAX_BODY_BYTES"] == proxy_limit
    assert loaded["DATA_UPLOAD_MAX_MEMORY_SIZE"] == django_limit


@pytest.mark.parametrize(
    ("name", "value", "read", "message"),
    [
        ("X_FLAG", "maybe", lambda: env_bool("X_FLAG"), "X_FLAG='maybe' is not valid"),
        ("X_COUNT", "4MB", lambda: env_int("X_COUNT", 1), "X_COUNT='4MB' is not valid"),
        (
            "X_COUNT",
            "0",
            lambda: env_int("X_COUNT", 1, minimum=1),
            "X_COUNT='0' is not valid: expected an integer >= 1",
        ),
        ("X_SECONDS", "soon", lambda: env_float("X_SECONDS", 1.0), "X_SECONDS='soon'"),
        (
            "X_SECONDS",
            "-1",
            lambda: env_float("X_SECONDS", 1.0, minimum=0.0),
            "X_SECONDS='-1' is not valid",
        ),
        (
            "X_MODE",
            "fast",
            lambda: env_choice("X_MODE", "slow", ("slow", "safe")),
            "X_MODE='fast' is not valid: expected one of slow, safe",
        ),
        (
            "X_DB",
            "",
            lambda: database_from_url("X_DB", "mysql://db/x", base_dir=REPO),
            "X_DB='mysql://db/x' is not valid",
        ),
        (
            "X_DB",
            "",
            lambda: database_from_url("X_DB", "postgres://h:port/db", base_dir=REPO),
            "X_DB='postgres://h:port/db' is not valid: expected a numeric port",
        ),
        ("X_JSON", "", lambda: load_json_or_file("X_JSON", "{nope"), "X_JSON is not valid JSON"),
        (
            "X_JSON",
            "",
            lambda: load_json_or_file("X_JSON", "/nonexistent/x.json"),
            "X_JSON: cannot read '/nonexistent/x.json'",
        ),
    ],
)
def test_it_names_the_variable_when_a_value_is_malformed(
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    value: str,
    read: Callable[[], object],
    message: str,
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ImproperlyConfigured) as caught:
        read()
    assert message in str(caught.value)


def test_it_reads_well_formed_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("X_FLAG", "Yes")
    monkeypatch.setenv("X_COUNT", "7")
    monkeypatch.setenv("X_EMPTY", "")
    assert env_bool("X_FLAG") is True
    assert env_int("X_COUNT", 1, minimum=1) == 7
    assert env_int("X_EMPTY", 3) == 3  # empty reads as unset
    db = database_from_url("X_DB", "postgres://u:p%40ss@h:6543/llm", base_dir=REPO)
    assert (db["USER"], db["PASSWORD"], db["HOST"], db["PORT"], db["NAME"]) == (
        "u",
        "p@ss",
        "h",
        "6543",
        "llm",
    )
    assert database_from_url("X_DB", "sqlite:///var/x.sqlite3", base_dir=REPO)["NAME"] == (
        REPO / "var" / "x.sqlite3"
    )
