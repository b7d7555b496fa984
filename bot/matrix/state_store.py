"""mautrix's Postgres state store, with one writer at a time per room's member list, and a sync
response's room state written in a few statements instead of one or two per event.

mautrix replaces a room's whole member list (`set_members`: DELETE, then COPY) and also upserts
single members (`set_member`, `set_membership`, from API calls). Run concurrently for one room,
the COPY meets a row another task inserted after the DELETE and fails with a unique violation,
which costs the event being handled. Here those writes take a per-room lock.

mautrix's own sync handlers write each state event of a sync on its own (a member event: a
read and an upsert, plus a read of the room's encryption for its olm machine), so a first sync
of 1,000 rooms made some 10,000 round trips. `synced_state` takes what those handlers would
store from the raw response, and `apply_sync` stores it in one transaction.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
from collections.abc import Iterable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any, cast

from mautrix.crypto.store.asyncpg import PgCryptoStateStore
from mautrix.types import (
    JSON,
    Member,
    Membership,
    MemberStateEventContent,
    PowerLevelStateEventContent,
    RoomEncryptionStateEventContent,
    RoomID,
    StateEvent,
    UserID,
)
from mautrix.util.async_db import Connection, Database

from bot.policy.storable import is_storable_text, storable_text

log = logging.getLogger("chaperone.matrix")

MEMBERSHIPS = frozenset(m.value for m in Membership)
# Membership changes after which mautrix's olm machine keeps a room's outbound megolm session
# (OlmMachine.handle_member_event): every other change makes it start a new one.
_KEEPS_SESSION = {"invite": "join", "ban": "leave", "leave": "ban"}


@dataclass(frozen=True)
class MemberChange:
    """One member event, in sync order."""

    room_id: str
    user_id: str
    membership: str
    displayname: str | None
    avatar_url: str | None
    prev_membership: str
    """The membership the event itself says it replaced (`leave` when it names none)."""


@dataclass
class SyncedState:
    """What mautrix's state store keeps from a sync: per room the last power levels, create
    event and encryption (as mautrix serializes them), and every member event in order."""

    power_levels: dict[str, str] = field(default_factory=dict)
    create: dict[str, str] = field(default_factory=dict)
    encryption: dict[str, str] = field(default_factory=dict)
    members: list[MemberChange] = field(default_factory=list)
    full_member_lists: set[str] = field(default_factory=set)
    """Rooms whose every member event the sync carried (an initial sync's joined rooms)."""

    def rooms(self) -> set[str]:
        return {*self.power_levels, *self.create, *self.encryption, *self.full_member_lists}


def synced_state(raw: dict[str, Any], own_user_id: str, initial: bool) -> SyncedState:
    """The state events of a raw /sync response that mautrix's sync handlers would store: the
    joined rooms' state and timeline, the left rooms' timeline, our own invites. An initial
    sync without lazy-loaded members carries every member of each joined room. Events that do
    not parse are skipped, as mautrix skips them."""
    state = SyncedState()
    rooms = _dict(raw.get("rooms"))
    for room_id, room in _dict(rooms.get("join")).items():
        if not _id(room_id) or not isinstance(room, dict):
            continue
        for evt in [*_events(room.get("state")), *_events(room.get("timeline"))]:
            _take(state, room_id, evt)
        if initial:
            state.full_member_lists.add(room_id)
    for room_id, room in _dict(rooms.get("leave")).items():
        if _id(room_id) and isinstance(room, dict):
            for evt in _events(room.get("timeline")):
                _take(state, room_id, evt)
    for room_id, room in _dict(rooms.get("invite")).items():
        if _id(room_id) and isinstance(room, dict):
            for evt in _events(_dict(room.get("invite_state"))):
                if evt.get("type") == "m.room.member" and evt.get("state_key") == own_user_id:
                    _take(state, room_id, evt)
    return state


def _take(state: SyncedState, room_id: str, evt: dict[str, Any]) -> None:
    kind, content = evt.get("type"), evt.get("content")
    if not isinstance(evt.get("state_key"), str) or not isinstance(content, dict):
        return
    try:
        if kind == "m.room.member":
            member = _member(room_id, evt, content)
            if member is not None:
                state.members.append(member)
        elif kind == "m.room.power_levels":
            levels = PowerLevelStateEventContent.deserialize(cast(JSON, copy.deepcopy(content)))
            state.power_levels[room_id] = json.dumps(levels.serialize())
        elif kind == "m.room.encryption":
            encryption = RoomEncryptionStateEventContent.deserialize(
                cast(JSON, copy.deepcopy(content))
            )
            state.encryption[room_id] = json.dumps(encryption.serialize())
        elif kind == "m.room.create" and evt.get("sender"):
            create = StateEvent.deserialize(cast(JSON, {**copy.deepcopy(evt), "room_id": room_id}))
            state.create[room_id] = json.dumps(create.serialize())
    except Exception:  # noqa: BLE001 - a malformed event is skipped, as mautrix skips it
        log.debug("Skipped a malformed %s state event in %s", kind, room_id)


def _member(room_id: str, evt: dict[str, Any], content: dict[str, Any]) -> MemberChange | None:
    user_id, membership = evt["state_key"], content.get("membership")
    if not _id(user_id) or membership not in MEMBERSHIPS:
        return None
    unsigned = _dict(evt.get("unsigned"))
    prev = _dict(unsigned.get("prev_content") or evt.get("prev_content")).get("membership")
    return MemberChange(
        room_id=room_id,
        user_id=user_id,
        membership=membership,
        displayname=_text(content.get("displayname")),
        avatar_url=_text(content.get("avatar_url")),
        prev_membership=prev if prev in MEMBERSHIPS else "leave",
    )


def rotates_session(prev_membership: str, membership: str, stored: str | None) -> bool:
    """Whether a member event makes mautrix's olm machine drop the room's outbound megolm
    session: a real change, not one it ignores, and not one the store already has."""
    if prev_membership == membership or _KEEPS_SESSION.get(prev_membership) == membership:
        return False
    return stored != membership


_STORED_MEMBERSHIPS = """
SELECT p.room_id, p.user_id, p.membership::text AS membership
FROM mx_user_profile p
JOIN unnest($1::text[], $2::text[]) AS c(room_id, user_id) USING (room_id, user_id)
"""

_ENCRYPTED = "SELECT room_id FROM mx_room_state WHERE room_id = ANY($1::text[]) AND is_encrypted"

_PUT_ROOMS = """
INSERT INTO mx_room_state AS s
    (room_id, is_encrypted, encryption, power_levels, create_event, has_full_member_list)
SELECT room_id, CASE WHEN encryption IS NOT NULL THEN true END, encryption, power_levels,
       create_event, CASE WHEN full_list THEN true END
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bool[])
    AS c(room_id, encryption, power_levels, create_event, full_list)
ON CONFLICT (room_id) DO UPDATE SET
    is_encrypted = COALESCE(excluded.is_encrypted, s.is_encrypted),
    encryption = COALESCE(excluded.encryption, s.encryption),
    power_levels = COALESCE(excluded.power_levels, s.power_levels),
    create_event = COALESCE(excluded.create_event, s.create_event),
    has_full_member_list = COALESCE(excluded.has_full_member_list, s.has_full_member_list)
"""

_PUT_MEMBERS = """
INSERT INTO mx_user_profile (room_id, user_id, membership, displayname, avatar_url)
SELECT room_id, user_id, membership::membership, displayname, avatar_url
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[])
    AS c(room_id, user_id, membership, displayname, avatar_url)
ON CONFLICT (room_id, user_id) DO UPDATE SET membership = excluded.membership,
    displayname = excluded.displayname, avatar_url = excluded.avatar_url
"""


class MemberListStateStore(PgCryptoStateStore):
    def __init__(self, db: Database) -> None:
        super().__init__(db)
        # One lock per room, like the gateway's per-room state locks (grows with rooms).
        self._member_locks: dict[RoomID, asyncio.Lock] = {}

    def _members_of(self, room_id: RoomID) -> asyncio.Lock:
        return self._member_locks.setdefault(room_id, asyncio.Lock())

    async def set_members(
        self,
        room_id: RoomID,
        members: dict[UserID, Member | MemberStateEventContent],
        only_membership: Membership | None = None,
    ) -> None:
        async with self._members_of(room_id):
            await super().set_members(room_id, members, only_membership)

    async def set_member(
        self, room_id: RoomID, user_id: UserID, member: Member | MemberStateEventContent
    ) -> None:
        async with self._members_of(room_id):
            await super().set_member(room_id, user_id, member)

    async def set_membership(
        self, room_id: RoomID, user_id: UserID, membership: Membership
    ) -> None:
        async with self._members_of(room_id):
            await super().set_membership(room_id, user_id, membership)

    async def apply_sync(self, state: SyncedState) -> list[RoomID]:
        """Store a sync's room state in one transaction; returns the encrypted rooms whose
        outbound megolm session a member event invalidated (mautrix's olm machine rule)."""
        members = state.members
        if not members and not state.rooms():
            return []  # most incremental syncs: no transaction for nothing
        touched = sorted({m.room_id for m in members})
        async with AsyncExitStack() as locks:
            for room_id in touched:  # the same order everywhere: no waiting in a circle
                await locks.enter_async_context(self._members_of(RoomID(room_id)))
            conn: Connection
            async with self.db.acquire() as conn, conn.transaction():
                stored: dict[tuple[str, str], str] = {}
                encrypted: set[str] = set(state.encryption)
                if members:
                    pairs = {(m.room_id, m.user_id) for m in members}
                    for row in await conn.fetch(_STORED_MEMBERSHIPS, *zip(*pairs, strict=True)):
                        stored[row["room_id"], row["user_id"]] = row["membership"]
                    encrypted |= {r["room_id"] for r in await conn.fetch(_ENCRYPTED, touched)}
                rotate = _rotated_rooms(members, stored, encrypted)
                rooms = sorted(state.rooms())
                if rooms:
                    await conn.execute(
                        _PUT_ROOMS,
                        rooms,
                        [state.encryption.get(r) for r in rooms],
                        [state.power_levels.get(r) for r in rooms],
                        [state.create.get(r) for r in rooms],
                        [r in state.full_member_lists for r in rooms],
                    )
                if members:
                    await conn.execute(_PUT_MEMBERS, *_columns(_last_of_each(members)))
        return [RoomID(r) for r in sorted(rotate)]


def _rotated_rooms(
    members: Iterable[MemberChange], stored: dict[tuple[str, str], str], encrypted: set[str]
) -> set[str]:
    """Each member event in order against what the store held just before it."""
    now = dict(stored)
    rotate = set()
    for m in members:
        key = (m.room_id, m.user_id)
        if m.room_id in encrypted and rotates_session(
            m.prev_membership, m.membership, now.get(key)
        ):
            rotate.add(m.room_id)
        now[key] = m.membership
    return rotate


def _last_of_each(members: Iterable[MemberChange]) -> list[MemberChange]:
    last = {(m.room_id, m.user_id): m for m in members}
    return [last[key] for key in sorted(last)]


def _columns(members: list[MemberChange]) -> list[list[str | None]]:
    return [
        [m.room_id for m in members],
        [m.user_id for m in members],
        [m.membership for m in members],
        [m.displayname for m in members],
        [m.avatar_url for m in members],
    ]


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _events(section: Any) -> list[dict[str, Any]]:
    events = _dict(section).get("events")
    return [e for e in events if isinstance(e, dict)] if isinstance(events, list) else []


def _id(value: Any) -> bool:
    """A Matrix ID the store can hold (the spec caps them at 255 bytes)."""
    return isinstance(value, str) and 0 < len(value) <= 255 and is_storable_text(value)


def _text(value: Any) -> str | None:
    return storable_text(value) if isinstance(value, str) else None
