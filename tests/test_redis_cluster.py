"""The proxy on a real Redis Cluster: three masters started here, two Daphne processes on them.

The module starts its own cluster (``redis-server --cluster-enabled yes`` on free ports,
joined by ``redis-cli --cluster create``) and never touches the shared Redis. The live
tests point two proxy processes at it (REDIS_CLUSTER, two seed nodes in REDIS_URL) on the
suite's database; this process reaches the same cluster under ``override_settings``, so the
services the tests call announce their changes there, as an admin process would.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx
import pytest
import redis
import redis.asyncio
from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth.models import User
from django.test import override_settings
from django.utils import timezone

from core import redis as core_redis
from routing.generation import CONFIG_GENERATION_KEY
from routing.health import KEY_HEALTH_KEY, key_health_get
from routing.models import Provider, ProviderKey
from routing.services import provider_create, provider_key_create, route_create
from tenants.models import Tenant
from tenants.services import tenant_create, tenant_suspend, tier_create
from tests.conftest import (
    JwtKeys,
    LiveProxy,
    claims_for,
    eventually,
    free_port,
    ledger_rows,
    start_proxy,
    stop_proxy,
    unique,
)
from tests.support.mockserver import MockServer
from tests.test_leases import PROMPT, bill, lease_run_out
from tests.test_limits import context_of, make_tenant
from usage import alerts, counters, limits
from usage.ledger import drain_all, ledger_tenants, sweep_all
from usage.metrics import abacklog
from usage.models import AlertEvent, UsageRecord
from usage.services import counters_rebuild
from usage.weeks import week_of

pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None or shutil.which("redis-cli") is None,
    reason="needs redis-server and redis-cli on PATH to start a Redis Cluster",
)

NODES = 3


# --- the cluster -----------------------------------------------------------------------------


@dataclass
class Cluster:
    ports: list[int]

    @property
    def url(self) -> str:
        """REDIS_URL for it: two seed nodes, so the comma list is what the proxies parse."""
        return ",".join(f"redis://127.0.0.1:{port}" for port in self.ports[:2])

    def node(self, port: int) -> redis.Redis:
        """One node as a plain client: it answers for its own slots only."""
        return redis.Redis(port=port, socket_timeout=2)

    def client(self) -> redis.RedisCluster:
        return redis.RedisCluster(host="127.0.0.1", port=self.ports[0], socket_timeout=2)

    def owner(self, key: str) -> int:
        """The port of the master that serves ``key``'s slot: the one node that answers for
        it (each other redirects with MOVED)."""
        owners = []
        for port in self.ports:
            try:
                self.node(port).exists(key)
            except redis.exceptions.MovedError:
                continue
            owners.append(port)
        (port,) = owners
        return port


def _cluster_port(taken: set[int]) -> int:
    """A free port whose cluster bus port (port + 10000) is free too."""
    while True:
        port = free_port()
        if port in taken or port + 10000 > 65535:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


def _wait(check: Any, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except redis.RedisError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"the Redis Cluster: {what}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("redis-cluster")
    ports: list[int] = []
    for _ in range(NODES):
        ports.append(_cluster_port(set(ports)))
    processes = []
    try:
        for port in ports:
            log = (root / f"redis-{port}.log").open("wb")
            processes.append(
                subprocess.Popen(
                    [
                        "redis-server",
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        str(root / f"nodes-{port}.conf"),
                        "--port",
                        str(port),
                        "--bind",
                        "127.0.0.1",
                        "--dir",
                        str(root),
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                        "--daemonize",
                        "no",
                    ],
                    cwd=root,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        found = Cluster(ports)
        for port in ports:
            _wait(found.node(port).ping, f"node {port} did not start")
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *(f"127.0.0.1:{port}" for port in ports),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        for port in ports:
            _wait(
                # CLUSTER INFO's cluster_state:ok, as redis-py parses it.
                lambda port=port: found.node(port).cluster("info")["cluster_state"] == "ok",
                f"node {port} never reached cluster_state:ok",
            )
        yield found
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture
def on_cluster(cluster: Cluster) -> Iterator[Cluster]:
    """This process on the cluster (an empty one) for the test's duration."""
    with override_settings(REDIS_URL=cluster.url, REDIS_CLUSTER=True):
        core_redis.sync_client().flushdb()  # every master's
        yield cluster


