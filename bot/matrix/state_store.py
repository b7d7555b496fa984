"""mautrix's Postgres state store, with one writer at a time per room's member list.

mautrix replaces a room's whole member list (`set_members`: DELETE, then COPY) and also upserts
single members (`set_member`, `set_membership`, from its sync handlers and API calls). Run
concurrently for one room, the COPY meets a row another task inserted after the DELETE and
fails with a unique violation, which costs the event being handled. Here those writes take a
per-room lock.
"""

from __future__ import annotations

import asyncio

from mautrix.crypto.store.asyncpg import PgCryptoStateStore
from mautrix.types import Member, Membership, MemberStateEventContent, RoomID, UserID
from mautrix.util.async_db import Database


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
