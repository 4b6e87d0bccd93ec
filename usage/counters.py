"""The one owner of usage state in Redis: every key name and Lua script of caps and the ledger.

Per tenant (hash tag ``{t:<id>}``, so each script touches one Redis Cluster slot)::

    lp:{t:7}:week:<week>   hash   used_tokens, used_nanos, seeded   (TTL: the week + 14 days)
    lp:{t:7}:resv          zset   request id -> reservation expiry (ms)
    lp:{t:7}:resv:amt      hash   request id -> "tokens|nanos"
    lp:{t:7}:resv:tot      hash   tokens, nanos: the sum of live reservations
    lp:{t:7}:inflight      zset   request id -> lease expiry (ms): concurrency
    lp:{t:7}:rpm           zset   request id -> admission time (ms): the last minute's requests
    lp:{t:7}:done          zset   settled request id -> forget-after (ms): settle exactly once
    lp:{t:7}:ledger        stream one entry per settled request, drained into UsageRecord
    lp:{t:7}:ledger:dead   stream entries that could not be stored (their tenant was deleted)
    lp:{t:7}:lock          string held while the ledger moves to the database or the week is
                                  rebuilt from it, so the two never count an entry twice

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

import redis
import redis.asyncio as aredis
from django.conf import settings

from core import redis as core_redis
from core.redis import ScriptRegistry


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
        prefix=p,
    )


LEDGER_PATTERN = "lp:{t:*}:ledger"


def tenant_id_of_ledger(key: str) -> int:
    return int(key.split("{t:", 1)[1].split("}", 1)[0])


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

# Admission: check concurrency, requests per minute and both weekly caps, and only if all
# pass take a lease, a slot in the minute and a reservation of the worst case. Nothing is
# written for a refused request, so a refusal never eats into the next one's allowance.
ADMIT = (
    _RELEASE
    + """
local week, resv, resv_amt = KEYS[1], KEYS[2], KEYS[3]
local resv_tot, inflight, rpm = KEYS[4], KEYS[5], KEYS[6]
local now = tonumber(ARGV[1])
local rid = ARGV[2]
local est_tokens, est_nanos = tonumber(ARGV[3]), tonumber(ARGV[4])
local cap_tokens, cap_nanos = tonumber(ARGV[5]), tonumber(ARGV[6])
local rpm_limit, max_concurrent = tonumber(ARGV[7]), tonumber(ARGV[8])
local resv_ttl, lease_ttl, window = tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11])
local check_rate = ARGV[12] == '1'

if redis.call('HGET', week, 'seeded') ~= '1' then
  return {'seed'}
end

-- Idempotent: a retried call (the client re-sends on a timeout) must not reserve twice.
if redis.call('HEXISTS', resv_amt, rid) == 1 then
  local held = tonumber(redis.call('HGET', resv_tot, 'tokens') or '0')
  local used = tonumber(redis.call('HGET', week, 'used_tokens') or '0')
  return {'ok', used, held, redis.call('ZCARD', rpm)}
end

-- Reservations of processes that died before settling expire here (their TTL heals them).
local expired = redis.call('ZRANGEBYSCORE', resv, '-inf', now)
for _, id in ipairs(expired) do
  release(resv_amt, resv_tot, id)
end
if #expired > 0 then
  redis.call('ZREMRANGEBYSCORE', resv, '-inf', now)
end
redis.call('ZREMRANGEBYSCORE', inflight, '-inf', now)
redis.call('ZREMRANGEBYSCORE', rpm, '-inf', now - window)

local in_flight = redis.call('ZCARD', inflight)
local in_window = redis.call('ZCARD', rpm)
if check_rate then
  if max_concurrent > 0 and in_flight >= max_concurrent then
    return {'concurrency', 1000, in_window}
  end
  if rpm_limit > 0 and in_window >= rpm_limit then
    local oldest = redis.call('ZRANGE', rpm, 0, 0, 'WITHSCORES')
    return {'rpm', tonumber(oldest[2]) + window - now, in_window}
  end
end

local used_tokens = tonumber(redis.call('HGET', week, 'used_tokens') or '0')
local used_nanos = tonumber(redis.call('HGET', week, 'used_nanos') or '0')
local held_tokens = tonumber(redis.call('HGET', resv_tot, 'tokens') or '0')
local held_nanos = tonumber(redis.call('HGET', resv_tot, 'nanos') or '0')
if cap_tokens >= 0 and used_tokens + held_tokens + est_tokens > cap_tokens then
  return {'tokens', used_tokens, held_tokens, in_window}
end
if cap_nanos >= 0 and used_nanos + held_nanos + est_nanos > cap_nanos then
  return {'cost', used_nanos, held_nanos, in_window}
end

redis.call('ZADD', inflight, now + lease_ttl, rid)
redis.call('PEXPIRE', inflight, lease_ttl)
redis.call('ZADD', rpm, now, rid)
redis.call('PEXPIRE', rpm, window)
redis.call('ZADD', resv, now + resv_ttl, rid)
redis.call('PEXPIRE', resv, resv_ttl)
redis.call('HSET', resv_amt, rid, ARGV[3] .. '|' .. ARGV[4])
redis.call('PEXPIRE', resv_amt, resv_ttl)
redis.call('HINCRBY', resv_tot, 'tokens', est_tokens)
redis.call('HINCRBY', resv_tot, 'nanos', est_nanos)
redis.call('PEXPIRE', resv_tot, resv_ttl)
return {'ok', used_tokens, held_tokens + est_tokens, in_window + 1}
"""
)

# Settlement: once per request id. Releases the reservation and the lease, adds the actual
# usage to the week (if the week's counters are live; a week not yet rebuilt counts it from
# the ledger stream when it is) and appends the ledger entry, all in one atomic step. An
# empty record adds no entry: reconciliation of a row already in the database.
SETTLE = (
    _RELEASE
    + """
local week, resv, resv_amt, resv_tot = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local inflight, done, ledger = KEYS[5], KEYS[6], KEYS[7]
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
redis.call('PEXPIRE', done, done_ttl)
release(resv_amt, resv_tot, rid)
redis.call('ZREM', resv, rid)
redis.call('ZREM', inflight, rid)
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


_SCRIPTS = ScriptRegistry({"admit": ADMIT, "settle": SETTLE, "seed": SEED, "unlock": UNLOCK})


class Scripts:
    """The usage scripts' handles on one client."""

    def __init__(self, handles: dict[str, Any]) -> None:
        self.admit = handles["admit"]
        self.settle = handles["settle"]
        self.seed = handles["seed"]
        self.unlock = handles["unlock"]


def async_scripts(client: aredis.Redis) -> Scripts:
    return Scripts(_SCRIPTS.on(client))


def sync_scripts(client: redis.Redis) -> Scripts:
    return Scripts(_SCRIPTS.on_sync(client))