def tenants_on_every_master(cluster: Cluster, make: Any) -> list[Tenant]:
    """Tenants made by ``make()`` until their keys sit on every master, one tenant each."""
    by_owner: dict[int, Tenant] = {}
    for _ in range(60):
        tenant = make()
        by_owner.setdefault(cluster.owner(counters.tenant_prefix(tenant.pk)), tenant)
        if len(by_owner) == NODES:
            return [by_owner[port] for port in sorted(by_owner)]
    raise AssertionError(f"60 tenants, and their keys are on {len(by_owner)} masters only")


# --- no cluster needed: where the keys go ----------------------------------------------------


@pytest.mark.core
@pytest.mark.parametrize("tenant_id", [1, 7, 12345])
def test_it_keeps_every_script_of_a_tenant_in_the_slot_of_its_hash_tag(tenant_id: int) -> None:
    slot = core_redis.key_slot(counters.tenant_prefix(tenant_id))
    week = "2026-11-23"
    keys = counters.keys_for(tenant_id, week)
    calls = {
        "admit": counters.admit_call(
            tenant_id=tenant_id,
            week_id=week,
            now_ms=0,
            request_id="r",
            tokens=1,
            nanos=1,
            cap_tokens=-1,
            cap_nanos=-1,
            requests_per_minute=0,
            max_concurrent=0,
            lease_ms=1,
            window_ms=1,
            pending="",
        )["keys"],
        "settle": counters.settle_call(
            tenant_id=tenant_id,
            week_id=week,
            request_id="r",
            tokens=1,
            nanos=1,
            record_json="",
            now_ms=0,
        )["keys"],
        "heartbeat": counters.heartbeat_call(
            tenant_id=tenant_id, now_ms=0, lease_ms=1, renewals=[("r", "")]
        )["keys"],
        "sweep": counters.sweep_call(tenant_id=tenant_id, now_ms=0)["keys"],
        # As usage/ledger.py passes them.
        "seed": [keys.week, keys.ledger],
        "adjust": [keys.ledger, keys.week],
        "unlock": [keys.lock],
        "claim": [
            alerts.outbox_key(tenant_id),
            alerts.claim_key(tenant_id=tenant_id, week_id=week, kind="tokens", threshold=50),
        ],
        # Not in a script, but read by one tenant's pipelines and XREADGROUPs.
        "streams": [keys.dead_letter, keys.resv_tot, keys.done],
    }
    for name, names in calls.items():
        assert {core_redis.key_slot(key) for key in names} == {slot}, name
    # ADMIT and SWEEP bill a lost request into the week it was admitted in, a key they build
    # from this prefix: the same slot.
    assert core_redis.key_slot(keys.prefix + "week:2026-11-16") == slot
    # The shared keys are each in a slot of their own, never in a tenant's script.
    assert core_redis.key_slot(KEY_HEALTH_KEY) != slot
    assert core_redis.key_slot(CONFIG_GENERATION_KEY) != slot


