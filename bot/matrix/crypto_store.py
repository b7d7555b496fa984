"""mautrix's Postgres crypto store, reading a sender's megolm session, device and cross-signing
keys once per batch instead of once per decrypted message (bot.batch_scope). Writes keep the
new value or forget the old one; outside a batch every call reads the store."""

from __future__ import annotations

from typing import cast

from mautrix.crypto import InboundGroupSession, PgCryptoStore
from mautrix.types import (
    CrossSigningUsage,
    DeviceID,
    DeviceIdentity,
    IdentityKey,
    RoomID,
    SessionID,
    SigningKey,
    TOFUSigningKey,
    UserID,
)

from bot.batch_scope import forget, in_batch, keep, kept, once_per_batch, take


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

    async def save_batch_writes(self) -> None:
        """Write what the batch deferred (call inside the batch's commit transaction)."""
        for key, (sender_key, session) in take("megolm-unsaved"):
            _, room_id, session_id = cast(tuple[str, RoomID, SessionID], key)
            await super().put_group_session(room_id, sender_key, session_id, session)

    async def put_cross_signing_key(
        self, user_id: UserID, usage: CrossSigningUsage, key: SigningKey
    ) -> None:
        forget("cross-signing")
        await super().put_cross_signing_key(user_id, usage, key)
