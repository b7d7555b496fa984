"""Which `m.room_key.withheld` notices count.

A withheld notice is an ordinary to-device event: anyone can send one naming any megolm
session. It counts only when it comes from the user who sent the encrypted event (the
homeserver vouches for a to-device sender) and, when both name one, for the same sender key.
The notices kept are bounded: the oldest are forgotten first.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from bot.policy.storable import storable_text

KEPT = 10_000
SESSION_ID_MAX = 256
CODE_MAX = 64


@dataclass(frozen=True)
class WithheldNotice:
    sender: str  # as the to-device event names it; compared with an event's raw sender
    sender_key: str | None
    code: str


class WithheldKeys:
    """Withheld notices by session ID, bounded."""

    def __init__(self, kept: int = KEPT) -> None:
        self.kept = kept
        self._notices: OrderedDict[str, WithheldNotice] = OrderedDict()

    def __len__(self) -> int:
        return len(self._notices)

    def note(self, sender: str, session_id: Any, sender_key: Any, code: Any) -> None:
        """Keep a notice as received; what it is worth is decided when an event needs it."""
        if not isinstance(session_id, str) or not 0 < len(session_id) <= SESSION_ID_MAX:
            return
        self._notices[session_id] = WithheldNotice(
            sender=sender,
            sender_key=sender_key if isinstance(sender_key, str) else None,
            code=storable_text(code)[:CODE_MAX] if isinstance(code, str) and code else "unknown",
        )
        self._notices.move_to_end(session_id)
        while len(self._notices) > self.kept:
            self._notices.popitem(last=False)

    def noted_by(self, event: dict[str, Any]) -> str | None:
        """Who sent the withheld notice naming this event's session, if anyone did."""
        content = event.get("content")
        session_id = content.get("session_id") if isinstance(content, dict) else None
        notice = self._notices.get(session_id) if isinstance(session_id, str) else None
        return None if notice is None else notice.sender

    def code_for(self, event: dict[str, Any]) -> str | None:
        """The withheld code for this encrypted event, if its own sender withheld the key."""
        content = event.get("content")
        if not isinstance(content, dict):
            return None
        session_id = content.get("session_id")
        notice = self._notices.get(session_id) if isinstance(session_id, str) else None
        if notice is None or notice.sender != event.get("sender"):
            return None
        event_key = content.get("sender_key")
        if notice.sender_key and isinstance(event_key, str) and notice.sender_key != event_key:
            return None
        return notice.code
