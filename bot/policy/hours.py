"""Contact hours as patients agree to them (`Mon-Fri 09:00-17:00; Sat 10:00-12:00`).

Parsing, a formatter that round-trips, and whether an instant falls inside the hours, judged on
the patient's wall clock in their IANA time zone (zoneinfo), so DST changes and midnight are
handled the way the patient reads a clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
MINUTES_PER_DAY = 24 * 60
MINUTES_PER_WEEK = 7 * MINUTES_PER_DAY
EXPECTED = "expected hours like Mon-Fri 09:00-17:00 or daily 08:00-20:00, ranges separated by ;"
TIMEZONE_EXPECTED = "expected an IANA time zone like America/New_York or Europe/Berlin"

_DAY_INDEX = {name.lower(): i for i, name in enumerate(DAY_NAMES)}
_ONE_MINUTE = timedelta(minutes=1)
# DST moves a wall clock by at most two hours; jumping back by less than the wall-clock distance
# minus this slack can never skip over the moment a window ended.
_DST_SLACK_MINUTES = 180


@dataclass(frozen=True)
class HourRange:
    """One `DAYS HH:MM-HH:MM` range. `end <= start` means it runs past midnight into the next
    day (`22:00-06:00`); `end` may be 1440 (`24:00`)."""

    days: tuple[int, ...]  # weekday numbers, Monday = 0, sorted and distinct
    start: int  # minute of the day, 0..1439
    end: int  # minute of the day, 0..1440, never equal to start

    @property
    def crosses_midnight(self) -> bool:
        return self.end <= self.start

    def contains(self, weekday: int, minute: int) -> bool:
        """Whether a wall-clock weekday and minute of the day fall in this range."""
        if not self.crosses_midnight:
            return weekday in self.days and self.start <= minute < self.end
        return (weekday in self.days and minute >= self.start) or (
            (weekday - 1) % 7 in self.days and minute < self.end
        )


@dataclass(frozen=True)
class Hours:
    ranges: tuple[HourRange, ...]

    def __str__(self) -> str:
        return format_hours(self)


# -- parsing and formatting -------------------------------------------------------------------


def parse_hours(text: str) -> Hours:
    """Hours from `text`; ValueError naming what is wrong and the expected form otherwise."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"no hours given; {EXPECTED}")
    ranges = []
    for part in text.split(";"):
        if not part.strip():
            continue  # a trailing or doubled ; is harmless
        try:
            ranges.append(_parse_range(part.strip()))
        except ValueError as e:
            raise ValueError(f"{text.strip()!r} is not valid: {e}; {EXPECTED}") from None
    if not ranges:
        raise ValueError(f"no hours given; {EXPECTED}")
    return Hours(tuple(ranges))


def _parse_range(part: str) -> HourRange:
    split = _split_range(part)
    if split is None:
        raise ValueError(f"'{part}' is not DAYS HH:MM-HH:MM")
    days_text, start_text, end_text = split
    days = _parse_days(days_text)
    start = _parse_time(start_text, end=False)
    end = _parse_time(end_text, end=True)
    if start == end:
        raise ValueError(f"the range {start_text}-{end_text} is empty")
    return HourRange(days, start, end)


def _split_range(part: str) -> tuple[str, str, str] | None:
    """(days, start, end) of `DAYS HH:MM-HH:MM`, or None when `part` has another shape.

    Read from the right, each character looked at once. The regex this replaces,
    `(.+?)\\s+(H?H:MM)\\s*-\\s*(H?H:MM)`, backtracked over every way to split a long run
    of spaces: seconds of CPU for 16 kB (issue 9). Same reading: days hold no newline, and
    whitespace is what `str.isspace` says (as `\\s` in a str pattern).
    """
    end, i = _time_before(part, len(part))
    if end is None:
        return None
    i = _space_before(part, i)
    if i == 0 or part[i - 1] != "-":
        return None
    start, i = _time_before(part, _space_before(part, i - 1))
    if start is None:
        return None
    days_end = _space_before(part, i)
    if days_end == i or days_end == 0:
        return None  # no space before the start time, or no days
    days = part[:days_end]
    return None if "\n" in days else (days, start, end)


def _space_before(text: str, i: int) -> int:
    """The start of the run of whitespace that ends at `i` (`i` itself when there is none)."""
    while i > 0 and text[i - 1].isspace():
        i -= 1
    return i


def _time_before(text: str, i: int) -> tuple[str | None, int]:
    """The `H:MM` or `HH:MM` (ASCII digits) ending at `i` and where it starts; (None, i) when
    there is none. A third digit before it is left for the caller to refuse."""
    if i < 4 or text[i - 3] != ":" or not _digits(text[i - 2 : i]) or not _digits(text[i - 4]):
        return None, i
    start = i - 5 if i >= 5 and _digits(text[i - 5]) else i - 4
    return text[start:i], start


def _digits(text: str) -> bool:
    return bool(text) and all("0" <= c <= "9" for c in text)


