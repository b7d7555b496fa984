"""The crypto store's per-batch reads and deferred writes, against real Postgres."""

from __future__ import annotations

from mautrix.crypto import InboundGroupSession
from mautrix.types import EventID, IdentityKey, RoomID, SessionID, SigningKey, UserID
from olm.group_session import InboundGroupSession as OlmInboundGroupSession
from olm.group_session import OutboundGroupSession

from bot.batch_scope import batch_scope
from bot.db.database import Databases
from bot.matrix.crypto_store import BatchCachingCryptoStore, claimed_message_index

ROOM = RoomID("!room:x")


def inbound_session(sender: str = "sender") -> InboundGroupSession:
    outbound = OutboundGroupSession()
    return InboundGroupSession(
        session_key=outbound.session_key,
        signing_key=SigningKey("signing"),
        sender_key=IdentityKey(sender),
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


def encrypted_at(outbound: OutboundGroupSession, count: int) -> list[str]:
    return [outbound.encrypt(f"message {i}") for i in range(count)]


async def index_rows(dbs: Databases) -> list[tuple[int, str]]:
    rows = await dbs.crypto.fetch(
        'SELECT "index", event_id FROM crypto_message_index ORDER BY "index", event_id'
    )
    return [(r["index"], r["event_id"]) for r in rows]


async def test_the_header_index_is_the_one_decryption_finds() -> None:
    outbound = OutboundGroupSession()
    inbound = OlmInboundGroupSession(outbound.session_key)
    for ciphertext in encrypted_at(outbound, 300):  # indices past 127 take two varint bytes
        assert claimed_message_index(ciphertext) == inbound.decrypt(ciphertext)[1]
    for hostile in [None, 7, "", "AwgB", "not base64 at all!!", "BAgBEhA" + "A" * 40, "☃" * 20]:
        assert claimed_message_index(hostile) is None


async def test_replay_protection_reads_a_batch_ahead_and_writes_its_indices_with_the_commit(
    dbs: Databases,
) -> None:
    store = BatchCachingCryptoStore(UserID("@bot:x"), "pickle-key", dbs.crypto)
    await store.open()
    sender = IdentityKey("K" * 43)  # Curve25519 keys are 43 characters, as the column
    session = inbound_session(sender)
    sid = SessionID(session.id)
    await store.put_group_session(ROOM, sender, sid, session)
    assert await store.validate_message_index(sender, sid, EventID("$earlier"), 0, 10)

    with batch_scope():
        await store.read_message_indices_ahead([(ROOM, sid, i) for i in range(4)])
        assert not await store.validate_message_index(sender, sid, EventID("$replay0"), 0, 11)
        assert await store.validate_message_index(sender, sid, EventID("$earlier"), 0, 10)
        for i in (1, 2, 3):
            assert await store.validate_message_index(sender, sid, EventID(f"$e{i}"), i, 10 + i)
        # The same index again within the batch: the first event keeps it.
        assert not await store.validate_message_index(sender, sid, EventID("$replay2"), 2, 12)
        assert await store.validate_message_index(sender, sid, EventID("$e2"), 2, 12)
        # A header that lied about the index: not read ahead, so checked the usual way.
        assert await store.validate_message_index(sender, sid, EventID("$e9"), 9, 19)
        assert await index_rows(dbs) == [(0, "$earlier"), (9, "$e9")]  # the rest waits
        await store.save_batch_writes()
        await store.save_batch_writes()
    assert await index_rows(dbs) == [
        (0, "$earlier"),
        (1, "$e1"),
        (2, "$e2"),
        (3, "$e3"),
        (9, "$e9"),
    ]

    with batch_scope():  # the next batch sees what the last one wrote
        await store.read_message_indices_ahead([(ROOM, sid, 3), (ROOM, SessionID("unknown"), 1)])
        assert not await store.validate_message_index(sender, sid, EventID("$replay3"), 3, 13)
        assert await store.validate_message_index(sender, sid, EventID("$e3"), 3, 13)
