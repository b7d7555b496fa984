"""mautrix's Postgres crypto store, reading a sender's device and cross-signing keys once per
batch instead of once per decrypted message (bot.batch_scope); writes forget them."""

from __future__ import annotations

from mautrix.crypto import PgCryptoStore
from mautrix.types import (
    CrossSigningUsage,
    DeviceID,
    DeviceIdentity,
    IdentityKey,
    SigningKey,
    TOFUSigningKey,
    UserID,
)

from bot.batch_scope import forget, once_per_batch


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

    async def put_cross_signing_key(
        self, user_id: UserID, usage: CrossSigningUsage, key: SigningKey
    ) -> None:
        forget("cross-signing")
        await super().put_cross_signing_key(user_id, usage, key)
