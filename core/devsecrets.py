"""Development secrets: made by an explicit step, only read by settings.

``make dev-secrets`` (which ``make run`` runs first) and the test suite call
``ensure_dev_secrets()``, which writes ``var/dev-secrets.json`` (``$PROXY_VAR_DIR`` when set;
ignored by git) once and returns what it holds from then on. Settings never write it: in
development they read it when it is there and otherwise make secrets for their own process
only (``generate_dev_secrets``), which other processes do not share. Production never uses
any of this; its secrets are mandatory settings.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.core.exceptions import ImproperlyConfigured
from jwt.algorithms import OKPAlgorithm

REPO = Path(__file__).resolve().parent.parent
FILENAME = "dev-secrets.json"
KEYS = ("SECRET_KEY", "PROXY_ENCRYPTION_KEY", "JWT_SIGNING_JWK", "ADMIN_PASSWORD")


def default_path() -> Path:
    """Where settings look: ``$PROXY_VAR_DIR/dev-secrets.json``, else the repository's var/."""
    return Path(os.environ.get("PROXY_VAR_DIR", REPO / "var")) / FILENAME


def generate_signing_jwk(*, kid: str) -> dict[str, Any]:
    """A new Ed25519 private key as a JWK carrying its kid and alg."""
    jwk: dict[str, Any] = json.loads(OKPAlgorithm.to_jwk(Ed25519PrivateKey.generate()))
    jwk.update({"kid": kid, "alg": "EdDSA", "use": "sig"})
    return jwk


def generate_dev_secrets() -> dict[str, str]:
    """A fresh set of development secrets, in memory."""
    return {
        "SECRET_KEY": secrets.token_urlsafe(50),
        "PROXY_ENCRYPTION_KEY": Fernet.generate_key().decode(),
        "JWT_SIGNING_JWK": json.dumps(generate_signing_jwk(kid="dev-1")),
        "ADMIN_PASSWORD": secrets.token_urlsafe(12),
    }


def read_dev_secrets(path: Path) -> dict[str, str] | None:
    """The secrets in ``path``, or None when there is no such file. Reads only."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ImproperlyConfigured(f"{path}: cannot read: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = None
    if not isinstance(data, dict) or not all(
        isinstance(data.get(key), str) and data[key] for key in KEYS
    ):
        raise ImproperlyConfigured(
            f"{path} is not a development secrets file (a JSON object with "
            f"{', '.join(KEYS)}): delete it and run `make dev-secrets`."
        )
    return {key: str(value) for key, value in data.items()}


def ensure_dev_secrets(path: Path | str | None = None) -> dict[str, str]:
    """The development secrets in ``path`` (default: ``default_path()``), made first if absent.

    Safe to call from several processes at once: each writes a private temporary file and
    hard-links it into place, so the first one wins and all of them return its secrets.
    """
    target = default_path() if path is None else Path(path)
    existing = read_dev_secrets(target)
    if existing is not None:
        return existing
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    # 0600 from the start: the secrets are never readable by others, not even for a moment.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as file:
            json.dump(generate_dev_secrets(), file, indent=2)
        try:
            os.link(tmp, target)
        except FileExistsError:
            pass  # another process got there first: its secrets are the ones
    finally:
        tmp.unlink()
    written = read_dev_secrets(target)
    if written is None:
        raise ImproperlyConfigured(f"{target} disappeared as soon as it was written.")
    return written


def prepare_development() -> None:
    """What a command run by hand in development needs first: var/ and shared secrets.

    Called by manage.py (not by settings): the first command of a fresh checkout creates the
    directory the SQLite database lives in and the secrets file, so every later process,
    Daphne included, reads the same secrets. Nothing happens in production, or when the
    secrets come from the environment.
    """
    if os.environ.get("PROXY_ENV", "development") != "development":
        return
    if os.environ.get("SECRET_KEY") and os.environ.get("PROXY_ENCRYPTION_KEYS"):
        return
    ensure_dev_secrets()
