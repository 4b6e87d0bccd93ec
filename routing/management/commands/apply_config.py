from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from routing.config import ConfigError, config_apply, load


class Command(BaseCommand):
    help = (
        "Make tiers, providers (keys read from environment variables), routes and tenants "
        "match a TOML file. Idempotent: a second run with the same file changes nothing."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", type=Path, help="The TOML configuration file.")
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Validate and print what would change, writing nothing.",
        )

    def handle(self, *args: Any, file: Path, dry_run: bool = False, **options: Any) -> None:
        try:
            report = config_apply(
                data=load(file, environ=os.environ), environ=os.environ, dry_run=dry_run
            )
        except ConfigError as exc:
            raise CommandError(str(exc)) from None
        for line in report.changes:
            self.stdout.write(line)
        summary = f"{len(report.changes)} change(s)" if report.changes else "no changes"
        if dry_run:
            # The same lines as a real run: only the summary says nothing was written.
            summary = f"dry run, {summary} would be made; nothing was written"
        self.stdout.write(self.style.SUCCESS(f"{file}: {summary}."))
