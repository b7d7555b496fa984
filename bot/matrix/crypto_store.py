"""mautrix's Postgres crypto store, reading a sender's megolm session, device and cross-signing
keys once per batch instead of once per decrypted message (bot.batch_scope). Writes keep the
new value or forget the old one; outside a batch every call reads the store.

Replay protection (each megolm message index of a session belongs to one event) is checked
against one read for the whole batch, and the batch's new indices are written with its audit
rows, instead of one insert per decrypted message."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from typing import Any, cast

from mautrix.crypto import InboundGroupSession, PgCryptoStore
from mautrix.types import (
    CrossSigner,
    CrossSigningUsage,
    DeviceID,
    DeviceIdentity,
    EventID,
    IdentityKey,
    RoomID,
    SessionID,
    SigningKey,
    TOFUSigningKey,
    UserID,
)

from bot.batch_scope import forget, in_batch, keep, kept, once_per_batch, take

_UNUSED = "unused"  # kept for a message index no event has claimed yet
TRUST = "trust"
"""Batch memo kind of a device's trust (bot.matrix.verification), forgotten with the keys and
signatures it is judged from."""

_INDICES_IN_USE = """
SELECT m.sender_key, m.session_id, m."index", m.event_id, m.timestamp
FROM crypto_message_index m
JOIN unnest($1::bpchar[], $2::bpchar[], $3::int[]) AS c(sender_key, session_id, idx)
  ON m.sender_key = c.sender_key AND m.session_id = c.session_id AND m."index" = c.idx
"""

_CLAIM_INDICES = """
INSERT INTO crypto_message_index (sender_key, session_id, "index", event_id, timestamp)
SELECT * FROM unnest($1::bpchar[], $2::bpchar[], $3::int[], $4::text[], $5::bigint[])
ON CONFLICT DO NOTHING
"""


def claimed_message_index(ciphertext: object) -> int | None:
    """The message index a megolm ciphertext's header states (version byte 3, then field 1 as a
    varint), read without decrypting; None if it does not parse. Unauthenticated: only a hint
    for what to read ahead, never a decision."""
    if not isinstance(ciphertext, str) or len(ciphertext) < 12:
        return None
    try:
        head = base64.b64decode(ciphertext[:12], validate=True)
    except (ValueError, binascii.Error):
        return None
    if head[0] != 3 or head[1] != 0x08:
        return None
    index = 0
    for shift, byte in zip(range(0, 35, 7), head[2:], strict=False):
        index |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return index
    return None


class BatchCachingCryptoStore(PgCryptoStore):
    async def find_device_by_key(
        self, user_id: UserID, identity_key: IdentityKey
    ) -> DeviceIdentity | None:
        return await once_per_batch(
            ("devices", user_id, identity_key),
            lambda: super(BatchCachingCryptoStore, self).find_device_by_key(user_id, identity_key),
        )

    async def put_devices(self, user_id: UserID, devices: dict[DeviceID, DeviceIdentity]) -> None:
        forget("devices")
        forget(TRUST)
        await super().put_devices(user_id, devices)

    async def get_cross_signing_keys(
        self, user_id: UserID
    ) -> dict[CrossSigningUsage, TOFUSigningKey]:
        keys = await once_per_batch(
            ("cross-signing", user_id),
            lambda: super(BatchCachingCryptoStore, self).get_cross_signing_keys(user_id),
        )
        return dict(keys)

    async def get_group_session(
        self, room_id: RoomID, session_id: SessionID
    ) -> InboundGroupSession | None:
        """Read once per batch (every message of a sender's session asks for it); a session
        not found is asked again, as its key may arrive meanwhile."""
        session: InboundGroupSession | None = kept(("megolm", room_id, session_id))
        if session is None:
            session = await super().get_group_session(room_id, session_id)
            if session is not None:
                keep(("megolm", room_id, session_id), session)
        return session

    async def put_group_session(
        self,
        room_id: RoomID,
        sender_key: IdentityKey,
        session_id: SessionID,
        session: InboundGroupSession,
    ) -> None:
        """Within a batch, decrypting only updates a session's ratchet bookkeeping (mautrix's
        ratcheting and deleting are off): kept, and saved once per session by
        save_batch_writes with the batch's audit rows, not once per message."""
        keep(("megolm", room_id, session_id), session)
        if in_batch():
            keep(("megolm-unsaved", room_id, session_id), (sender_key, session))
            return
        await super().put_group_session(room_id, sender_key, session_id, session)

    async def read_message_indices_ahead(
        self, claims: Iterable[tuple[RoomID, SessionID, int]]
    ) -> None:
        """Within a batch: read at once which of these (room, session, index) claims are in
        use, so validate_message_index needs no round trip per message. The sender key comes
        from the stored session, not from the (unauthenticated) event."""
        if not in_batch():
            return
        wanted: set[tuple[IdentityKey, SessionID, int]] = set()
        sessions: dict[tuple[RoomID, SessionID], InboundGroupSession | None] = {}
        for room_id, session_id, index in claims:
            if (room_id, session_id) not in sessions:  # a missing one is not kept by the batch
                sessions[room_id, session_id] = await self.get_group_session(room_id, session_id)
            if (session := sessions[room_id, session_id]) is not None:
                wanted.add((session.sender_key, session_id, index))
        if not wanted:
            return
        columns = list(zip(*wanted, strict=True))
        for claim in wanted:
            keep(("msg-index", *claim), _UNUSED)
        for row in await self.db.fetch(_INDICES_IN_USE, *columns):
            key = ("msg-index", row["sender_key"], row["session_id"], row["index"])
            keep(key, (row["event_id"], row["timestamp"]))

    async def validate_message_index(
        self,
        sender_key: IdentityKey,
        session_id: SessionID,
        event_id: EventID,
        index: int,
        timestamp: int,
    ) -> bool:
        """Whether `index` of the session is this event's (a replayed index is not)."""
        key = ("msg-index", sender_key, session_id, index)
        owner: Any = kept(key)
        if owner is None:  # not read ahead: mautrix's own insert-or-read
            valid = await super().validate_message_index(
                sender_key, session_id, event_id, index, timestamp
            )
            if valid:
                keep(key, (event_id, timestamp))
            return valid
        if owner == _UNUSED:
            keep(key, (event_id, timestamp))
            keep(("msg-index-unsaved", sender_key, session_id, index), (event_id, timestamp))
            return True
        return bool(owner == (event_id, timestamp))

    async def save_batch_writes(self) -> None:
        """Write what the batch deferred (call inside the batch's commit transaction)."""
        for key, (sender_key, session) in take("megolm-unsaved"):
            _, room_id, session_id = cast(tuple[str, RoomID, SessionID], key)
            await super().put_group_session(room_id, sender_key, session_id, session)
        claimed = [
            (*cast(tuple[str, str, str, int], key)[1:], *owner)
            for key, owner in take("msg-index-unsaved")
        ]
        if claimed:
            await self.db.execute(_CLAIM_INDICES, *zip(*claimed, strict=True))

    async def put_cross_signing_key(
        self, user_id: UserID, usage: CrossSigningUsage, key: SigningKey
    ) -> None:
        forget("cross-signing")
        forget(TRUST)
        await super().put_cross_signing_key(user_id, usage, key)

    async def put_signature(
        self, target: CrossSigner, signer: CrossSigner, signature: str
    ) -> None:
        forget(TRUST)
        await super().put_signature(target, signer, signature)
