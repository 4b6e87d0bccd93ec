"""Shared fixtures: the mock provider, a live Daphne proxy, and the alice/bob world.

The proxy under test is a real Daphne process on the test database (PostgreSQL + Redis under
`make test`, SQLite + the embedded store in the zero-setup pass), driven over HTTP by the
official SDKs. The only fake is the upstream provider: the project's own mock provider.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import httpx
import jwt
import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection, connections
from django.test import TransactionTestCase

from core.devsecrets import ensure_dev_secrets
from proxy_site.jwtkeys import generate_signing_jwk, public_jwk
from routing.models import Provider, ProviderKey
from routing.services import provider_create, provider_key_create, route_create
from tenants.models import Tenant, Tier
from tenants.services import tenant_create, tier_create
from tests.support.mockserver import MockServer
from usage import counters
from usage.models import UsageRecord

REPO = Path(__file__).resolve().parent.parent
# Each test session's processes report their metrics into a directory of its own (not the
# development var/prometheus, which would keep every run's samples); inherited by every live
# server the session starts.
os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="llm-proxy-metrics-")
T = TypeVar("T")

# Secrets: every process the suite starts (Daphne, manage.py) must hold this process's, since
# provider keys encrypted here are decrypted there. pytest-django loaded settings before this
# file, so their values go down through the environment. The file is made as `make run` makes
# it (which also makes var/, where the SQLite test database goes).
ensure_dev_secrets()
os.environ.update(
    SECRET_KEY=settings.SECRET_KEY,
    PROXY_ENCRYPTION_KEYS=",".join(settings.PROXY_ENCRYPTION_KEYS),
    JWT_SIGNING_JWK=settings.JWT_SIGNING_JWK,
)

# How soon a change made by a test reaches the live server's cached tenant contexts: through
# the generation value in the shared Redis (PROXY_CONTEXT_POLL) when there is one, with a
# long TTL so that tests prove it; on the embedded store (one per process) only the TTL can.
SERVER_CONTEXT_TTL = 60.0 if settings.REDIS_URL else 1.0
CHANGE_VISIBLE_WITHIN = (
    settings.PROXY_CONTEXT_POLL + 0.5 if settings.REDIS_URL else SERVER_CONTEXT_TTL + 0.5
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def eventually(check: Callable[[], T], *, timeout: float = CHANGE_VISIBLE_WITHIN + 1) -> T:
    """Retry ``check`` until it stops raising AssertionError (caches expiring, rows landing)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def ledger_rows(tenant: Tenant, count: int) -> list[UsageRecord]:
    """The tenant's ledger rows, once the live server has drained exactly ``count`` of them."""

    def landed() -> list[UsageRecord]:
        rows = list(UsageRecord.objects.filter(tenant=tenant).order_by("created_at"))
        assert len(rows) == count
        return rows

    return eventually(landed, timeout=10)


# --- JWT keys the live server trusts -------------------------------------------------------


@dataclass(frozen=True)
class JwtKeys:
    primary: dict[str, Any]  # EdDSA private JWK, kid "primary"
    rotated: dict[str, Any]  # a second EdDSA key, kid "rotated" (key rotation)
    hmac: dict[str, Any]  # an HS256 key, kid "hmac" (HS256 allowed by config)
    stranger: dict[str, Any]  # a key the server does NOT trust, kid "primary" (forgery)

    @property
    def jwks(self) -> dict[str, Any]:
        return {"keys": [public_jwk(self.primary), public_jwk(self.rotated), self.hmac]}

    @property
    def served(self) -> dict[str, Any]:
        """What a live server trusts: these keys, and the public half of the key the proxy
        itself signs with (JWT_SIGNING_JWK, the dev secret every process here holds), so
        that a token the staff console issues works against it."""
        signing = settings.JWT_SIGNING_JWK
        own = [public_jwk(json.loads(signing))] if signing else []
        return {"keys": [*self.jwks["keys"], *own]}

    def sign(
        self, claims: dict[str, Any], *, key: dict[str, Any] | None = None, **headers: Any
    ) -> str:
        jwk = key or self.primary
        algorithm = headers.pop("alg", jwk["alg"])
        return jwt.encode(
            claims,
            jwt.PyJWK(jwk, algorithm=jwk["alg"]).key,
            algorithm=algorithm,
            headers={"kid": jwk["kid"], **headers},
        )


@pytest.fixture(scope="session")
def jwt_keys() -> JwtKeys:
    return JwtKeys(
        primary=generate_signing_jwk(kid="primary"),
        rotated=generate_signing_jwk(kid="rotated"),
        hmac={
            "kty": "oct",
            "kid": "hmac",
            "alg": "HS256",
            "k": jwt.utils.base64url_encode(os.urandom(32)).decode(),
        },
        stranger=generate_signing_jwk(kid="primary"),
    )


