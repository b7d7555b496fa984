"""The retention due-set decision, previews, pacing, published state and the archive format."""

from __future__ import annotations

import base64
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from nacl.public import PrivateKey

from bot.clock import FakeClock
from bot.config import ConfigError, parse_config
from bot.policy.archive import (
    ArchiveKeyError,
    archive_record,
    is_public_key,
    key_id,
    keypair_text,
    open_sealed,
    parse_private_key,
    parse_public_key,
    seal,
)
from bot.policy.retention import (
    RETRY_FAILED_AFTER_SECONDS,
    Preview,
    TrackedEvent,
    cutoff_ms,
    describe_preview,
    due_events,
    is_retention_reason,
    pacing_delay,
    redaction_reason,
    state_content,
    summarize,
    to_ms,
)

START = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
DAY = 86_400


def message(ts: int, *, event_id: str = "$m", **changes: object) -> TrackedEvent:
    base = TrackedEvent(event_id, "!r:x", "@p:x", "m.room.message", False, ts)
    return replace(base, **changes)  # type: ignore[arg-type]


def due_now(clock: FakeClock, events: list[TrackedEvent], **policy: object) -> list[str]:
    settings: dict[str, object] = {
        "retention_seconds": DAY,
        "minimum_seconds": 3600,
        "legal_hold": False,
        **policy,
    }
    return [
        e.event_id
        for e in due_events(events, now=clock.now(), **settings)  # type: ignore[arg-type]
    ]


@pytest.mark.parametrize(
    ("age_ms", "due"),
    [
        (DAY * 1000 + 1, True),  # just older than the retention
        (DAY * 1000, False),  # exactly as old: not *older* than it
        (DAY * 1000 - 1, False),
        (0, False),
        (-5000, False),  # stamped in the future (clock skew): kept
    ],
)
def test_boundary_is_strictly_older_than_the_retention(age_ms: int, due: bool) -> None:
    clock = FakeClock(START)
    event = message(to_ms(START) - age_ms)
    assert due_now(clock, [event]) == (["$m"] if due else [])


def test_the_fake_clock_moving_forward_makes_messages_due() -> None:
    clock = FakeClock(START)
    events = [message(to_ms(START) - 1000 * i, event_id=f"$e{i}") for i in range(3)]
    assert due_now(clock, events) == []
    clock.advance(DAY)
    assert due_now(clock, events) == ["$e2", "$e1"]  # oldest first; $e0 is exactly a day old
    clock.advance(0.001)
    assert due_now(clock, events) == ["$e2", "$e1", "$e0"]


@pytest.mark.parametrize(
    ("retention", "minimum", "age_s", "due"),
    [
        (60, 3600, 120, False),  # set when the minimum was lower: the minimum still applies
        (60, 3600, 3601, True),
        (7200, 3600, 3601, False),  # a longer retention is kept as set
        (7200, 3600, 7201, True),
        (1, 1, 2, True),  # the test configuration: 1s
        (None, 1, 10 * 365 * DAY, False),  # retention off: nothing, however old
    ],
)
def test_minimum_bounds_how_short_retention_acts(
    retention: int | None, minimum: int, age_s: int, due: bool
) -> None:
    clock = FakeClock(START)
    event = message(to_ms(START) - age_s * 1000)
    got = due_now(clock, [event], retention_seconds=retention, minimum_seconds=minimum)
    assert got == (["$m"] if due else [])


def test_legal_hold_suspends_everything() -> None:
    clock = FakeClock(START)
    ancient = [message(0, event_id=f"$a{i}") for i in range(5)]
    assert due_now(clock, ancient, legal_hold=True) == []
    assert len(due_now(clock, ancient, legal_hold=False)) == 5
    assert cutoff_ms(START, retention_seconds=DAY, minimum_seconds=1, legal_hold=True) is None


