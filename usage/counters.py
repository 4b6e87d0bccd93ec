"""The one owner of usage state in Redis: every key name and Lua script of caps and the ledger.

Per tenant (hash tag ``{t:<id>}``, so each script touches one Redis Cluster slot, and so
does every pipeline or stream read of one tenant; a pipeline over several tenants is never a
transaction, so a cluster client splits it by node)::

    lp:{t:7}:week:<week>   hash   used_tokens, used_nanos, seeded   (TTL: the week + 14 days)
    lp:{t:7}:resv          zset   request id -> reservation expiry (ms): the lease, renewed
                                  by its process's heartbeat (PROXY_LEASE_TTL)
    lp:{t:7}:resv:amt      hash   request id -> "tokens|nanos"
    lp:{t:7}:resv:tot      hash   tokens, nanos: the sum of live reservations
    lp:{t:7}:pending       hash   request id -> "tokens|nanos|week|record": the ledger entry
                                  of an admitted request if its worker dies (status lost),
                                  refreshed by the heartbeat, deleted by its settlement
    lp:{t:7}:inflight      zset   request id -> lease expiry (ms): concurrency (same expiry
                                  as its reservation)
    lp:{t:7}:rpm           zset   request id -> admission time (ms): the last minute's requests
    lp:{t:7}:done          zset   settled request id -> forget-after (ms): settle exactly once
                                  (PROXY_SETTLED_MARKER_TTL; PENDING_KEEP for a lost one)
    lp:{t:7}:ledger        stream one entry per settled request, drained into UsageRecord
    lp:{t:7}:ledger:dead   stream entries that could not be stored (their tenant was deleted)
    lp:{t:7}:lock          string held while the ledger moves to the database or the week is
                                  rebuilt from it, so the two never count an entry twice

The expiry (below) adds a lost request to the week it was admitted in, a key it builds from
the tenant's prefix rather than one it was given: the same hash tag, so the same slot as the
script's declared keys, which is all Redis Cluster asks (tests/test_redis_cluster.py checks
every script's keys). No script touches a key of another tenant or a global one.

A reservation whose lease ran out (its worker died, or stopped renewing it) is expired by
the next ADMIT of its tenant or by a SWEEP (every process's ledger drainer runs them): its
reservation and lease are freed and, if it has a pending record, that record becomes its
ledger entry and joins the week's usage, exactly once (marked done, so a late SETTLE of a
worker that was only slow is a no-op). The reservation keys live PENDING_KEEP after the
last admission, so a dead worker's pending records wait that long for a sweep.

Lua pitfalls minded here: "-0" is not an integer to HINCRBY (so amounts are subtracted as
``0 - x``), and Lua prints large numbers in exponent form (so amounts are stored as the
argument strings the app sent, never re-formatted).

Money is counted in nano-dollars (integers, exact in Lua's doubles up to $9M a tenant-week);
the ledger stores the same amount, so ledger and counter agree to the last digit.

Connections come from core/redis.py. The other Redis keys have their own owners: key
health is routing/health.py's, the configuration generation routing/generation.py's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.conf import settings

from core import redis as core_redis
from core.redis import AsyncClient, ScriptRegistry, SyncClient


def tenant_prefix(tenant_id: int) -> str:
    return f"lp:{{t:{tenant_id}}}:"


@dataclass(frozen=True, slots=True)
class TenantKeys:
    week: str
    resv: str
    resv_amt: str
    resv_tot: str
    inflight: str
    rpm: str
    done: str
    ledger: str
    dead_letter: str
    lock: str
    pending: str
    prefix: str


def keys_for(tenant_id: int, week: str) -> TenantKeys:
    p = tenant_prefix(tenant_id)
    return TenantKeys(
        week=f"{p}week:{week}",
        resv=f"{p}resv",
        resv_amt=f"{p}resv:amt",
        resv_tot=f"{p}resv:tot",
        inflight=f"{p}inflight",
        rpm=f"{p}rpm",
        done=f"{p}done",
        ledger=f"{p}ledger",
        dead_letter=f"{p}ledger:dead",
        lock=f"{p}lock",
        pending=f"{p}pending",
        prefix=p,
    )


LEDGER_PATTERN = "lp:{t:*}:ledger"
RESERVATIONS_PATTERN = "lp:{t:*}:resv"

# How long a dead worker's pending records (and the reservation keys) wait for a sweep, and
# how long a lost request's id is remembered so that its late settlement bills nothing.
PENDING_KEEP_S = 14 * 86400


def tenant_id_of_ledger(key: str) -> int:
    """The tenant id in one of its keys (a ledger stream, a reservation set...)."""
    return int(key.split("{t:", 1)[1].split("}", 1)[0])


def pending_value(*, tokens: int, nanos: int, week_id: str, record_json: str) -> str:
    """A pending record as ADMIT, HEARTBEAT and the expiry read it; the record goes last, so
    a "|" inside it is harmless."""
    return f"{tokens}|{nanos}|{week_id}|{record_json}"


# --- scripts -------------------------------------------------------------------------------

# Shared by ADMIT and SETTLE: give a reservation's amounts back to the tenant's total.
_RELEASE = """
local function release(resv_amt, resv_tot, id)
  local amount = redis.call('HGET', resv_amt, id)
  if amount then
    local sep = string.find(amount, '|', 1, true)
    redis.call('HINCRBY', resv_tot, 'tokens', 0 - tonumber(string.sub(amount, 1, sep - 1)))
    redis.call('HINCRBY', resv_tot, 'nanos', 0 - tonumber(string.sub(amount, sep + 1)))
    redis.call('HDEL', resv_amt, id)
  end
