from __future__ import annotations

import signal
import time
from types import FrameType
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from usage import counters
from usage.ledger import drain_all, reconcile


class Command(BaseCommand):
    help = (
        "Move settled usage from Redis into the database ledger, and add rows written while "
        "Redis was down to the counters. Every proxy process does this too (PROXY_LEDGER_WORKER);"
        " run this when that is turned off, or to drain what stopped processes left."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--interval", type=float, default=1.0, help="Seconds between passes.")
        parser.add_argument("--once", action="store_true", help="One pass, then exit.")

    def handle(self, *args: Any, interval: float, once: bool, **options: Any) -> None:
        stopping = False

        def stop(signum: int, frame: FrameType | None) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        client = counters.sync_client()
        while True:
            moved, reconciled = drain_all(client), reconcile(client)
            if moved or reconciled or once:
                self.stdout.write(f"{moved} ledger entries stored, {reconciled} rows reconciled.")
            if once or stopping:
                return
            time.sleep(interval)