@pytest.mark.parametrize(
    ("changes", "due"),
    [
        ({}, True),
        ({"event_type": "m.room.encrypted"}, True),  # never decrypted: still removed
        ({"event_type": "m.reaction"}, True),
        ({"event_type": "m.room.redaction"}, False),
        ({"is_state": True, "event_type": "m.room.member"}, False),
        ({"redacted": True}, False),
        ({"removed": True}, False),
    ],
)
def test_only_message_like_events_with_content_left_are_due(
    changes: dict[str, object], due: bool
) -> None:
    clock = FakeClock(START)
    event = replace(message(0), **changes)  # type: ignore[arg-type]
    assert due_now(clock, [event]) == (["$m"] if due else [])


def test_a_refused_removal_is_tried_again_only_after_a_day() -> None:
    clock = FakeClock(START)
    failed = message(0, failed_at=to_ms(START))
    assert due_now(clock, [failed]) == []
    clock.advance(RETRY_FAILED_AFTER_SECONDS + 1)
    assert due_now(clock, [failed]) == ["$m"]


@given(
    stamps=st.lists(st.integers(min_value=0, max_value=4 * DAY * 1000), max_size=30),
    retention=st.integers(min_value=1, max_value=3 * DAY),
    hold=st.booleans(),
)
def test_due_set_is_exactly_the_events_older_than_the_cutoff(
    stamps: list[int], retention: int, hold: bool
) -> None:
    now = datetime.fromtimestamp(4 * DAY, UTC)
    events = [message(ts, event_id=f"$e{i}") for i, ts in enumerate(stamps)]
    due = due_events(
        events, now=now, retention_seconds=retention, minimum_seconds=1, legal_hold=hold
    )
    limit = to_ms(now) - retention * 1000
    expected = set() if hold else {e.event_id for e in events if e.origin_ts < limit}
    assert {e.event_id for e in due} == expected
    assert [e.origin_ts for e in due] == sorted(e.origin_ts for e in due)
    preview = summarize(due)
    assert preview.count == len(due)
    if due:
        assert preview.oldest_ts == due[0].origin_ts and preview.newest_ts == due[-1].origin_ts


def test_preview_lines() -> None:
    assert summarize([]) == Preview(0)
    preview = Preview(3, to_ms(START), to_ms(START) + 60_000)
    line = describe_preview(preview, DAY, False)
    assert "would remove 3 messages" in line
    assert "2026-11-20 09:00:00 UTC" in line and "09:01:00" in line
    assert "nothing is due" in describe_preview(Preview(0), DAY, False)
    assert "Legal hold is on" in describe_preview(preview, DAY, True)
    assert "Retention is off" in describe_preview(preview, None, False)


@pytest.mark.parametrize(
    ("retry_after_ms", "attempt", "seconds"),
    [(1500, 0, 1.5), (0, 3, 0.0), (None, 0, 1.0), (None, 3, 8.0), (None, 10, 30.0)],
)
def test_pacing_waits_what_the_homeserver_asks(
    retry_after_ms: int | None, attempt: int, seconds: float
) -> None:
    assert pacing_delay(retry_after_ms, attempt) == seconds


@pytest.mark.parametrize(
    ("retention", "hold", "content"),
    [
        (DAY, False, {"max_lifetime": DAY * 1000}),
        (60, False, {"max_lifetime": 3600 * 1000}),  # never below the minimum
        (DAY, True, {}),  # a hold must stop homeservers purging by retention too
        (None, False, {}),
    ],
)
def test_published_state(retention: int | None, hold: bool, content: dict[str, int]) -> None:
    assert state_content(retention, minimum_seconds=3600, legal_hold=hold) == content


def test_redaction_reason_marks_the_sweepers_own_redactions() -> None:
    assert is_retention_reason(redaction_reason(30 * DAY))
    assert "30d" in redaction_reason(30 * DAY)
    assert not is_retention_reason("spam")
    assert not is_retention_reason(None)