# --- usage on the cluster, in this process -------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_it_runs_every_usage_script_and_scan_on_every_master(on_cluster: Cluster) -> None:
    with override_settings(PROXY_LEDGER_WORKER=False, PROXY_ALERT_WEBHOOK_URL=""):
        tenants = await sync_to_async(tenants_on_every_master)(
            on_cluster, lambda: make_tenant(weekly_token_cap=100, requests_per_minute=0)
        )
        client = core_redis.sync_client()
        assert isinstance(client, redis.RedisCluster)
        assert isinstance(core_redis.async_client(), redis.asyncio.RedisCluster)
        for tenant in tenants:
            context = await context_of(tenant)
            now = timezone.now()
            rid = f"ok-{tenant.pk}"
            done = await limits.aadmit(account=context, request_id=rid, tokens=40, nanos=0, now=now)
            await limits.asettle(done, bill(context, rid, status="ok", output=30))
            rid = f"lost-{tenant.pk}"
            lost = await limits.aadmit(
                account=context,
                request_id=rid,
                tokens=40,
                nanos=0,
                now=now,
                pending=bill(context, rid),
            )
            await limits._heartbeat().beat()  # HEARTBEAT renews it...
            limits._heartbeat().forget(lost)  # ...then its worker dies
        # SWEEP and SCAN: every master's reservations are found, and billed as lost.
        assert await sync_to_async(sweep_all)(client, now_ms=lease_run_out()) == NODES
        backlog = await abacklog(max_age=0)  # async SCAN, and a pipeline across masters
        assert (backlog.streams, backlog.entries) == (NODES, 2 * NODES)
        assert sorted(await sync_to_async(ledger_tenants)(client)) == sorted(t.pk for t in tenants)
        assert await sync_to_async(drain_all)(client) == 2 * NODES
        for tenant in tenants:
            rows = {r.request_id: r async for r in UsageRecord.objects.filter(tenant=tenant)}
            assert rows[f"ok-{tenant.pk}"].total_tokens == PROMPT + 30
            assert rows[f"lost-{tenant.pk}"].status == UsageRecord.Status.LOST
            week = counters.keys_for(tenant.pk, week_of(timezone.now()).id)
            expected = PROMPT + 30 + rows[f"lost-{tenant.pk}"].total_tokens
            assert int(client.hget(week.week, "used_tokens") or 0) == expected
            # SEED, under the tenant's lock (SET NX, UNLOCK): rebuilt from the ledger, equal.
            await sync_to_async(counters_rebuild)(tenant=tenant)
            assert int(client.hget(week.week, "used_tokens") or 0) == expected
            # CLAIM, then the outbox read by a consumer group (XREADGROUP, one stream a call).
            plan = alerts.Plan(thresholds=(50,), token_cap=100, cost_cap_nanos=None)
            claimed = await alerts.acheck(
                plan=plan,
                tenant_id=tenant.pk,
                tier_id=tenant.tier_id,
                week_id=week_of(timezone.now()).id,
            )
            assert [(c.kind, c.threshold) for c in claimed] == [("tokens", 50)]
        try:
            # The courier's first pass scans for outboxes: every master's.
            outboxes = {
                key.decode()
                async for key in core_redis.async_client().scan_iter(match=alerts.OUTBOX_PATTERN)
            }
            assert outboxes == {alerts.outbox_key(t.pk) for t in tenants}
            await alerts._Courier().run_once(set())
            for _ in range(200):  # by that pass, or by the delivery task the claims started
                if await AlertEvent.objects.filter(tenant__in=tenants).acount() == NODES:
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("a claimed crossing was never recorded")
        finally:
            task = alerts.deliveries.tasks.pop(asyncio.get_running_loop(), None)
            if task is not None:
                task.cancel()


async def test_it_carries_the_consoles_live_feed_between_nodes(cluster: Cluster) -> None:
    # channels-redis only publishes and subscribes, which one node serves for the cluster:
    # what the channel layer uses on a cluster (CHANNEL_LAYER_REDIS_URL, a seed by default).
    from channels_redis.pubsub import RedisPubSubChannelLayer

    here, there = (
        RedisPubSubChannelLayer(hosts=[f"redis://127.0.0.1:{port}"], prefix="lp:ch:0")
        for port in (cluster.ports[0], cluster.ports[-1])
    )
    channel = await here.new_channel()
    await here.group_add("console.dashboard", channel)
    try:
        for _ in range(100):  # the subscription is made in the background
            await there.group_send("console.dashboard", {"type": "usage.settled", "n": 1})
            try:
                event = await asyncio.wait_for(here.receive(channel), 0.1)
                break
            except TimeoutError:
                continue
        else:
            raise AssertionError("nothing published on one node reached the other")
        assert event == {"type": "usage.settled", "n": 1}
    finally:
        await here.flush()
        await there.flush()


# --- two live proxies on the cluster ---------------------------------------------------------


@pytest.fixture(scope="module")
def proxies(
    cluster: Cluster,
    django_db_setup: None,
    django_db_blocker: Any,
    tmp_path_factory: pytest.TempPathFactory,
    jwt_keys: JwtKeys,
) -> Iterator[tuple[LiveProxy, LiveProxy]]:
    env = {
        "REDIS_URL": cluster.url,
        "REDIS_CLUSTER": "true",
        "CHANNEL_LAYER_REDIS_URL": "",  # the default: the first seed node
        # Long: a change reaches them through the generation on the cluster, or not in time.
        "PROXY_CONTEXT_TTL": "60",
    }
    started = [
        start_proxy(
            tmp_dir=tmp_path_factory.mktemp(f"cluster-proxy-{n}"), jwt_keys=jwt_keys, extra_env=env
        )
        for n in range(2)
    ]
    yield started[0], started[1]
    for proxy in started:
        stop_proxy(proxy)


