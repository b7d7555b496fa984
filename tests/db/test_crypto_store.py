"""The crypto store's per-batch reads and deferred writes, against real Postgres."""

from __future__ import annotations

import olm
from mautrix.crypto import InboundGroupSession
from mautrix.types import IdentityKey, RoomID, SessionID, SigningKey, UserID

from bot.batch_scope import batch_scope
from bot.db.database import Databases
from bot.matrix.crypto_store import BatchCachingCryptoStore

ROOM = RoomID("!room:x")


def inbound_session() -> InboundGroupSession:
    outbound = olm.OutboundGroupSession()
    return InboundGroupSession(
        session_key=outbound.session_key,
        signing_key=SigningKey("signing"),
        sender_key=IdentityKey("sender"),
        room_id=ROOM,
    )


async def stored_session_ids(dbs: Databases) -> list[str]:
    rows = await dbs.crypto.fetch("SELECT session_id FROM crypto_megolm_inbound_session")
    return [r["session_id"] for r in rows]


async def test_a_batch_reads_a_session_once_and_saves_its_bookkeeping_with_the_commit(
    dbs: Databases,
) -> None:
    store = BatchCachingCryptoStore(UserID("@bot:x"), "pickle-key", dbs.crypto)
    await store.open()
    session = inbound_session()
    sid = SessionID(session.id)
    await store.put_group_session(ROOM, IdentityKey("sender"), sid, session)  # outside: at once
    assert await stored_session_ids(dbs) == [sid]

    await dbs.crypto.execute("DELETE FROM crypto_megolm_inbound_session")
    with batch_scope():
        await store.put_group_session(ROOM, IdentityKey("sender"), sid, session)
        assert await stored_session_ids(dbs) == []  # deferred to the batch's commit
        assert await store.get_group_session(ROOM, sid) is session  # read from the batch
        await store.save_batch_writes()
        assert await stored_session_ids(dbs) == [sid]
        await store.save_batch_writes()  # nothing left to write twice
    assert await stored_session_ids(dbs) == [sid]

    with batch_scope():  # a batch that never commits loses only the bookkeeping
        await store.put_group_session(ROOM, IdentityKey("sender"), sid, session)
    loaded = await store.get_group_session(ROOM, sid)
    assert loaded is not None and loaded.id == sid
