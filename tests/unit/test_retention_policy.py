"""The retention cutoff, preview lines, pacing, published state and the archive format. Which
events are due is the repository's query: tests/db/test_retention_repos.py."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from pathlib import Path

import pytest
from nacl.public import PrivateKey

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
    Preview,
    cutoff_ms,
    describe_preview,
    is_retention_reason,
    pacing_delay,
    redaction_reason,
    retry_failed_before_ms,
    state_content,
    to_ms,
)

START = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
DAY = 86_400


@pytest.mark.parametrize(
    ("retention", "minimum", "hold", "back_s"),
    [
        (DAY, 3600, False, DAY),
        (60, 3600, False, 3600),  # set when the minimum was lower: the minimum still applies
        (7200, 3600, False, 7200),  # a longer retention is kept as set
        (1, 1, False, 1),  # the test configuration: 1s
        (None, 1, False, None),  # retention off: nothing, however old
        (DAY, 1, True, None),  # a legal hold suspends everything
    ],
)
def test_the_cutoff_is_the_retention_back_never_below_the_minimum(
    retention: int | None, minimum: int, hold: bool, back_s: int | None
) -> None:
    got = cutoff_ms(START, retention_seconds=retention, minimum_seconds=minimum, legal_hold=hold)
    assert got == (None if back_s is None else to_ms(START) - back_s * 1000)


def test_a_refused_removal_may_be_tried_again_a_day_later() -> None:
    assert retry_failed_before_ms(START) == to_ms(START) - DAY * 1000


def test_preview_lines() -> None:
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