@dataclass
class ClusterWorld:
    a: LiveProxy
    b: LiveProxy
    cluster: Cluster
    mock: MockServer
    provider: Provider
    jwt_keys: JwtKeys

    def token(self, tenant: Tenant) -> str:
        return self.jwt_keys.sign(claims_for(tenant))

    def headers(self, tenant: Tenant) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(tenant)}"}

    def tenant(self, *, provider: Provider | None = None, **tier_fields: Any) -> Tenant:
        fields = {"requests_per_minute": 100_000, "max_concurrent_requests": 10_000, **tier_fields}
        tier = tier_create(slug=unique("cluster"), name="Cluster", **fields)
        route_create(
            tier=tier,
            model="auto",
            provider=provider or self.provider,
            upstream_model="up-auto",
            input_usd_per_mtok=Decimal("1"),
            output_usd_per_mtok=Decimal("2"),
        )
        return tenant_create(slug=unique("cluster"), name="Cluster", tier=tier)

    def chat(self, proxy: LiveProxy, tenant: Tenant, **body: Any) -> httpx.Response:
        payload = {"model": "auto", "messages": [{"role": "user", "content": "hi"}], **body}
        return httpx.post(
            f"{proxy.url}/v1/chat/completions",
            json=payload,
            headers=self.headers(tenant),
            timeout=30,
        )


def _drained(cluster: Cluster) -> None:
    """Wait until the proxies moved every settled request into the database (as conftest's
    ``proxy`` fixture does before the database is flushed)."""
    client = cluster.client()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if not any(client.xlen(k) for k in client.scan_iter(match=counters.LEDGER_PATTERN)):
            return
        time.sleep(0.05)


@pytest.fixture
def cworld(
    proxies: tuple[LiveProxy, LiveProxy],
    on_cluster: Cluster,
    transactional_db: None,
    mock: MockServer,
    jwt_keys: JwtKeys,
) -> Iterator[ClusterWorld]:
    provider = provider_create(slug=unique("mock"), kind="openai", base_url=mock.openai_base_url)
    provider_key_create(provider=provider, label="pool-1", secret=f"sk-{unique('pool')}")
    yield ClusterWorld(
        a=proxies[0],
        b=proxies[1],
        cluster=on_cluster,
        mock=mock,
        provider=provider,
        jwt_keys=jwt_keys,
    )
    _drained(on_cluster)


def exact_body(max_tokens: int) -> tuple[bytes, int]:
    """A chat request whose reservation is exactly what the mock bills for it, and that
    amount: the proxy reserves its prompt estimate (usage.limits.tokens_in of the body's
    bytes) plus max_tokens; the mock counts the prompt as 3 + its words and answers
    max_tokens pieces (devtools/mockprovider.py). Then admissions are exact whatever the
    order in which requests settle."""
    for words in range(1, 1000):
        payload = {
            "model": "auto",
            "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": " ".join(["a"] * words)}],
        }
        body = json.dumps(payload, separators=(",", ":")).encode()
        if limits.tokens_in(len(body)) == 3 + words:
            return body, 3 + words + max_tokens
    raise AssertionError("no body whose estimate matches the mock's count")