def _parse_days(text: str) -> tuple[int, ...]:
    compact = "".join(text.split())  # every whitespace character dropped
    if compact.lower() == "daily":
        return tuple(range(7))
    days: set[int] = set()
    for item in compact.split(","):
        first, dash, last = item.lower().partition("-")
        if first not in _DAY_INDEX or (dash and last not in _DAY_INDEX):
            raise ValueError(
                f"'{item or text.strip()}' is not a day; use Mon, Tue, Wed, Thu, Fri, Sat, Sun, "
                "a span like Mon-Fri, a list like Mon,Wed,Fri, or daily"
            )
        a = _DAY_INDEX[first]
        if not dash:
            days.add(a)
            continue
        b = _DAY_INDEX[last]
        if a == b:
            raise ValueError(f"'{item}' is not a span of days; write just one day")
        # A span may wrap past Sunday: Fri-Mon is Friday to Monday.
        days.update((a + i) % 7 for i in range((b - a) % 7 + 1))
    return tuple(sorted(days))


def _parse_time(text: str, *, end: bool) -> int:
    hours, _, minutes = text.partition(":")
    h, m = int(hours), int(minutes)
    if end and (h, m) == (24, 0):
        return MINUTES_PER_DAY
    if h > 23 or m > 59:
        hint = "00:00 to 23:59, or 24:00 as an end" if end else "00:00 to 23:59"
        raise ValueError(f"{text} is not a time of day ({hint})")
    return h * 60 + m


def format_hours(hours: Hours) -> str:
    """The canonical text of `hours`; `parse_hours` reads it back to an equal value."""
    return "; ".join(
        f"{_format_days(r.days)} {_format_time(r.start)}-{_format_time(r.end)}"
        for r in hours.ranges
    )


def _format_days(days: tuple[int, ...]) -> str:
    if len(days) == 7:
        return "daily"
    parts: list[str] = []
    run: list[int] = []
    for day in [*days, -2]:  # -2 ends the last run
        if run and day == run[-1] + 1:
            run.append(day)
            continue
        if len(run) >= 3:
            parts.append(f"{DAY_NAMES[run[0]]}-{DAY_NAMES[run[-1]]}")
        else:
            parts.extend(DAY_NAMES[d] for d in run)
        run = [day]
    return ",".join(parts)


def _format_time(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


def parse_timezone(text: str) -> ZoneInfo:
    """An IANA time zone; ValueError with the expected form otherwise."""
    name = text.strip() if isinstance(text, str) else ""
    try:
        if not name or name.startswith("/") or ".." in name:
            raise ValueError(name)
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError, TypeError):
        shown = f"'{name}'" if name else "nothing"
        raise ValueError(f"{shown} is not a time zone; {TIMEZONE_EXPECTED}") from None


# -- judging instants -------------------------------------------------------------------------


def wall_clock(instant: datetime, tz: tzinfo) -> tuple[int, int]:
    """(weekday, minute of the day) of an aware instant on the wall clock of `tz`."""
    if instant.tzinfo is None:
        raise ValueError("instant must be timezone-aware")
    local = instant.astimezone(tz)
    return local.weekday(), local.hour * 60 + local.minute


def is_within(hours: Hours, instant: datetime, tz: tzinfo) -> bool:
    """Whether the aware `instant` falls in `hours` on the wall clock of `tz`."""
    weekday, minute = wall_clock(instant, tz)
    return any(r.contains(weekday, minute) for r in hours.ranges)


def off_hours_start(hours: Hours, instant: datetime, tz: tzinfo) -> datetime | None:
    """When the off-hours stretch holding `instant` began (UTC); None when `instant` is within.

    Within-ness only changes on whole UTC minutes (zone offsets are whole minutes), so the
    stretch starts on the first minute after the last window ended. Jumps back by the wall-clock
    distance to the last window end (less a DST slack), then walks minute by minute.
    """
    if is_within(hours, instant, tz):
        return None
    t = instant.astimezone(UTC).replace(second=0, microsecond=0)
    for _ in range(2 * MINUTES_PER_WEEK):  # a bound, not an expectation: a few hundred at most
        prev = t - _ONE_MINUTE
        if is_within(hours, prev, tz):
            return t
        back = _wall_minutes_since_end(hours, *wall_clock(prev, tz))
        t = prev - timedelta(minutes=max(0, back - _DST_SLACK_MINUTES))
    return t


def _wall_minutes_since_end(hours: Hours, weekday: int, minute: int) -> int:
    now = weekday * MINUTES_PER_DAY + minute
    best = MINUTES_PER_WEEK
    for r in hours.ranges:
        end = r.end + (MINUTES_PER_DAY if r.crosses_midnight else 0)
        for day in r.days:
            best = min(best, (now - (day * MINUTES_PER_DAY + end)) % MINUTES_PER_WEEK)
    return best


def day_bounds(instant: datetime, tz: tzinfo) -> tuple[datetime, datetime]:
    """The UTC start (inclusive) and end (exclusive) of the local day holding `instant` in `tz`;
    23 or 25 hours long on DST change days."""
    local_day: date = instant.astimezone(tz).date()
    start = datetime.combine(local_day, time(0), tzinfo=tz).astimezone(UTC)
    end = datetime.combine(local_day + timedelta(days=1), time(0), tzinfo=tz).astimezone(UTC)
    return start, end
