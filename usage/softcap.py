"""The soft cap: past a tier's downgrade percentage, its tenants are served by a cheaper model.

A tier names a downgrade model and a percentage of its weekly token or cost cap; once a
tenant's settled usage this week reaches it, the pipeline serves every request with that
model (until the hard cap refuses them), records the model asked for in the ledger row's
``downgraded_from`` and says so in a response header. Only tiers with a downgrade pay for
the check: one HMGET of the week's counters.
"""

from __future__ import annotations

import logging
from datetime import datetime

from core.redis import RedisFailure
from tenants.limits import Account
from usage import counters
from usage.bill import to_nanos
from usage.weeks import week_of

logger = logging.getLogger(__name__)


async def asoft_capped(*, account: Account, now: datetime) -> bool:
    """Whether ``account`` is past its tier's downgrade percentage this week (False when
    the tier has none, or when the counters cannot say: admission then decides alone)."""
    limits = account.limits
    percent = limits.downgrade_at_percent
    if not limits.downgrade_model or percent is None:
        return False
    token_cap, cost_cap = limits.weekly_token_cap, limits.weekly_cost_cap_usd
    if token_cap is None and cost_cap is None:
        return False
    keys = counters.keys_for(account.tenant_id, week_of(now).id)
    try:
        tokens, nanos = await counters.async_client().hmget(keys.week, "used_tokens", "used_nanos")
    except RedisFailure:
        logger.warning("%s: the soft cap could not be checked", account.slug, exc_info=True)
        return False
    # Compared in whole numbers: percent / 100 of a cap, reached or passed.
    if token_cap is not None and int(tokens or 0) * 100 >= token_cap * percent:
        return True
    return cost_cap is not None and int(nanos or 0) * 100 >= to_nanos(cost_cap) * percent
