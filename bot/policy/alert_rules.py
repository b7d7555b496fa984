"""Which audit rows are worth telling the management room about, and in what words.

Pure: built from an audit row's plain fields. Only IDs, action names, codes and reference
numbers go into an alert, never message content.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

MAX_LINES = 10


def alert_line(
    action: str,
    *,
    actor: str,
    room_id: str | None,
    event_id: str | None,
    subject: str | None,
    details: Mapping[str, Any],
) -> str | None:
    """One alert line for an audit row, or None when it is not alert-worthy."""
    room = room_id or "?"
    if action == "policy.violation":
        kind = details.get("kind") or details.get("rule")
        what = f" ({kind})" if isinstance(kind, str) else ""
        return f"Policy violation{what} by {actor} in {room} (event {event_id})"
    if action == "posture.drift":
        codes = ", ".join(_strings(details.get("new"))) or "settings changed"
        return (
            f"Posture drift in {room}: {codes}. "
            f"Details: `posture room={room}`; fix: `posture fix room={room}`"
        )
    if action == "posture.fixed":
        fixed = ", ".join(_strings(details.get("fixed"))) or "nothing"
        text = f"Posture fixed in {room} by {actor}: {fixed}"
        not_fixed = _strings(details.get("not_fixed_codes"))
        return text + (f"; could not fix: {', '.join(not_fixed)}" if not_fixed else "")
    if action == "disclosure.external_member":
        server = details.get("server", "?")
        return (
            f"Possible disclosure: {subject} from {server}, outside roles.allowed_servers, "
            f"joined {room}"
        )
    if action == "decryption.failed":
        reason = details.get("reason", "unknown")
        return f"Could not decrypt event {event_id} from {actor} in {room}: {reason}"
    if action == "command.executed":
        outcome = details.get("outcome")
        if isinstance(outcome, str) and outcome.startswith("error"):
            ref = outcome.removeprefix("error").strip()
            return (
                f"Internal error running `{details.get('command', '?')}` for {actor} in {room} "
                f"(reference {ref})"
            )
    return None


def alert_message(lines: Sequence[str], limit: int = MAX_LINES) -> str | None:
    """One notice for a batch of alert lines; the rest are counted, not listed."""
    if not lines:
        return None
    shown = list(lines[:limit])
    if len(lines) > limit:
        shown.append(f"…and {len(lines) - limit} more (see `audit tail` here)")
    return "\n".join(shown)


def _strings(value: Any) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []
