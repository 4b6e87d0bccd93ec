"""The usage week: the ISO week in UTC by default (start day and time zone configurable)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from django.conf import settings


@dataclass(frozen=True, slots=True)
class Week:
    start: datetime  # aware, in the configured zone
    end: datetime  # exclusive

    @property
    def id(self) -> str:
        """The start date: unambiguous for any start day."""
        return self.start.date().isoformat()

    def seconds_left(self, now: datetime) -> int:
        return max(0, int((self.end - now).total_seconds() + 0.999))

    def next(self) -> Week:
        return week_of(self.end)


def _zone() -> ZoneInfo:
    return ZoneInfo(settings.PROXY_WEEK_TIMEZONE)


def week_of(moment: datetime) -> Week:
    zone = _zone()
    local = moment.astimezone(zone)
    offset = (local.weekday() - settings.PROXY_WEEK_START_DAY) % 7
    start_day = local.date() - timedelta(days=offset)
    return week_starting(start_day)


def week_starting(day: date) -> Week:
    zone = _zone()
    start = datetime.combine(day, time.min, tzinfo=zone)
    # Adding days in local time keeps midnight across a DST change.
    end = datetime.combine(day + timedelta(days=7), time.min, tzinfo=zone)
    return Week(start=start, end=end)


def iso_week(label: str) -> Week:
    """'2026-W48' -> the usage week holding that ISO week's Monday.

    With the default (ISO weeks in UTC) that is the ISO week itself; with another start day
    it is the usage week the ledger and the counters really use, never a week of its own.
    """
    try:
        year, _, number = label.partition("-W")
        monday = date.fromisocalendar(int(year), int(number), 1)
    except ValueError:
        raise ValueError(f"{label!r} is not an ISO week such as 2026-W48.") from None
    return week_of(datetime.combine(monday, time(12), tzinfo=_zone()))
