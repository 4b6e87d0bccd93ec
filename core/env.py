"""Typed readers for environment variables, for settings.py.

Each returns the default when the variable is unset or empty, and raises
ImproperlyConfigured naming the variable when it is set to something malformed: a proxy
that silently falls back to a default cap or key is worse than one that won't boot.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured


def invalid_value(name: str, value: str, expected: str) -> ImproperlyConfigured:
    """The error for ``name=value`` when ``expected`` was wanted (raise it)."""
    return ImproperlyConfigured(f"{name}={value!r} is not valid: expected {expected}.")


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise invalid_value(name, raw, "one of true/false/1/0/yes/no/on/off")


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise invalid_value(name, raw, "an integer") from None
    if minimum is not None and value < minimum:
        raise invalid_value(name, raw, f"an integer >= {minimum}")
    return value


def env_float(name: str, default: float, *, minimum: float | None = None) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise invalid_value(name, raw, "a number") from None
    if minimum is not None and value < minimum:
        raise invalid_value(name, raw, f"a number >= {minimum}")
    return value


def env_list(name: str, default: list[str] | None = None) -> list[str]:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return list(default or [])
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    value = os.environ.get(name, default) or default
    if value not in choices:
        raise invalid_value(name, value, "one of " + ", ".join(choices))
    return value


def load_json_or_file(name: str, raw: str) -> Any:
    """``raw`` as JSON when it starts with ``{``, else the JSON in the file it names."""
    text = raw
    if not raw.lstrip().startswith("{"):
        try:
            text = Path(raw).read_text()
        except OSError as exc:
            raise ImproperlyConfigured(f"{name}: cannot read {raw!r}: {exc.strerror}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ImproperlyConfigured(f"{name} is not valid JSON: {exc}") from None


def database_from_url(name: str, url: str, *, base_dir: Path) -> dict[str, Any]:
    """Turn ``postgres://user:pass@host:port/db?opt=v`` or ``sqlite:///path`` into DATABASES.

    A relative SQLite path is relative to ``base_dir``.
    """
    parts = urlsplit(url)
    options = dict(parse_qsl(parts.query))
    if parts.scheme == "sqlite":
        # sqlite:///relative.db and sqlite:////absolute.db, as in dj-database-url.
        path = unquote(parts.path[1:]) if parts.path.startswith("/") else parts.path
        if not path:
            raise invalid_value(name, url, "sqlite:///path/to/file.sqlite3")
        db_path = Path(path) if Path(path).is_absolute() else base_dir / path
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": db_path,
            "OPTIONS": {
                # WAL lets the proxy write usage while the admin reads; IMMEDIATE avoids
                # "database is locked" on write upgrades under concurrent requests.
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
            },
            "TEST": {"NAME": str(db_path.with_name("test_" + db_path.name))},
        }
    if parts.scheme in ("postgres", "postgresql", "pgsql"):
        if not parts.path or parts.path == "/":
            raise invalid_value(name, url, "postgres://user:password@host:5432/dbname")
        try:
            port = parts.port
        except ValueError:
            raise invalid_value(name, url, "a numeric port") from None
        db: dict[str, Any] = {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": unquote(parts.path[1:]),
            "USER": unquote(parts.username or ""),
            "PASSWORD": unquote(parts.password or ""),
            "HOST": parts.hostname or "",
            "PORT": str(port or ""),
            "CONN_MAX_AGE": env_int("DATABASE_CONN_MAX_AGE", 60, minimum=0),
            "CONN_HEALTH_CHECKS": True,
            "OPTIONS": options,
        }
        return db
    raise invalid_value(name, url, "a sqlite:/// or postgres:// URL")