def test_archive_seals_to_the_public_key_and_only_its_private_key_opens() -> None:
    private = PrivateKey.generate()
    text = keypair_text(bytes(private))
    public_line = next(line for line in text.splitlines() if line.startswith("archive_public"))
    public = parse_public_key(public_line.split(": ", 1)[1])
    assert public == bytes(private.public_key)
    assert parse_private_key(text) == bytes(private)  # keygen's output works as the key file
    event = {
        "type": "m.room.encrypted",
        "room_id": "!r:x",
        "event_id": "$e",
        "sender": "@p:x",
        "origin_server_ts": 5,
        "content": {"ciphertext": "..."},
    }
    plain = {"type": "m.room.message", "content": {"msgtype": "m.text", "body": "hello 42"}}
    sealed = seal(public, archive_record(event, plain, 9))
    assert b"hello 42" not in sealed
    opened = open_sealed(bytes(private), sealed)
    assert opened is not None
    assert opened["content"]["body"] == "hello 42" and opened["readable"] and opened["encrypted"]
    assert opened["event_id"] == "$e" and opened["sender"] == "@p:x"
    assert open_sealed(bytes(PrivateKey.generate()), sealed) is None
    unreadable = archive_record(event, None, 9)
    assert unreadable["readable"] is False and unreadable["content"] == {"ciphertext": "..."}
    assert len(key_id(public)) == 16


@pytest.mark.parametrize(
    "text", ["", "abc", base64.b64encode(b"x" * 31).decode(), "not base64 !!", "a\nb\nc"]
)
def test_bad_keys_are_refused_with_what_is_expected(text: str) -> None:
    assert not is_public_key(text)
    with pytest.raises(ArchiveKeyError, match="expected"):
        parse_private_key(text)


def test_config_refuses_an_archive_key_that_is_not_one(tmp_path: Path) -> None:
    from tests.unit.test_config import config_with

    with pytest.raises(ConfigError) as caught:
        parse_config(config_with(retention__archive_public_key="b64:abc123"), {}, tmp_path)
    assert any(p.startswith("retention.archive_public_key") for p in caught.value.problems)
    good = base64.b64encode(bytes(PrivateKey.generate().public_key)).decode()
    config = parse_config(config_with(retention__archive_public_key=good), {}, tmp_path)
    assert config.retention.archive_public_key == good


@pytest.mark.parametrize(
    ("body", "header", "expected"),
    [
        ({"errcode": "M_LIMIT_EXCEEDED", "retry_after_ms": 4321}, "5", 4321),  # body wins
        ({"errcode": "M_LIMIT_EXCEEDED"}, "2", 2000),  # Retry-After is in seconds
        ({"retry_after_ms": -1}, None, None),
        ({"retry_after_ms": True}, None, None),
        (None, "soon", None),
        ("not json", None, None),
    ],
)
def test_the_homeservers_wait_is_read_from_a_429(
    body: object, header: str | None, expected: int | None
) -> None:
    from bot.matrix.ratelimit import retry_after_ms

    assert retry_after_ms(body, header) == expected


def test_keygen_prints_a_pair_that_works_and_export_names_a_bad_argument(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from bot.__main__ import main

    assert main(["keygen"]) == 0
    printed = capsys.readouterr().out
    private = parse_private_key(printed)
    public_line = next(ln for ln in printed.splitlines() if ln.startswith("archive_public_key"))
    assert parse_public_key(public_line.split(": ", 1)[1]) == bytes(PrivateKey(private).public_key)
    assert main(["keygen"]) == 0
    assert capsys.readouterr().out != printed  # a new pair each time

    missing = tmp_path / "nope.key"
    args = ["archive", "export", "-c", str(tmp_path / "c.yaml"), "--private-key-file"]
    assert main([*args, str(missing)]) == 2
    assert "nope.key" in capsys.readouterr().err
    assert main([*args, str(missing), "action=message.sent"]) == 2
    err = capsys.readouterr().err
    assert "action=" in err and "expected room, user, since or until" in err


async def test_retry_rate_limited_waits_as_asked_then_succeeds() -> None:
    from bot.matrix.ratelimit import RateLimited, retry_rate_limited

    calls: list[int] = []

    async def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise RateLimited(429, "slow down", retry_after_ms=10)
        return "sent"

    assert await retry_rate_limited(flaky) == "sent"
    assert len(calls) == 3

    async def always() -> str:
        raise RateLimited(429, "slow down", retry_after_ms=1)

    import pytest

    with pytest.raises(RateLimited):
        await retry_rate_limited(always, attempts=2)
