from __future__ import annotations

import csv
import json
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from tenants.models import Tenant
from usage.selectors import GROUPS, ReportRow, usage_report
from usage.weeks import iso_week, week_of

_COLUMNS = ["group", "requests", "input_tokens", "output_tokens", "total_tokens", "cost_usd"]


def _day(value: str, flag: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise CommandError(f"{flag} {value!r}: expected a date such as 2026-11-23.") from None


class Command(BaseCommand):
    help = (
        "Usage from the ledger per tenant, tier, model or provider, for an ISO week "
        "(--week 2026-W48, default this week) or a date range (--from/--to, UTC, inclusive)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--by", choices=sorted(GROUPS), default="tenant")
        parser.add_argument("--week", help="An ISO week such as 2026-W48.")
        parser.add_argument("--from", dest="start", help="First day, e.g. 2026-11-01.")
        parser.add_argument("--to", dest="end", help="Last day, inclusive.")
        parser.add_argument("--format", choices=["table", "csv", "json"], default="table")

    def handle(self, *args: Any, **options: Any) -> None:
        week_label, start_day, end_day = options["week"], options["start"], options["end"]
        if week_label and (start_day or end_day):
            raise CommandError("Give either --week or --from/--to, not both.")
        if bool(start_day) != bool(end_day):
            raise CommandError("--from and --to go together.")
        if start_day and end_day:
            first, last = _day(start_day, "--from"), _day(end_day, "--to")
            if last < first:
                raise CommandError("--to is before --from.")
            start = datetime.combine(first, time.min, tzinfo=UTC)
            end = datetime.combine(last + timedelta(days=1), time.min, tzinfo=UTC)
            week = None
            period = f"{first} to {last}"
        else:
            try:
                week = iso_week(week_label) if week_label else week_of(timezone.now())
            except ValueError as exc:
                raise CommandError(str(exc)) from None
            start, end = week.start, week.end
            period = f"week of {week.id}"
        rows = usage_report(by=options["by"], start=start, end=end)
        caps = self._caps(rows) if options["by"] == "tenant" and week else {}
        records = [self._record(row, caps.get(row.group)) for row in rows]
        fmt = options["format"]
        if fmt == "json":
            self.stdout.write(
                json.dumps({"period": period, "by": options["by"], "rows": records}, indent=2)
            )
        elif fmt == "csv":
            writer = csv.DictWriter(
                self.stdout, fieldnames=list(records[0]) if records else _COLUMNS
            )
            writer.writeheader()
            writer.writerows(records)
        else:
            self._table(records, f"Usage by {options['by']}, {period}")

    @staticmethod
    def _caps(rows: list[ReportRow]) -> dict[str, tuple[int | None, Decimal | None]]:
        tenants = Tenant.objects.select_related("tier").filter(slug__in=[r.group for r in rows])
        return {t.slug: (t.weekly_token_cap, t.weekly_cost_cap_usd) for t in tenants}

    @staticmethod
    def _record(row: ReportRow, caps: tuple[int | None, Decimal | None] | None) -> dict[str, Any]:
        record: dict[str, Any] = {
            "group": row.group,
            "requests": row.requests,
            "input_tokens": row.input_tokens,
            "output_tokens": row.output_tokens,
            "total_tokens": row.total_tokens,
            "cost_usd": str(row.cost_usd),  # exact: the ledger counts nano-dollars
        }
        if caps is not None:
            token_cap, cost_cap = caps
            record["token_cap_used_pct"] = (
                round(100 * row.total_tokens / token_cap, 2) if token_cap else None
            )
            record["cost_cap_used_pct"] = (
                float(round(100 * row.cost_usd / cost_cap, 2)) if cost_cap else None
            )
        return record

    def _table(self, records: list[dict[str, Any]], title: str) -> None:
        self.stdout.write(title)
        if not records:
            self.stdout.write("(no usage)")
            return
        columns = list(records[0])
        cells = [[("" if r[c] is None else str(r[c])) for c in columns] for r in records]
        widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
        self.stdout.write("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
        for row in cells:
            self.stdout.write(
                "  ".join(
                    (v.ljust(w) if i == 0 else v.rjust(w))
                    for i, (v, w) in enumerate(zip(row, widths, strict=True))
                )
            )
