"""What usage announces to the rest of the platform.

``bill_settled`` is sent (``asend``) once a request's bill is settled, with ``bill`` (the
usage.bill.Bill), ``settled`` (False when it came too late: billed as lost before) and
``limits`` (the tenant's tenants.limits.Limits it was admitted under, from its cached context:
caps and alert thresholds; None for a bill settled outside an admission). The
staff console moves its live numbers on it and the spend alerts check their thresholds.
Receivers run on the request's own path, after its answer is complete but before its worker
moves on: they must be quick (a Redis call or a channel-layer send, never an HTTP call) and
must not raise (a receiver's failure is logged and ignored: the bill stands).
"""

from __future__ import annotations

from django.dispatch import Signal

bill_settled = Signal()
