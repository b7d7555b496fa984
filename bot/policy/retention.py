"""Retention decisions over plain values: the cutoff a sweep removes before and when a refused
removal is tried again, what a preview says, what the room is told and which `m.room.retention`
state to publish. `now` is always passed in.

Which events are due is written once, in SQL (`bot.db.tracked_events`): a message-like event
whose content is still there, stamped strictly before `cutoff_ms`, either never refused or last
refused before `retry_failed_before_ms`. The two bounds are computed here; a sweep fixes both
when it starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from mautrix.types import EventID, RoomID, UserID

from bot.policy.durations import format_duration

# Never due, whatever their age (the due query's exception to "message-like"): a redaction
# carries no content of its own; removing it would only un-hide nothing.
EXEMPT_TYPES = frozenset({"m.room.redaction"})
# A removal the homeserver refused for good (e.g. `redaction_allowed_period`) is tried again
# after this long, not on every sweep.
RETRY_FAILED_AFTER_SECONDS = 86_400
# The reason every retention redaction carries; it is how a redaction seen in sync is known
# to be the sweeper's own.
REDACTION_REASON_PREFIX = "Room retention"
MAX_BACKOFF_SECONDS = 30.0


@dataclass(frozen=True)
class TrackedEvent:
    """Metadata the bot keeps of an event it has seen (never content)."""

    event_id: EventID
    room_id: RoomID
    sender: UserID
    event_type: str
    is_state: bool
    origin_ts: int  # ms since the epoch, as the homeserver stamped it
    redacted: bool = False
    removed: bool = False
    failed_at: int | None = None  # ms since the epoch of the last final refusal
    archived: bool = False


@dataclass(frozen=True)
class Preview:
    """What the next sweep of a room would remove: how many, the oldest and newest stamps."""

    count: int
    oldest_ts: int | None = None
    newest_ts: int | None = None


def to_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def effective_retention(retention_seconds: int | None, minimum_seconds: int) -> int | None:
    """The room's retention, never shorter than the configured minimum; None when off.

    A room set before `retention.minimum` was raised keeps its shorter setting stored, but
    nothing is removed earlier than the minimum allows.
    """
    if retention_seconds is None:
        return None
    return max(retention_seconds, minimum_seconds)


def cutoff_ms(
    now: datetime, *, retention_seconds: int | None, minimum_seconds: int, legal_hold: bool
) -> int | None:
    """Events stamped strictly before this are due; None when nothing may be removed."""
    if legal_hold:
        return None
    retention = effective_retention(retention_seconds, minimum_seconds)
    if retention is None:
        return None
    return to_ms(now) - retention * 1000


def retry_failed_before_ms(now: datetime) -> int:
    """Events whose removal was refused before this may be tried again."""
    return to_ms(now) - RETRY_FAILED_AFTER_SECONDS * 1000


def pacing_delay(retry_after_ms: int | None, attempt: int) -> float:
    """Seconds to wait after a 429: what the homeserver asked for, else a doubling backoff."""
    if retry_after_ms is not None and retry_after_ms >= 0:
        return retry_after_ms / 1000
    return float(min(MAX_BACKOFF_SECONDS, 2.0**attempt))


def state_content(
    retention_seconds: int | None, *, minimum_seconds: int, legal_hold: bool
) -> dict[str, Any]:
    """`m.room.retention` content: `max_lifetime` in ms, or empty while off or under a hold
    (a homeserver purging by retention must not purge what a legal hold keeps)."""
    retention = effective_retention(retention_seconds, minimum_seconds)
    if retention is None or legal_hold:
        return {}
    return {"max_lifetime": retention * 1000}


def redaction_reason(retention_seconds: int) -> str:
    return f"{REDACTION_REASON_PREFIX}: older than {format_duration(retention_seconds)}"


def is_retention_reason(reason: object) -> bool:
    return isinstance(reason, str) and reason.startswith(REDACTION_REASON_PREFIX)


def announcement(retention_seconds: int, *, archived: bool, method: str) -> str:
    """What the room is told before its first sweep."""
    kept = format_duration(retention_seconds)
    removal = "removed from this server" if method == "purge" else "removed for every member"
    copy = (
        "A sealed copy of each message is kept in the clinic's archive first."
        if archived
        else "No copy is kept."
    )
    return (
        f"🗄️ Retention: messages in this room are kept for {kept}. Older messages are "
        f"{removal}. {copy}"
    )


def describe_preview(preview: Preview, retention_seconds: int | None, legal_hold: bool) -> str:
    """One line for `retention preview`."""
    if legal_hold:
        return "Legal hold is on: the next sweep removes nothing here."
    if retention_seconds is None:
        return "Retention is off here: the next sweep removes nothing."
    if preview.count == 0 or preview.oldest_ts is None or preview.newest_ts is None:
        return f"Retention {format_duration(retention_seconds)}: nothing is due for removal."
    return (
        f"Retention {format_duration(retention_seconds)}: the next sweep would remove "
        f"{preview.count} message{'s' if preview.count != 1 else ''}, oldest "
        f"{_stamp(preview.oldest_ts)}, newest {_stamp(preview.newest_ts)}."
    )


def _stamp(ms: int) -> str:
    return from_ms(ms).strftime("%Y-%m-%d %H:%M:%S UTC")
