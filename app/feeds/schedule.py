"""Feed schedules: five-field cron expressions in UTC, read by croniter.

Only the classic five fields (minute hour day-of-month month day-of-week) are accepted: no
seconds field (croniter's sixth), no year, no ``@hourly``-style nicknames and no ``R`` (hashed)
values, so a schedule fires at most once a minute and means the same to anyone reading it.
An expression that never fires (``0 0 31 2 *``) is refused too.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from croniter import CroniterBadDateError, CroniterError, croniter

_NAMES = re.compile(
    r"jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec|sun|mon|tue|wed|thu|fri|sat", re.IGNORECASE
)
_PLAIN = re.compile(r"[0-9*,/-]+")
# croniter looks this many years ahead before deciding an expression never fires.
_SEARCH_YEARS = 5


class ScheduleError(ValueError):
    """The schedule is not a five-field cron expression that fires."""


def check_schedule(expression: str) -> str:
    """The expression, whitespace-normalised; raises ``ScheduleError`` saying what is wrong."""
    fields = expression.split()
    if len(fields) != 5:
        raise ScheduleError(
            f"must be a five-field cron expression (minute hour day month weekday), "
            f"got {len(fields)} field(s)"
        )
    for name, field in zip(("minute", "hour", "day", "month", "weekday"), fields, strict=True):
        if not _PLAIN.fullmatch(_NAMES.sub("0", field)):
            raise ScheduleError(
                f"{name} field {field!r}: only numbers, names, '*', ',', '-' and '/' are allowed"
            )
    normalised = " ".join(fields)
    try:
        if not croniter.is_valid(normalised):
            raise ScheduleError("is not a valid cron expression")
        next_fire(normalised, datetime(2026, 1, 1, tzinfo=UTC))
    except ScheduleError:
        raise
    except (CroniterError, ValueError, KeyError, TypeError) as exc:
        raise ScheduleError(f"is not a valid cron expression ({exc})") from None
    return normalised


def next_fire(expression: str, after: datetime) -> datetime:
    """The first time strictly after ``after`` at which ``expression`` fires (UTC)."""
    try:
        moment: datetime = croniter(
            expression, after.astimezone(UTC), max_years_between_matches=_SEARCH_YEARS
        ).get_next(datetime)
    except CroniterBadDateError:
        raise ScheduleError(f"never fires within {_SEARCH_YEARS} years") from None
    return moment.astimezone(UTC)
