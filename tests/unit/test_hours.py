"""Contact hours: the forms, the refusals, the wall-clock judgement across DST and midnight,
the off-hours stretch, and the parse/format round trip."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from bot.policy.hours import (
    DAY_NAMES,
    HourRange,
    Hours,
    day_bounds,
    format_hours,
    is_within,
    off_hours_start,
    parse_hours,
    parse_timezone,
)

NY = ZoneInfo("America/New_York")
DST_ZONES = [
    "America/New_York",
    "Europe/London",
    "Europe/Berlin",
    "Australia/Sydney",
    "Australia/Lord_Howe",  # a 30-minute DST shift
    "America/Santiago",  # changes at midnight
    "Asia/Kolkata",  # +05:30, no DST
    "Pacific/Chatham",  # +12:45 / +13:45
    "UTC",
]
MON_FRI = (0, 1, 2, 3, 4)


@pytest.mark.parametrize(
    ("text", "ranges", "canonical"),
    [
        ("Mon-Fri 09:00-17:00", [(MON_FRI, 540, 1020)], "Mon-Fri 09:00-17:00"),
        ("daily 08:00-20:00", [(tuple(range(7)), 480, 1200)], "daily 08:00-20:00"),
        ("Mon,Wed,Fri 10:00-11:30", [((0, 2, 4), 600, 690)], "Mon,Wed,Fri 10:00-11:30"),
        ("Sat 10:00-12:00", [((5,), 600, 720)], "Sat 10:00-12:00"),
        (
            "Mon-Fri 09:00-12:00; Sat 10:00-12:00",
            [(MON_FRI, 540, 720), ((5,), 600, 720)],
            "Mon-Fri 09:00-12:00; Sat 10:00-12:00",
        ),
        ("daily 22:00-06:00", [(tuple(range(7)), 1320, 360)], "daily 22:00-06:00"),
        ("Fri-Mon 9:00-17:00", [((0, 4, 5, 6), 540, 1020)], "Mon,Fri-Sun 09:00-17:00"),
        ("mon-fri 09:00 - 17:00 ;", [(MON_FRI, 540, 1020)], "Mon-Fri 09:00-17:00"),
        ("Mon, Tue 00:00-24:00", [((0, 1), 0, 1440)], "Mon,Tue 00:00-24:00"),
        ("DAILY 23:30-00:00", [(tuple(range(7)), 1410, 0)], "daily 23:30-00:00"),
        ("Mon-Wed,Sat 08:00-09:00", [((0, 1, 2, 5), 480, 540)], "Mon-Wed,Sat 08:00-09:00"),
    ],
)
def test_parse_and_format(
    text: str, ranges: list[tuple[tuple[int, ...], int, int]], canonical: str
) -> None:
    hours = parse_hours(text)
    assert hours == Hours(tuple(HourRange(d, s, e) for d, s, e in ranges))
    assert format_hours(hours) == canonical
    assert parse_hours(canonical) == hours


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("Mon-Fri 25:00-17:00", "25:00 is not a time of day"),
        ("Mon-Fri 09:00-25:00", "25:00 is not a time of day"),
        ("Mon-Fri 09:60-17:00", "09:60 is not a time of day"),
        ("Mon-Fri 24:00-17:00", "24:00 is not a time of day"),
        ("9 to 5", "is not DAYS HH:MM-HH:MM"),
        ("Mo-Fr 09:00-17:00", "'Mo-Fr' is not a day"),
        ("Monday 09:00-17:00", "'Monday' is not a day"),
        ("Mon-Mon 09:00-17:00", "not a span of days"),
        ("Mon 09:00-09:00", "is empty"),
        ("09:00-17:00", "is not DAYS HH:MM-HH:MM"),
        ("Mon-Fri", "is not DAYS HH:MM-HH:MM"),
        ("Mon-Fri 0900-1700", "is not DAYS HH:MM-HH:MM"),
        ("", "no hours given"),
        (" ; ", "no hours given"),
    ],
)
def test_parse_refuses_with_reason_and_expected_form(text: str, fragment: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_hours(text)
    message = str(caught.value)
    assert fragment in message
    assert "expected hours like Mon-Fri 09:00-17:00" in message
    assert "\n" not in message


@pytest.mark.parametrize("name", ["Mars/Base", "", "../etc/passwd", "/etc/localtime", "Nowhere"])
def test_timezone_refused(name: str) -> None:
    with pytest.raises(ValueError, match="IANA time zone like America/New_York"):
        parse_timezone(name)


def test_timezone_accepted() -> None:
    assert parse_timezone(" America/New_York ").key == "America/New_York"


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


@pytest.mark.parametrize(
    ("hours", "tz", "instant", "within"),
    [
        # Mon 2024-03-04: 09:00 EST is 14:00 UTC.
        ("Mon-Fri 09:00-17:00", "America/New_York", utc(2024, 3, 4, 13, 59), False),
        ("Mon-Fri 09:00-17:00", "America/New_York", utc(2024, 3, 4, 14, 0), True),
        ("Mon-Fri 09:00-17:00", "America/New_York", utc(2024, 3, 4, 21, 59, 59), True),
        ("Mon-Fri 09:00-17:00", "America/New_York", utc(2024, 3, 4, 22, 0), False),
        # After the spring change (Mar 10) 09:00 EDT is 13:00 UTC.
        ("Mon-Fri 09:00-17:00", "America/New_York", utc(2024, 3, 11, 13, 0), True),
        ("Mon-Fri 09:00-17:00", "America/New_York", utc(2024, 3, 11, 21, 0), False),
        # Saturday is not Mon-Fri, even though it is Friday evening... in UTC.
        ("Mon-Fri 09:00-17:00", "America/New_York", utc(2024, 3, 9, 1, 0), False),
        ("Mon-Fri 09:00-17:00", "Asia/Tokyo", utc(2024, 3, 8, 1, 0), True),  # Fri 10:00 JST
        ("Mon-Fri 09:00-17:00", "Asia/Tokyo", utc(2024, 3, 9, 1, 0), False),  # Sat 10:00 JST
        # Across midnight: Fri 22:00 to Sat 06:00 belongs to Friday's range.
        ("Fri 22:00-06:00", "UTC", utc(2024, 3, 8, 23, 0), True),
        ("Fri 22:00-06:00", "UTC", utc(2024, 3, 9, 5, 59), True),
        ("Fri 22:00-06:00", "UTC", utc(2024, 3, 9, 6, 0), False),
        ("Fri 22:00-06:00", "UTC", utc(2024, 3, 8, 5, 0), False),  # Fri morning: Thu's night
        ("Sun 22:00-06:00", "UTC", utc(2024, 3, 4, 3, 0), True),  # wraps Sun -> Mon
        ("daily 00:00-24:00", "UTC", utc(2024, 3, 4, 23, 59), True),
        # Fall back in New York (Nov 3 2024): 01:30 happens twice; both are inside 01:00-02:00.
        ("daily 01:00-02:00", "America/New_York", utc(2024, 11, 3, 5, 30), True),
        ("daily 01:00-02:00", "America/New_York", utc(2024, 11, 3, 6, 30), True),
        ("daily 01:00-02:00", "America/New_York", utc(2024, 11, 3, 7, 30), False),
    ],
)
def test_is_within(hours: str, tz: str, instant: datetime, within: bool) -> None:
    assert is_within(parse_hours(hours), instant, ZoneInfo(tz)) is within


def minutes_within(hours: Hours, tz: ZoneInfo, start: datetime, end: datetime) -> int:
    t, n = start, 0
    while t < end:
        n += is_within(hours, t, tz)
        t += timedelta(minutes=1)
    return n


@pytest.mark.parametrize(
    ("hours", "local_day", "minutes"),
    [
        ("daily 09:00-17:00", (2024, 3, 10), 480),  # spring forward: working hours untouched
        ("daily 09:00-17:00", (2024, 11, 3), 480),  # fall back
        ("daily 01:00-04:00", (2024, 3, 10), 120),  # 02:00-03:00 never happens
        ("daily 01:00-04:00", (2024, 11, 3), 240),  # 01:00-02:00 happens twice
        ("daily 00:00-24:00", (2024, 3, 10), 23 * 60),
        ("daily 00:00-24:00", (2024, 11, 3), 25 * 60),
    ],
)
def test_real_time_within_on_dst_days(
    hours: str, local_day: tuple[int, int, int], minutes: int
) -> None:
    start, end = day_bounds(datetime(*local_day, 12, tzinfo=NY), NY)
    assert minutes_within(parse_hours(hours), NY, start, end) == minutes


def test_day_bounds_on_dst_days() -> None:
    start, end = day_bounds(utc(2024, 3, 10, 17, 0), NY)
    assert (start, end) == (utc(2024, 3, 10, 5, 0), utc(2024, 3, 11, 4, 0))
    start, end = day_bounds(utc(2024, 11, 3, 17, 0), NY)
    assert end - start == timedelta(hours=25)


@pytest.mark.parametrize(
    ("hours", "tz", "instant", "start"),
    [
        (
            "Mon-Fri 09:00-17:00",
            "America/New_York",
            utc(2024, 3, 4, 23, 0),
            utc(2024, 3, 4, 22, 0),
        ),
        # Over the weekend the stretch began Friday evening.
        (
            "Mon-Fri 09:00-17:00",
            "America/New_York",
            utc(2024, 3, 10, 12, 0),
            utc(2024, 3, 8, 22, 0),
        ),
        # Monday early morning after the spring change: still Friday's stretch (EST end).
        (
            "Mon-Fri 09:00-17:00",
            "America/New_York",
            utc(2024, 3, 11, 12, 0),
            utc(2024, 3, 8, 22, 0),
        ),
        ("Mon-Fri 09:00-17:00", "America/New_York", utc(2024, 3, 4, 15, 0), None),
        ("daily 22:00-06:00", "UTC", utc(2024, 3, 4, 12, 0), utc(2024, 3, 4, 6, 0)),
        ("Mon 09:00-10:00", "UTC", utc(2024, 3, 4, 9, 30), None),
        ("Mon 09:00-10:00", "UTC", utc(2024, 3, 4, 8, 59, 59), utc(2024, 2, 26, 10, 0)),
        (
            "Mon 09:00-10:00; Mon 10:00-11:00",
            "UTC",
            utc(2024, 3, 4, 11, 30),
            utc(2024, 3, 4, 11, 0),
        ),
    ],
)
def test_off_hours_start(hours: str, tz: str, instant: datetime, start: datetime | None) -> None:
    assert off_hours_start(parse_hours(hours), instant, ZoneInfo(tz)) == start


# -- properties -------------------------------------------------------------------------------

minute_of_day = st.integers(0, 1439)


@st.composite
def hour_ranges(draw: st.DrawFn) -> HourRange:
    days = tuple(sorted(draw(st.sets(st.integers(0, 6), min_size=1))))
    start = draw(minute_of_day)
    end = draw(st.integers(0, 1440).filter(lambda e: e != start))
    return HourRange(days, start, end)


hours_values = st.builds(
    lambda rs: Hours(tuple(rs)), st.lists(hour_ranges(), min_size=1, max_size=4)
)
zones = st.sampled_from(DST_ZONES).map(ZoneInfo)
# Instants around the DST changes of 2020-2030 and everywhere between.
instants = st.datetimes(
    min_value=datetime(2020, 1, 1), max_value=datetime(2030, 12, 31), timezones=st.just(UTC)
)


@given(hours_values)
def test_format_round_trips(hours: Hours) -> None:
    assert parse_hours(format_hours(hours)) == hours


@st.composite
def written_hours(draw: st.DrawFn) -> str:
    """Hours as people write them: any case, spaces, spans, lists, 24:00, trailing ;."""
    parts = []
    for r in draw(st.lists(hour_ranges(), min_size=1, max_size=3)):
        names = [DAY_NAMES[d] for d in r.days]
        if len(names) == 7 and draw(st.booleans()):
            days = "daily"
        else:
            days = draw(st.sampled_from([",", ", "])).join(names)
        if draw(st.booleans()):
            days = days.lower()
        dash = draw(st.sampled_from(["-", " - "]))
        start = f"{r.start // 60}:{r.start % 60:02d}"
        end = f"{r.end // 60:02d}:{r.end % 60:02d}"
        parts.append(f"{days} {start}{dash}{end}")
    return draw(st.sampled_from(["; ", ";", " ; "])).join(parts) + draw(st.sampled_from(["", ";"]))


@given(written_hours())
def test_parse_of_written_forms_reaches_a_canonical_fixed_point(text: str) -> None:
    canonical = format_hours(parse_hours(text))
    assert format_hours(parse_hours(canonical)) == canonical
    assert parse_hours(canonical) == parse_hours(text)


@given(
    hours_values,
    zones,
    st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 12, 31)),
    st.sampled_from([0, 1]),
)
def test_judged_on_the_wall_clock_across_dst(
    hours: Hours, tz: ZoneInfo, wall: datetime, fold: int
) -> None:
    """Any wall-clock time that exists in the zone (either side of a fall-back) is within
    exactly when its weekday and minute are, whatever the UTC offset is that day."""
    local = wall.replace(tzinfo=tz, fold=fold)
    instant = local.astimezone(UTC)
    back = instant.astimezone(tz)
    assume(back.replace(tzinfo=None, fold=0) == wall)  # skip times a spring-forward removed
    minute = wall.hour * 60 + wall.minute
    expected = any(r.contains(wall.weekday(), minute) for r in hours.ranges)
    assert is_within(hours, instant, tz) is expected


@given(hour_ranges().filter(lambda r: r.crosses_midnight), zones, instants)
def test_range_across_midnight_is_its_two_halves(
    r: HourRange, tz: ZoneInfo, instant: datetime
) -> None:
    halves = [HourRange(r.days, r.start, 1440)]
    if r.end > 0:
        halves.append(HourRange(tuple(sorted((d + 1) % 7 for d in r.days)), 0, r.end))
    assert is_within(Hours((r,)), instant, tz) is is_within(Hours(tuple(halves)), instant, tz)


@settings(max_examples=40, deadline=None)
@given(hours_values, zones, instants)
def test_off_hours_start_is_where_the_stretch_begins(
    hours: Hours, tz: ZoneInfo, instant: datetime
) -> None:
    start = off_hours_start(hours, instant, tz)
    if start is None:
        assert is_within(hours, instant, tz)
        return
    assert start <= instant
    assert is_within(hours, start - timedelta(minutes=1), tz)
    t = start
    while t <= instant:  # every minute of the stretch is outside the hours
        assert not is_within(hours, t, tz)
        t += timedelta(minutes=1)


@given(zones, instants)
def test_day_bounds_hold_the_instant(tz: ZoneInfo, instant: datetime) -> None:
    start, end = day_bounds(instant, tz)
    local = instant.astimezone(tz)
    assert start.astimezone(tz).date() == local.date()
    assert timedelta(hours=22) <= end - start <= timedelta(hours=26)
