"""Retention decisions (SPEC 4) over plain values: which events are due, what a preview shows,
what the room is told and which `m.room.retention` state to publish. `now` is always passed in.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bot.policy.durations import format_duration

# A redaction carries no content of its own; removing it would only un-hide nothing.
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

    event_id: str
    room_id: str
    sender: str
    event_type: str
    is_state: bool
    origin_ts: int  # ms since the epoch, as the homeserver stamped it
    redacted: bool = False
    removed: bool = False
    failed_at: int | None = None  # ms since the epoch of the last final refusal
    archived: bool = False


@dataclass(frozen=True)
class Preview:
    """What the next sweep of a room would remove."""

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


def is_removable(event: TrackedEvent) -> bool:
    """A message-like event whose content is still there: state is the room, not its talk."""
    return (
        not event.is_state
        and event.event_type not in EXEMPT_TYPES
        and not event.redacted
        and not event.removed
    )


def is_due(event: TrackedEvent, *, cutoff: int | None, now: datetime) -> bool:
    if cutoff is None or not is_removable(event) or event.origin_ts >= cutoff:
        return False
    return event.failed_at is None or event.failed_at < retry_failed_before_ms(now)


def due_events(
    events: Iterable[TrackedEvent],
    *,
    now: datetime,
    retention_seconds: int | None,
    minimum_seconds: int,
    legal_hold: bool,
) -> list[TrackedEvent]:
    """The events the next sweep removes, oldest first."""
    cutoff = cutoff_ms(
        now,
        retention_seconds=retention_seconds,
        minimum_seconds=minimum_seconds,
        legal_hold=legal_hold,
    )
    due = [e for e in events if is_due(e, cutoff=cutoff, now=now)]
    return sorted(due, key=lambda e: (e.origin_ts, e.event_id))


def summarize(due: Iterable[TrackedEvent]) -> Preview:
    stamps = [e.origin_ts for e in due]
    if not stamps:
        return Preview(0)
    return Preview(len(stamps), min(stamps), max(stamps))


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
