from __future__ import annotations

import signal
import time
from types import FrameType
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

import core.redis
from usage import counters
from usage.ledger import drain_all, reconcile, sweep_all

# The counters are only shared through Redis: without it they live inside each process.
EMBEDDED_STORE = (
    "REDIS_URL is not set: the counters live inside each proxy process (the embedded store), "
    "so this command would act on a store no server shares. Set REDIS_URL to the Redis the "
    "proxy uses."
)


class Command(BaseCommand):
    help = (
        "Move settled usage from Redis into the database ledger (first billing requests whose "
        "worker died, their lease run out, as lost), and add rows written while "
        "Redis was down to the counters. Every proxy process does this too (PROXY_LEDGER_WORKER);"
        " run this when that is turned off, or to drain what stopped processes left."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--interval", type=float, default=1.0, help="Seconds between passes.")
        parser.add_argument("--once", action="store_true", help="One pass, then exit.")

    def handle(self, *args: Any, interval: float, once: bool, **options: Any) -> None:
        # Looked up on its module: tests that call this in the very process holding the
        # embedded store patch it.
        if core.redis.embedded():
            raise CommandError(EMBEDDED_STORE)
        stopping = False

        def stop(signum: int, frame: FrameType | None) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        client = counters.sync_client()
        while True:
            lost = sweep_all(client)
            moved, reconciled = drain_all(client), reconcile(client)
            if moved or reconciled or lost or once:
                dead = f" ({lost} of them requests of dead workers, lost)" if lost else ""
                self.stdout.write(
                    f"{moved} ledger entries stored{dead}, {reconciled} rows reconciled."
                )
            if once or stopping:
                return
            time.sleep(interval)
