"""Which times the database's own clock stamps, and that none of them meets the bot's clock.

A time a decision later compares with `bot.clock` (consent expiry, notice pacing, the retry of
a refused removal) must be passed in by the caller from that clock. The database's clock may
stamp only what is compared with nothing but other database stamps, tested for NULL, or shown
to people. This test fails when a repository starts stamping with the database's clock, so
the new stamp is looked at (and listed in docs/development.md, "One clock") before it lands.
"""

from __future__ import annotations

import re
from pathlib import Path

DB_CODE = Path(__file__).resolve().parents[2] / "bot" / "db"
_CLOCK_CALL = re.compile(
    r"\b(now|clock_timestamp|statement_timestamp|transaction_timestamp)\(\)|CURRENT_TIMESTAMP",
    re.IGNORECASE,
)

# file -> (how many stamps, why the database's clock is right there)
DATABASE_CLOCK_STAMPS: dict[str, tuple[int, str]] = {
    "audit.py": (1, "audit_log.ts: a single clock; ordered by seq, compared with nothing"),
    "posture.py": (1, "room_posture.checked_at: shown to people"),
    "retention_rooms.py": (
        7,
        "backfill_requested/backfilled_at compared only with each other; announced_at and"
        " last_swept_at shown to people",
    ),
    "room_policy.py": (2, "room_policy.updated_at: shown to people"),
    "rooms.py": (2, "rooms.joined_at/left_at: ordering and NULL tests only"),
    "staff.py": (1, "staff.added_at: shown to people"),
    "sync_state.py": (1, "sync_state.updated_at: shown to people"),
    "tracked_events.py": (
        3,
        "archived_at, removing_since, removed_at: tested for NULL only (failed_at, which the"
        " retry decision compares, comes from the bot's clock)",
    ),
    "verification.py": (
        2,
        "verification.finished_at: shown to people (expires_at and decided_at come from the"
        " caller's clock, which sets and judges expiry)",
    ),
    "upgrade/v01_initial.py": (1, "column default, always overwritten by the repository"),
    "upgrade/v03_retention.py": (3, "column defaults and the first back-fill requests"),
    "upgrade/v07_verification.py": (1, "verification.created_at default: shown to people"),
}


def _stamps(path: Path) -> int:
    code = (line.split("#", 1)[0] for line in path.read_text().splitlines())
    return sum(len(_CLOCK_CALL.findall(line)) for line in code)


def test_only_the_listed_columns_are_stamped_by_the_databases_clock() -> None:
    found = {
        str(path.relative_to(DB_CODE)): n
        for path in sorted(DB_CODE.rglob("*.py"))
        if (n := _stamps(path))
    }
    expected = {name: count for name, (count, _why) in DATABASE_CLOCK_STAMPS.items()}
    assert found == expected, (
        "a repository's use of the database clock changed: a time that a decision compares"
        " with bot.clock must be passed in by the caller (see docs/development.md, One clock)"
    )
