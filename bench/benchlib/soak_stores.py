"""The soak's stores: choosing, creating, emptying and dropping them, watching its Redis DB for
flushes by others, and reading the ledger and the counters back in the proxy's environment."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from .common import HOST, BenchError, log, sleep_or_stop
from .processes import Processes, Stores, free_port, redact

TENANT = "soak"
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/llm_proxy_soak"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/13"


# --- choosing, creating and emptying them -----------------------------------------------------


@dataclass
class SoakStores:
    stores: Stores
    created_database: str | None  # a database this run created (and drops at the end)
    redis_url: str | None  # flushed at the start and the end
    flush_at_end: bool = True  # not a private redis-server, which simply stops


def _postgres_admin_url(url: str) -> tuple[str, str]:
    """(URL of the server's maintenance database, the database name) for a postgres URL."""
    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    return urlunsplit(parts._replace(path="/postgres")), name


def _postgres_reachable(url: str) -> bool:
    import psycopg

    admin, _ = _postgres_admin_url(url)
    try:
        with psycopg.connect(admin, connect_timeout=2):
            return True
    except psycopg.Error:
        return False


def _drop_database(url: str, *, create_anew: bool = False) -> None:
    import psycopg
    from psycopg import sql

    admin, name = _postgres_admin_url(url)
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        if create_anew:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def _redis_reachable(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2).ping())
    except redis.RedisError:
        return False


def _flush_redis(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2)
    client.flushdb()
    client.close()


def choose_stores(args: argparse.Namespace, workdir: Path) -> SoakStores:
    """PostgreSQL + Redis when reachable, else SQLite + the embedded store, each on its own."""
    sqlite = f"sqlite:///{workdir / 'soak.sqlite3'}"
    created: str | None = None
    if args.embedded:
        database_url, database_label = sqlite, "SQLite, temporary file (--embedded)"
    else:
        database_url = args.database_url or DEFAULT_DATABASE_URL
        explicit = args.database_url is not None
        if explicit and not database_url.startswith(("postgres://", "postgresql://")):
            database_label = f"{redact(database_url)} (--database-url; kept)"
        elif not _postgres_reachable(database_url):
            if explicit:
                raise BenchError(f"--database-url {redact(database_url)} is not reachable")
            database_url = sqlite
            database_label = "SQLite, temporary file (PostgreSQL at 127.0.0.1:5432 unreachable)"
        elif explicit:
            database_label = f"{redact(database_url)} (--database-url; kept)"
        else:
            _drop_database(database_url, create_anew=True)
            created = database_url
            database_label = f"PostgreSQL {redact(database_url)} (created for this run, dropped)"
    redis_url: str | None = None
    if args.embedded:
        counters_label = "embedded in-process store (--embedded)"
    else:
        wanted = args.redis_url or DEFAULT_REDIS_URL
        if _redis_reachable(wanted):
            redis_url = wanted
            _flush_redis(redis_url)
            counters_label = f"Redis {redact(redis_url)} (FLUSHDB at start and end)"
        elif args.redis_url:
            raise BenchError(f"--redis-url {redact(wanted)} is not reachable")
        else:
            counters_label = "embedded in-process store (Redis at 127.0.0.1:6379 unreachable)"
    return SoakStores(
        Stores(database_url, redis_url, database_label, counters_label), created, redis_url
    )


def start_private_redis(processes: Processes, *, timeout: float = 10) -> str:
    """A redis-server of the run's own on a free loopback port: nobody else can flush it."""
    import redis

    if shutil.which("redis-server") is None:
        raise BenchError("--private-redis needs redis-server on PATH")
    port = free_port()
    process = processes.spawn(
        "redis",
        [
            "redis-server",
            "--bind",
            HOST,
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(processes.workdir),
        ],
    )
    url = f"redis://{HOST}:{port}/0"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise processes.failed("redis", f"exited with status {process.returncode}")
        try:
            if redis.Redis.from_url(url, socket_timeout=1).ping():
                return url
        except redis.RedisError:
            time.sleep(0.05)
    raise processes.failed("redis", f"did not answer within {timeout}s")


def release_stores(stores: SoakStores) -> None:
    if stores.redis_url and stores.flush_at_end:
        try:
            _flush_redis(stores.redis_url)
        except Exception as exc:  # cleanup must not hide the run's own outcome
            log(f"soak: could not flush {redact(stores.redis_url)}: {exc}")
    if stores.created_database:
        try:
            _drop_database(stores.created_database)
        except Exception as exc:
            log(f"soak: could not drop {redact(stores.created_database)}: {exc}")


# --- the soak's Redis DB, watched for flushes by others ---------------------------------------


class RedisWatch:
    """Notices when someone else empties the soak's Redis DB while it runs.

    The Redis server may be shared (the test suite's FLUSHALL empties every DB on it). A
    flush throws away the ledger entries not yet drained, exactly as the README says for an
    unpersisted Redis, so the ledger check would fail for a reason that is not the proxy's.
    A canary key, looked at every second, tells when that happened.
    """

    CANARY = "soak:canary"

    def __init__(self, url: str | None) -> None:
        self.url = url
        self.wipes: list[float] = []  # seconds since the load started
        self.flush_calls_before: dict[str, int] = {}

    @staticmethod
    def _client(url: str) -> Any:
        import redis.asyncio as aredis

        return aredis.Redis.from_url(url, socket_timeout=2)

    async def _flush_calls(self, client: Any) -> dict[str, int]:
        stats = await client.info("commandstats")
        return {
            name: stats.get(f"cmdstat_{name}", {}).get("calls", 0)
            for name in ("flushall", "flushdb")
        }

    async def run(self, started: float, stop: asyncio.Event) -> None:
        if not self.url:
            return
        client = self._client(self.url)
        try:
            self.flush_calls_before = await self._flush_calls(client)
            await client.set(self.CANARY, "1")
            while not stop.is_set():
                await sleep_or_stop(stop, 1.0)
                if not await client.exists(self.CANARY):
                    self.wipes.append(round(time.monotonic() - started, 1))
                    log(f"soak: someone else emptied the soak's Redis DB (t={self.wipes[-1]} s)")
                    await client.set(self.CANARY, "1")
        finally:
            await client.aclose()

    async def finish(self) -> dict[str, Any]:
        if not self.url:
            return {"watched": False, "wipes": [], "flush_calls": {}}
        client = self._client(self.url)
        try:
            after = await self._flush_calls(client)
        finally:
            await client.aclose()
        calls = {k: after[k] - self.flush_calls_before.get(k, 0) for k in after}
        return {"watched": True, "wipes": self.wipes, "flush_calls": calls}