end
"""

# Shared by SETTLE and the expiry: lengthen a key's TTL, never shorten it (the done set holds
# markers of different lifetimes).
_EXTEND = """
local function extend(key, ms)
  if redis.call('PTTL', key) < ms then
    redis.call('PEXPIRE', key, ms)
  end
end
"""

# Shared by ADMIT and SWEEP: the reservations whose lease ran out. Each is released, and one
# with a pending record is billed by it: marked done (so a late settlement is a no-op),
# added to its week (the week it was admitted in, a key of the same tenant) and appended to
# the ledger, exactly as SETTLE would have. Returns how many were billed so.
_EXPIRE = (
    _RELEASE
    + _EXTEND
    + """
local function expire(k, id, now, keep)
  release(k.resv_amt, k.resv_tot, id)
  redis.call('ZREM', k.resv, id)
  redis.call('ZREM', k.inflight, id)
  local value = redis.call('HGET', k.pending, id)
  if not value then
    return 0
  end
  redis.call('HDEL', k.pending, id)
  if redis.call('ZSCORE', k.done, id) then
    return 0
  end
  local a = string.find(value, '|', 1, true)
  local b = string.find(value, '|', a + 1, true)
  local c = string.find(value, '|', b + 1, true)
  local tokens, nanos = string.sub(value, 1, a - 1), string.sub(value, a + 1, b - 1)
  local week_id, record = string.sub(value, b + 1, c - 1), string.sub(value, c + 1)
  redis.call('ZADD', k.done, now + keep, id)
  extend(k.done, keep)
  local week = k.prefix .. 'week:' .. week_id
  if redis.call('HGET', week, 'seeded') == '1' then
    redis.call('HINCRBY', week, 'used_tokens', tokens)
    redis.call('HINCRBY', week, 'used_nanos', nanos)
  end
  redis.call('XADD', k.ledger, '*', 'w', week_id, 't', tokens, 'n', nanos, 'r', record)
  return 1
end

local function expire_due(k, now, keep)
  local lost = 0
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', k.resv, '-inf', now)) do
    lost = lost + expire(k, id, now, keep)
  end
  redis.call('ZREMRANGEBYSCORE', k.inflight, '-inf', now)
  return lost
end
"""
)

# Admission: check concurrency, requests per minute and both weekly caps, and only if all
# pass take a lease, a slot in the minute, a reservation of the worst case and the pending
# ledger record. Nothing is written for a refused request, so a refusal never eats into the
# next one's allowance. Every answer but 'seed' ends with how many expired requests it
# billed as lost (their entries are in the ledger stream for the drainer).
ADMIT = (
    _EXPIRE
    + """
