"""Which audit action a membership change is."""

from __future__ import annotations

from mautrix.types import UserID


def membership_action(
    *,
    sender: UserID,
    target: UserID,
    membership: str,
    prev_membership: str | None,
    bot_user_id: UserID,
) -> str | None:
    """Map an `m.room.member` transition to its audit action, or None when nothing changed."""
    if membership == prev_membership and membership != "join":
        return None
    if membership == "join" and prev_membership == "join":
        return None  # a profile change (display name, avatar), not a membership change
    is_bot = target == bot_user_id
    if membership == "join":
        return "room.joined" if is_bot else "member.joined"
    if membership == "invite":
        return "member.invited"
    if membership == "ban":
        return "member.banned"
    if membership == "leave":
        if is_bot:
            return "room.left"
        if sender != target and prev_membership in ("join", "invite"):
            return "member.kicked"
        return "member.left"
    return None