def test_it_admits_exactly_the_cap_across_two_processes_on_the_cluster(
    cworld: ClusterWorld,
) -> None:
    fit, max_tokens = 12, 4
    body, per_request = exact_body(max_tokens)
    prompt = per_request - max_tokens
    cap = fit * per_request
    tenant = cworld.tenant(weekly_token_cap=cap)
    headers = {**cworld.headers(tenant), "Content-Type": "application/json"}
    cworld.mock.configure(chunks=8, chunk_delay=0.02)

    async def all_at_once() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30) as client:
            return await asyncio.gather(
                *(
                    client.post(
                        f"{(cworld.a, cworld.b)[i % 2].url}/v1/chat/completions",
                        content=body,
                        headers=headers,
                    )
                    for i in range(3 * fit)
                )
            )

    responses = asyncio.run(all_at_once())
    admitted = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code != 200]
    assert len(admitted) == fit
    for response in refused:
        assert response.status_code == 429
        assert response.json()["error"]["code"] == "insufficient_quota"
    for response in admitted:
        assert response.json()["usage"]["total_tokens"] == per_request

    rows = ledger_rows(tenant, fit)
    assert {(r.input_tokens, r.output_tokens) for r in rows} == {(prompt, max_tokens)}
    assert sum(r.total_tokens for r in rows) == cap
    # $1 and $2 a million: each request costs the same, known amount, to the nano-dollar.
    each = (Decimal(prompt) * 1 + Decimal(max_tokens) * 2) / 1_000_000
    assert sum(r.cost_usd for r in rows) == fit * each
    client = cworld.cluster.client()
    keys = counters.keys_for(tenant.pk, week_of(timezone.now()).id)
    assert int(client.hget(keys.week, "used_tokens") or 0) == cap
    assert int(client.hget(keys.week, "used_nanos") or 0) == int(fit * each * 10**9)
    assert int(client.hget(keys.resv_tot, "tokens") or 0) == 0
    assert cworld.mock.calls() == fit