local week, resv, resv_amt = KEYS[1], KEYS[2], KEYS[3]
local resv_tot, inflight, rpm = KEYS[4], KEYS[5], KEYS[6]
local pending = KEYS[7]
local now = tonumber(ARGV[1])
local rid = ARGV[2]
local est_tokens, est_nanos = tonumber(ARGV[3]), tonumber(ARGV[4])
local cap_tokens, cap_nanos = tonumber(ARGV[5]), tonumber(ARGV[6])
local rpm_limit, max_concurrent = tonumber(ARGV[7]), tonumber(ARGV[8])
local lease_ttl, keep, window = tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11])
local check_rate = ARGV[12] == '1'
local pending_value = ARGV[13]
local k = {resv = resv, resv_amt = resv_amt, resv_tot = resv_tot, inflight = inflight,
           pending = pending, done = KEYS[8], ledger = KEYS[9], prefix = ARGV[14]}

if redis.call('HGET', week, 'seeded') ~= '1' then
  return {'seed'}
end

-- Idempotent: a retried call (the client re-sends on a timeout) must not reserve twice.
if redis.call('HEXISTS', resv_amt, rid) == 1 then
  local held = tonumber(redis.call('HGET', resv_tot, 'tokens') or '0')
  local used = tonumber(redis.call('HGET', week, 'used_tokens') or '0')
  return {'ok', used, held, redis.call('ZCARD', rpm), 0}
end

-- Requests whose process died before settling (no heartbeat renewed them) expire here.
local lost = expire_due(k, now, keep)
redis.call('ZREMRANGEBYSCORE', rpm, '-inf', now - window)

local in_flight = redis.call('ZCARD', inflight)
local in_window = redis.call('ZCARD', rpm)
if check_rate then
  if max_concurrent > 0 and in_flight >= max_concurrent then
    return {'concurrency', 1000, in_window, lost}
  end
  if rpm_limit > 0 and in_window >= rpm_limit then
    local oldest = redis.call('ZRANGE', rpm, 0, 0, 'WITHSCORES')
    return {'rpm', tonumber(oldest[2]) + window - now, in_window, lost}
  end
end

local used_tokens = tonumber(redis.call('HGET', week, 'used_tokens') or '0')
local used_nanos = tonumber(redis.call('HGET', week, 'used_nanos') or '0')
local held_tokens = tonumber(redis.call('HGET', resv_tot, 'tokens') or '0')
local held_nanos = tonumber(redis.call('HGET', resv_tot, 'nanos') or '0')
if cap_tokens >= 0 and used_tokens + held_tokens + est_tokens > cap_tokens then
  return {'tokens', used_tokens, held_tokens, in_window, lost}
end
if cap_nanos >= 0 and used_nanos + held_nanos + est_nanos > cap_nanos then
  return {'cost', used_nanos, held_nanos, in_window, lost}
end

-- Every lease expires lease_ttl after its last renewal, so the set may too. The reservation
-- keys are kept far longer: a dead worker's pending records must wait for a sweep.
redis.call('ZADD', inflight, now + lease_ttl, rid)
redis.call('PEXPIRE', inflight, lease_ttl)
redis.call('ZADD', rpm, now, rid)
redis.call('PEXPIRE', rpm, window)
redis.call('ZADD', resv, now + lease_ttl, rid)
redis.call('PEXPIRE', resv, keep)
redis.call('HSET', resv_amt, rid, ARGV[3] .. '|' .. ARGV[4])
redis.call('PEXPIRE', resv_amt, keep)
redis.call('HINCRBY', resv_tot, 'tokens', est_tokens)
redis.call('HINCRBY', resv_tot, 'nanos', est_nanos)
redis.call('PEXPIRE', resv_tot, keep)
if pending_value ~= '' then
  redis.call('HSET', pending, rid, pending_value)
  redis.call('PEXPIRE', pending, keep)