def claims_for(tenant: Tenant, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "sub": tenant.slug,
        "aud": settings.JWT_AUDIENCE,
        "iss": settings.JWT_ISSUER,
        "iat": now,
        "exp": now + 3600,
        "jti": uuid.uuid4().hex,
        "ver": tenant.token_version,
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix: None) -> None:
    """SQLite: drop a WAL left by an earlier run's server, which would corrupt the new DB.
    Both: no persistent connections in this process, so that the ones async code opens in
    worker threads are closed after each call and the test database can be dropped."""
    db = settings.DATABASES["default"]
    db["CONN_MAX_AGE"] = 0
    if db["ENGINE"].endswith("sqlite3"):
        name = Path(db["TEST"]["NAME"])
        for leftover in (
            name,
            name.with_name(name.name + "-wal"),
            name.with_name(name.name + "-shm"),
        ):
            leftover.unlink(missing_ok=True)


@pytest.fixture(scope="session", autouse=True)
def _close_executor_connections(django_db_setup: None, django_db_blocker: Any) -> Iterator[None]:
    """Close what async tests opened in asgiref's sync thread, so the test database can go."""
    yield
    with django_db_blocker.unblock():
        asyncio.run(sync_to_async(connections.close_all)())


# --- the mock provider and the live proxy --------------------------------------------------


@pytest.fixture(scope="session")
def mock_server() -> Iterator[MockServer]:
    server = MockServer.start(chunks=8)
    yield server
    server.stop()


@pytest.fixture
def mock(mock_server: MockServer) -> MockServer:
    mock_server.reset()
    return mock_server


def _database_url() -> str:
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{Path(db['NAME']).resolve()}"
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


@dataclass
class LiveProxy:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def openai_base_url(self) -> str:
        return f"{self.url}/v1"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


# How each ASGI server the app is tested on serves it (Daphne is the default the design
# names; tests/test_servers.py runs the others).
SERVER_COMMANDS = {
    "daphne": ("-m", "daphne", "-b", "127.0.0.1", "-p", "{port}", "proxy_site.asgi:application"),
    "uvicorn": (
        *("-m", "uvicorn", "--host", "127.0.0.1", "--port", "{port}"),
        *("--loop", "uvloop", "--http", "httptools", "proxy_site.asgi:application"),
    ),
    "granian": (
        *("-m", "granian", "--interface", "asgi", "--host", "127.0.0.1", "--port", "{port}"),
        *("--loop", "uvloop", "--workers", "1", "proxy_site.asgi:application"),
    ),
}


def start_proxy(
    *,
    tmp_dir: Path,
    jwt_keys: JwtKeys,
    extra_env: dict[str, str] | None = None,
    server: str = "daphne",
) -> LiveProxy:
    port = free_port()
    log_path = tmp_dir / f"{server}-{port}.log"
    env = {
        **os.environ,
        "DATABASE_URL": _database_url(),
        "JWT_JWKS": json.dumps(jwt_keys.served),
        "JWT_ALGORITHMS": "EdDSA,HS256",
        "PROXY_CONTEXT_TTL": str(SERVER_CONTEXT_TTL),
        "LOG_LEVEL": "DEBUG",
        # Keep-alives start after a second, so tests of slow providers stay short; the
        # ledger lands in the database within a fifth of a second.
        "PROXY_STREAM_KEEPALIVE": "1",
        "PROXY_LEDGER_DRAIN_INTERVAL": "0.2",
        **(extra_env or {}),
    }
    log = log_path.open("wb")
    process = subprocess.Popen(
        [sys.executable, *(arg.format(port=port) for arg in SERVER_COMMANDS[server])],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{server} exited early:\n{log_path.read_text()}")
        try:
            httpx.get(f"{url}/v1/models", timeout=1)
            break
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"{server} did not start:\n{log_path.read_text()}") from None
            time.sleep(0.1)
    # As a load balancer would: no traffic before the process has warmed up (whatever else
    # /readyz says, which some tests make fail on purpose).
    while "warm-up" in httpx.get(f"{url}/readyz", timeout=5).json().get("checks", {}):
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"{server} did not warm up:\n{log_path.read_text()}")
        time.sleep(0.05)
    return LiveProxy(url=url, process=process, log_path=log_path)


def stop_proxy(proxy: LiveProxy) -> None:
    proxy.process.terminate()
    try:
        proxy.process.wait(10)
    except subprocess.TimeoutExpired:
        proxy.process.kill()


@pytest.fixture(scope="session")
def live_proxy(
    django_db_setup: None,
    django_db_blocker: Any,
    tmp_path_factory: pytest.TempPathFactory,
    jwt_keys: JwtKeys,
) -> Iterator[LiveProxy]:
    proxy = start_proxy(tmp_dir=tmp_path_factory.mktemp("proxy"), jwt_keys=jwt_keys)
    yield proxy
    stop_proxy(proxy)


@pytest.fixture(scope="session")
def second_proxy(
    live_proxy: LiveProxy, tmp_path_factory: pytest.TempPathFactory, jwt_keys: JwtKeys
) -> Iterator[LiveProxy]:
    """Another Daphne process on the same database and Redis (a second host, in effect)."""
    proxy = start_proxy(tmp_dir=tmp_path_factory.mktemp("proxy-b"), jwt_keys=jwt_keys)
    yield proxy
    stop_proxy(proxy)


