"""Settings come from the environment, and a bad value stops the process with a clear message."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def start(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    return subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=REPO,
        env={**base, "PROXY_VAR_DIR": str(tmp_path), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


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
    secrets = (tmp_path / "dev-secrets.json").read_text()
    assert "PROXY_ENCRYPTION_KEY" in secrets
    assert oct((tmp_path / "dev-secrets.json").stat().st_mode)[-3:] == "600"