end
return {'ok', used_tokens, held_tokens + est_tokens, in_window + 1, lost}
"""
)

# The heartbeat of one process for one tenant: renew the lease and reservation of each of
# its live requests (ARGV: now, lease ms, then request id and pending value pairs; a value
# of "" keeps the stored one). A request whose lease already ran out is not revived: it is
# the expiry's (or its settlement's, whichever comes first). Returns those ids.
HEARTBEAT = """
local resv, inflight, pending = KEYS[1], KEYS[2], KEYS[3]
local now, lease = tonumber(ARGV[1]), tonumber(ARGV[2])
local gone = {}
for i = 3, #ARGV, 2 do
  local rid, value = ARGV[i], ARGV[i + 1]
  local expiry = redis.call('ZSCORE', resv, rid)
  if expiry and tonumber(expiry) > now then
    redis.call('ZADD', resv, 'XX', now + lease, rid)
    redis.call('ZADD', inflight, 'XX', now + lease, rid)
    if value ~= '' and redis.call('HEXISTS', pending, rid) == 1 then
      redis.call('HSET', pending, rid, value)
    end
  else
    gone[#gone + 1] = rid
  end
end
redis.call('PEXPIRE', inflight, lease)
return gone
"""

# Expire a tenant's requests whose lease ran out, without an admission (see _EXPIRE): run by
# every process's ledger drainer, so a dead worker's requests reach the ledger even when
# their tenant sends nothing more. Returns how many were billed as lost.
SWEEP = (
    _EXPIRE
    + """
local k = {resv = KEYS[1], resv_amt = KEYS[2], resv_tot = KEYS[3], inflight = KEYS[4],
           pending = KEYS[5], done = KEYS[6], ledger = KEYS[7], prefix = ARGV[3]}
return expire_due(k, tonumber(ARGV[1]), tonumber(ARGV[2]))
"""
)

# A lost request's ledger entry that meets the request's real row (written straight to the
# database while Redis was down): the row stands; the entry leaves the stream and the week
# takes the difference, once (only if this call removed the entry).
ADJUST = """
if redis.call('XDEL', KEYS[1], ARGV[1]) == 1 and redis.call('HGET', KEYS[2], 'seeded') == '1' then
  redis.call('HINCRBY', KEYS[2], 'used_tokens', ARGV[2])
  redis.call('HINCRBY', KEYS[2], 'used_nanos', ARGV[3])
end
return 1
"""

# Settlement: once per request id. Releases the reservation and the lease, adds the actual
# usage to the week (if the week's counters are live; a week not yet rebuilt counts it from
# the ledger stream when it is) and appends the ledger entry, all in one atomic step. An
# empty record adds no entry: reconciliation of a row already in the database.
SETTLE = (
    _RELEASE
    + _EXTEND
    + """
local week, resv, resv_amt, resv_tot = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local inflight, done, ledger, pending = KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local rid, tokens, nanos = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local done_ttl, week_id, record = tonumber(ARGV[4]), ARGV[5], ARGV[6]
local now = tonumber(ARGV[7])

if redis.call('ZSCORE', done, rid) then
  return 0
end
-- Settled ids are remembered in one set per tenant, forgotten after done_ttl: no key per
-- request, and nothing that only a lazy expiry would ever free.
redis.call('ZREMRANGEBYSCORE', done, '-inf', now)
redis.call('ZADD', done, now + done_ttl, rid)
extend(done, done_ttl)
release(resv_amt, resv_tot, rid)
redis.call('ZREM', resv, rid)
redis.call('ZREM', inflight, rid)
redis.call('HDEL', pending, rid)
if redis.call('HGET', week, 'seeded') == '1' then
  redis.call('HINCRBY', week, 'used_tokens', tokens)
  redis.call('HINCRBY', week, 'used_nanos', nanos)
end
if record ~= '' then
  redis.call('XADD', ledger, '*', 'w', week_id, 't', tokens, 'n', nanos, 'r', record)
end
return 1
"""
)

# Seeding a week from the ledger: the database's sum (drained entries) plus the entries
# still in the stream (not drained). Run under the tenant lock, so no entry is in both.
SEED = """
local week, ledger = KEYS[1], KEYS[2]
local db_tokens, db_nanos = tonumber(ARGV[1]), tonumber(ARGV[2])
local week_id, week_ttl, force = ARGV[3], tonumber(ARGV[4]), ARGV[5] == '1'
if not force and redis.call('HGET', week, 'seeded') == '1' then
  return 0
end
local tokens, nanos = db_tokens, db_nanos
for _, entry in ipairs(redis.call('XRANGE', ledger, '-', '+')) do
  local fields = entry[2]
  local w, t, n
  for i = 1, #fields, 2 do
    if fields[i] == 'w' then w = fields[i + 1]
    elseif fields[i] == 't' then t = tonumber(fields[i + 1])
    elseif fields[i] == 'n' then n = tonumber(fields[i + 1]) end
  end
  if w == week_id then
    tokens = tokens + t
    nanos = nanos + n
  end
end
redis.call('HSET', week, 'used_tokens', tokens, 'used_nanos', nanos, 'seeded', '1')
redis.call('EXPIRE', week, week_ttl)
return 1
"""

UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


# --- clients -------------------------------------------------------------------------------

# The connections are core's; callers that also need one take it from here.
async_client = core_redis.async_client
sync_client = core_redis.sync_client


def settle_call(
    *,
    tenant_id: int,
    week_id: str,
    request_id: str,
    tokens: int,
    nanos: int,
    record_json: str,
    now_ms: int,
) -> dict[str, list[Any]]:
    """The SETTLE script's keys and arguments; record_json "" adds no ledger entry."""
    keys = keys_for(tenant_id, week_id)
    return {
        "keys": [
            keys.week,
            keys.resv,
            keys.resv_amt,
            keys.resv_tot,
            keys.inflight,
            keys.done,
            keys.ledger,
            keys.pending,
        ],
        "args": [
            request_id,
            tokens,
            nanos,
            settings.PROXY_SETTLED_MARKER_TTL * 1000,
            week_id,
            record_json,
            now_ms,
        ],
    }


def admit_call(
    *,
    tenant_id: int,
    week_id: str,
    now_ms: int,
    request_id: str,
    tokens: int,
    nanos: int,
    cap_tokens: int,
    cap_nanos: int,
    requests_per_minute: int,
    max_concurrent: int,
    lease_ms: int,
    window_ms: int,
    pending: str,
) -> dict[str, list[Any]]:
    """The ADMIT script's keys and arguments; a cap of -1 is no cap, pending "" none."""
    keys = keys_for(tenant_id, week_id)
    return {
        "keys": [
            keys.week,
            keys.resv,
            keys.resv_amt,
            keys.resv_tot,
            keys.inflight,
            keys.rpm,
            keys.pending,
            keys.done,
            keys.ledger,
        ],
        "args": [
            now_ms,
            request_id,
            tokens,
            nanos,
            cap_tokens,
            cap_nanos,
            requests_per_minute,
            max_concurrent,
            lease_ms,
            PENDING_KEEP_S * 1000,
            window_ms,
            "1",
            pending,
            keys.prefix,
        ],
    }


def heartbeat_call(
    *, tenant_id: int, now_ms: int, lease_ms: int, renewals: list[tuple[str, str]]
) -> dict[str, list[Any]]:
    """The HEARTBEAT script's keys and arguments: (request id, pending value or "") pairs."""
    keys = keys_for(tenant_id, "-")
    args: list[Any] = [now_ms, lease_ms]
    for request_id, value in renewals:
        args += [request_id, value]
    return {"keys": [keys.resv, keys.inflight, keys.pending], "args": args}


def sweep_call(*, tenant_id: int, now_ms: int) -> dict[str, list[Any]]:
    """The SWEEP script's keys and arguments."""
    keys = keys_for(tenant_id, "-")
    return {
        "keys": [
            keys.resv,
            keys.resv_amt,
            keys.resv_tot,
            keys.inflight,
            keys.pending,
            keys.done,
            keys.ledger,
        ],
        "args": [now_ms, PENDING_KEEP_S * 1000, keys.prefix],
    }


_SCRIPTS = ScriptRegistry(
    {
        "admit": ADMIT,
        "settle": SETTLE,
        "heartbeat": HEARTBEAT,
        "sweep": SWEEP,
        "adjust": ADJUST,
        "seed": SEED,
        "unlock": UNLOCK,
    }
)


class Scripts:
    """The usage scripts' handles on one client."""

    def __init__(self, handles: dict[str, Any]) -> None:
        self.admit = handles["admit"]
        self.settle = handles["settle"]
        self.heartbeat = handles["heartbeat"]
        self.sweep = handles["sweep"]
        self.adjust = handles["adjust"]
        self.seed = handles["seed"]
        self.unlock = handles["unlock"]


def async_scripts(client: AsyncClient) -> Scripts:
    return Scripts(_SCRIPTS.on(client))


def sync_scripts(client: SyncClient) -> Scripts:
    return Scripts(_SCRIPTS.on_sync(client))