@pytest.fixture
def redis_flushed() -> None:
    """An empty counter store (the test database is flushed between tests too)."""
    counters.sync_client().flushdb()


def _quiet(timeout: float = 3.0) -> None:
    """Wait until the live servers have moved every settled request into the database."""
    if not settings.REDIS_URL:
        return
    client = counters.sync_client()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(client.xlen(key) for key in client.scan_iter(match=counters.LEDGER_PATTERN)):
            return
        time.sleep(0.05)


@pytest.fixture
def proxy(
    live_proxy: LiveProxy, transactional_db: None, redis_flushed: None
) -> Iterator[LiveProxy]:
    """The live proxy, with the database visible to it (committed, flushed after the test)."""
    yield live_proxy
    # The server keeps writing the ledger for a moment after a test's last request; the
    # flush that follows must not race it (PostgreSQL would find a deadlock).
    _quiet()


def _flush_with_retry(original: Callable[..., None]) -> Callable[..., None]:
    def teardown(self: Any) -> None:
        for attempt in range(3):
            try:
                original(self)
                return
            except Exception as exc:  # CommandError wrapping a deadlock, or the deadlock
                raced = "deadlock" in str(exc) or "couldn't be flushed" in str(exc)
                if not raced or attempt == 2:
                    raise
                time.sleep(0.2)

    return teardown


# The live server is another process writing to the test database; a flush that meets one
# of its writes can deadlock on PostgreSQL. Retrying is enough: the server is idle by then.
# Django's own hook, private and untyped, hence the getattr/setattr.
setattr(  # noqa: B010
    TransactionTestCase,
    "_fixture_teardown",
    _flush_with_retry(getattr(TransactionTestCase, "_fixture_teardown")),  # noqa: B009
)


# --- the world: tiers, providers, keys, routes, and tenants alice and bob ------------------


@dataclass
class World:
    auto: Tier
    max: Tier
    moonshot: Provider
    anthropic: Provider
    moonshot_key: ProviderKey
    anthropic_key: ProviderKey
    secrets: dict[str, str]  # label -> plaintext: what must never leak
    alice: Tenant  # tier auto
    bob: Tenant  # tier max
    jwt_keys: JwtKeys

    def token(self, tenant: Tenant, **overrides: Any) -> str:
        return self.jwt_keys.sign(claims_for(tenant, **overrides))


def unique(prefix: str) -> str:
    # Live servers cache contexts by slug for a moment; fresh slugs keep tests independent.
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def world(proxy: LiveProxy, mock: MockServer, jwt_keys: JwtKeys) -> World:
    auto = tier_create(slug=unique("auto"), name="Auto", requests_per_minute=10_000)
    max_tier = tier_create(slug=unique("max"), name="Max", requests_per_minute=10_000)
    moonshot = provider_create(
        slug=unique("moonshot"), kind="openai", base_url=mock.openai_base_url
    )
    anthropic = provider_create(
        slug=unique("anthropic"), kind="anthropic", base_url=mock.anthropic_base_url
    )
    secrets = {
        "moonshot": f"sk-moonshot-{uuid.uuid4().hex}",
        "anthropic": f"sk-ant-{uuid.uuid4().hex}",
    }
    moonshot_key = provider_key_create(
        provider=moonshot, label="pool-1", secret=secrets["moonshot"]
    )
    anthropic_key = provider_key_create(
        provider=anthropic, label="pool-1", secret=secrets["anthropic"]
    )
    route_create(
        tier=auto,
        model="auto",
        provider=moonshot,
        upstream_model="kimi-k2",
        input_usd_per_mtok=Decimal("0.60"),
        output_usd_per_mtok=Decimal("2.50"),
        cache_read_usd_per_mtok=Decimal("0.15"),
    )
    route_create(
        tier=auto,
        model="claude-haiku",
        provider=anthropic,
        upstream_model="claude-3-5-haiku",
        input_usd_per_mtok=Decimal("0.60"),
        output_usd_per_mtok=Decimal("2.50"),
    )
    route_create(
        tier=max_tier,
        model="claude-sonnet-4-5",
        provider=anthropic,
        upstream_model="claude-sonnet-4-5-20250929",
        input_usd_per_mtok=Decimal("3"),
        output_usd_per_mtok=Decimal("15"),
        cache_read_usd_per_mtok=Decimal("0.30"),
        cache_write_usd_per_mtok=Decimal("3.75"),
    )
    alice = tenant_create(slug=unique("alice"), name="Alice", tier=auto)
    bob = tenant_create(slug=unique("bob"), name="Bob", tier=max_tier)
    return World(
        auto=auto,
        max=max_tier,
        moonshot=moonshot,
        anthropic=anthropic,
        moonshot_key=moonshot_key,
        anthropic_key=anthropic_key,
        secrets=secrets,
        alice=alice,
        bob=bob,
        jwt_keys=jwt_keys,
    )