# --- the ledger, read in the proxy's own environment ------------------------------------------

# Run with `manage.py shell -c` under the proxy's environment, so it reads the same database
# and Redis through the project's own modules (usage/counters.py owns every key name). It
# waits for the ledger to drain, then prints every row of the soak tenant and its counters.
LEDGER_SNIPPET = r"""
import json, os, time
from django.conf import settings
from django.utils import timezone
from tenants.models import Tenant
from usage import counters
from usage.models import UsageRecord
from usage.weeks import week_of

params = json.loads(os.environ["SOAK_CHECK"])
tenant = Tenant.objects.get(slug=params["tenant"])
rows = UsageRecord.objects.filter(tenant=tenant)
live = bool(settings.REDIS_URL)
client = counters.sync_client()
keys = counters.keys_for(tenant.pk, "-")
started = time.monotonic()
history = []
while True:
    state = {"t": round(time.monotonic() - started, 1), "rows": rows.count()}
    if live:
        state["pending"] = client.xlen(keys.ledger)
    history.append(state)
    # Drained: nothing left in the stream, and the row count held over the last two polls
    # (a settlement racing the check would show as a change). Without Redis the stream
    # lives in the proxy process, out of sight: the count reaching the admitted requests
    # and holding is all there is to go by.
    steady = len(history) >= 3 and len({h["rows"] for h in history[-3:]}) == 1
    enough = state["pending"] == 0 if live else state["rows"] >= params["expected"]
    if steady and enough or time.monotonic() - started > params["wait"]:
        break
    time.sleep(0.5)

out = {"tenant_id": tenant.pk, "live": live, "drain": history, "rows": [], "weeks": {}}
fields = ("request_id", "status", "http_status", "input_tokens", "output_tokens",
          "usage_reported", "cost_usd", "week", "stream", "model", "attempts", "counted")
for row in rows.values_list(*fields):
    item = dict(zip(fields, row))
    item["cost_nanos"] = int(item.pop("cost_usd") * 1000000000)
    out["rows"].append(item)
weeks = {r["week"] for r in out["rows"]} | {week_of(timezone.now()).id}
if live:
    for week in sorted(weeks):
        raw = client.hgetall(counters.keys_for(tenant.pk, week).week)
        out["weeks"][week] = {k.decode(): v.decode() for k, v in raw.items()}
    out["reservations"] = client.zcard(keys.resv)
    held = client.hgetall(keys.resv_tot)
    out["reserved_total"] = {k.decode(): v.decode() for k, v in held.items()}
    out["inflight"] = client.zcard(keys.inflight)
    out["pending"] = client.xlen(keys.ledger)
    out["dead_letter"] = client.xlen(keys.dead_letter)
print("SOAK-JSON " + json.dumps(out))
"""


def read_ledger(processes: Processes, *, expected: int, wait: float) -> dict[str, Any]:
    env = dict(processes.env)
    env["SOAK_CHECK"] = json.dumps({"tenant": TENANT, "expected": expected, "wait": wait})
    saved, processes.env = processes.env, env
    try:
        output = processes.manage("shell", "-c", LEDGER_SNIPPET, timeout=wait + 120)
    finally:
        processes.env = saved
    for line in output.splitlines():
        if line.startswith("SOAK-JSON "):
            data: dict[str, Any] = json.loads(line.removeprefix("SOAK-JSON "))
            return data
    raise BenchError(f"the ledger check printed no result:\n{output[-2000:]}")


ADMIN_USER = "soak-admin"
THIS_WEEK = re.compile(r'class="field-this_week">([^<]*)<')


def counters_from_admin(processes: Processes, port: int) -> str | None:
    """The tenant's live weekly usage as the admin shows it: the only way to see the embedded
    store's counters, which live inside the proxy process."""
    password = os.urandom(12).hex()
    env = dict(processes.env)
    env.update(
        DJANGO_SUPERUSER_USERNAME=ADMIN_USER,
        DJANGO_SUPERUSER_PASSWORD=password,
        DJANGO_SUPERUSER_EMAIL="soak@example.invalid",
    )
    saved, processes.env = processes.env, env
    try:
        processes.manage("createsuperuser", "--noinput")
    finally:
        processes.env = saved
    base = f"http://{HOST}:{port}"
    with httpx.Client(base_url=base, timeout=10, trust_env=False) as client:
        page = client.get("/admin/login/").text
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
        if token is None:
            return None
        client.post(
            "/admin/login/?next=/admin/",
            data={
                "csrfmiddlewaretoken": token.group(1),
                "username": ADMIN_USER,
                "password": password,
                "next": "/admin/",
            },
            headers={"Referer": f"{base}/admin/login/"},
        )
        page = client.get("/admin/tenants/tenant/", params={"q": TENANT}).text
    found = THIS_WEEK.search(page)
    return found.group(1).strip() if found else None