def test_it_holds_rate_limits_across_two_processes_on_the_cluster(cworld: ClusterWorld) -> None:
    tenant = cworld.tenant(requests_per_minute=5, max_concurrent_requests=2)
    statuses = []
    for index in range(8):
        response = cworld.chat((cworld.a, cworld.b)[index % 2], tenant)
        statuses.append(response.status_code)
        if response.status_code == 429:
            assert response.json()["error"]["code"] == "rate_limit_exceeded"
    assert statuses == [200] * 5 + [429] * 3

    # Concurrency: a slow stream in each process leaves no room for a third, in either.
    slow = cworld.tenant(max_concurrent_requests=2)
    headers = cworld.headers(slow)
    cworld.mock.configure(chunks=6, chunk_delay=0.5)
    body = {"model": "auto", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    with (
        httpx.stream(
            "POST", f"{cworld.a.url}/v1/chat/completions", json=body, headers=headers
        ) as one,
        httpx.stream(
            "POST", f"{cworld.b.url}/v1/chat/completions", json=body, headers=headers
        ) as two,
    ):
        assert one.status_code == two.status_code == 200
        for proxy in (cworld.a, cworld.b):
            third = cworld.chat(proxy, slow)
            assert third.status_code == 429 and "concurrent" in third.json()["error"]["message"]
        one.read()
        two.read()
    eventually(lambda: cworld.chat(cworld.b, slow).raise_for_status())


@pytest.mark.parametrize("status", [429, 401])
def test_it_shares_a_pooled_keys_health_between_processes_on_the_cluster(
    cworld: ClusterWorld, status: int
) -> None:
    pool = provider_create(slug=unique("pool"), kind="openai", base_url=cworld.mock.openai_base_url)
    secrets = {name: f"sk-{name}-{unique('k')}" for name in ("a", "b")}
    key_a = provider_key_create(provider=pool, label="a", secret=secrets["a"])
    provider_key_create(provider=pool, label="b", secret=secrets["b"])
    tenant = cworld.tenant(provider=pool)
    cworld.mock.configure(
        faults=[
            {
                "match": {"api_key": secrets["a"]},
                "action": {"type": "status", "status": status, "headers": {"retry-after": "300"}},
            }
        ]
    )
    for _ in range(30):  # through process a, until it has drawn key a (weights are equal)
        assert cworld.chat(cworld.a, tenant).status_code == 200  # key b answered in its stead
        if any(r["api_key"] == secrets["a"] for r in cworld.mock.requests()):
            break
    assert any(r["api_key"] == secrets["a"] for r in cworld.mock.requests()), "never drawn"

    state = "off" if status == 401 else "cool:"
    shared = cworld.cluster.client().hget(KEY_HEALTH_KEY, str(key_a.pk))
    assert isinstance(shared, bytes) and shared.decode().startswith(state)
    assert key_health_get()[key_a.pk].startswith(state)  # what the admin reads
    if status == 401:

        def disabled() -> None:
            assert not ProviderKey.objects.get(pk=key_a.pk).enabled

        eventually(disabled)  # in the database too, by process a, off the request's path

    def b_leaves_key_a_alone() -> None:
        # Key a would answer now: only what process a told the cluster keeps b off it.
        cworld.mock.reset()
        for _ in range(20):
            assert cworld.chat(cworld.b, tenant).status_code == 200
        assert {r["api_key"] for r in cworld.mock.requests()} == {secrets["b"]}

    eventually(b_leaves_key_a_alone)


def test_it_invalidates_both_processes_through_the_generation_on_the_cluster(
    cworld: ClusterWorld,
) -> None:
    tenant = cworld.tenant()
    both = (cworld.a, cworld.b)
    for proxy in both:  # cached in each, for PROXY_CONTEXT_TTL (60 s)
        assert cworld.chat(proxy, tenant).status_code == 200
        assert cworld.chat(proxy, tenant, model="fresh").status_code == 404
    client = cworld.cluster.client()
    before = client.get(CONFIG_GENERATION_KEY)

    route_create(
        tier=tenant.tier,
        model="fresh",
        provider=cworld.provider,
        upstream_model="up-fresh",
        input_usd_per_mtok=Decimal("1"),
        output_usd_per_mtok=Decimal("2"),
    )
    assert client.get(CONFIG_GENERATION_KEY) not in (None, before)
    within = settings.PROXY_CONTEXT_POLL + 3

    def served_fresh() -> None:
        for proxy in both:
            assert cworld.chat(proxy, tenant, model="fresh").status_code == 200

    eventually(served_fresh, timeout=within)

    tenant_suspend(tenant=tenant)

    def refused() -> None:
        for proxy in both:
            response = cworld.chat(proxy, tenant)
            assert response.status_code == 403
            assert response.json()["error"]["code"] == "tenant_suspended"

    eventually(refused, timeout=within)


def test_it_spreads_tenants_over_every_master(cworld: ClusterWorld) -> None:
    tenants = tenants_on_every_master(cworld.cluster, cworld.tenant)
    for index, tenant in enumerate(tenants):
        proxy = (cworld.a, cworld.b)[index % 2]
        assert cworld.chat(proxy, tenant, max_tokens=4).status_code == 200
    owners = set()
    week = week_of(timezone.now()).id
    for tenant in tenants:
        (row,) = ledger_rows(tenant, 1)
        key = counters.keys_for(tenant.pk, week).week
        slot = core_redis.key_slot(key)
        owner = cworld.cluster.owner(key)
        for port in cworld.cluster.ports:
            node = cworld.cluster.node(port)
            assert node.cluster("keyslot", key) == slot  # the server agrees
            held = {
                k if isinstance(k, str) else k.decode()
                for k in node.cluster("getkeysinslot", slot, 100)
            }
            assert (key in held) == (port == owner)
        assert int(cworld.cluster.node(owner).hget(key, "used_tokens") or 0) == row.total_tokens
        owners.add(owner)
    assert owners == set(cworld.cluster.ports)


def _log_in(proxy: LiveProxy, password: str) -> httpx.Response:
    with httpx.Client(base_url=proxy.url, timeout=30) as browser:
        form = browser.get("/admin/login/")
        found = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text)
        assert found is not None, form.text
        return browser.post(
            "/admin/login/",
            data={
                "username": "staff",
                "password": password,
                "csrfmiddlewaretoken": found.group(1),
                "next": "/admin/",
            },
        )


def test_it_shares_the_admin_login_throttle_between_processes_on_the_cluster(
    cworld: ClusterWorld,
) -> None:
    # Django's cache, which holds the throttle, is on the cluster too (core/cache.py).
    User.objects.create_superuser("staff", "staff@example.com", "right-password-1!")
    for attempt in range(settings.ADMIN_LOGIN_MAX_FAILURES):
        page = _log_in((cworld.a, cworld.b)[attempt % 2], "wrong")
        assert page.status_code == 200 and "Too many failed logins" not in page.text
    key = "llmproxy:1:admin-login:127.0.0.1:staff"
    assert int(cworld.cluster.client().get(key) or 0) == settings.ADMIN_LOGIN_MAX_FAILURES
    for proxy in (cworld.a, cworld.b):
        page = _log_in(proxy, "right-password-1!")
        assert page.status_code == 200 and "Too many failed logins" in page.text
