"""A sync's room state written to mautrix's state store in a few statements (apply_sync),
against real Postgres: the rows are those mautrix's own per-event handlers write, and the
outbound megolm sessions its olm machine would drop are named."""

from __future__ import annotations

import asyncio
import copy
from typing import Any, cast

from mautrix.types import JSON, Member, Membership, RoomID, StateEvent, UserID

from bot.db.database import Databases
from bot.matrix.state_store import MemberListStateStore, synced_state

BOT = "@bot:x"
ROOM_A, ROOM_B = "!a:x", "!b:x"


def event(type_: str, key: str, content: dict[str, Any], **extra: Any) -> dict[str, Any]:
    n = next(_ids)
    return {
        "type": type_,
        "state_key": key,
        "content": content,
        "sender": "@creator:x",
        "event_id": f"$e{n}",
        "origin_server_ts": 1_700_000_000_000 + n,
        **extra,
    }


_ids = iter(range(10**6))


def member(user: str, membership: str, prev: str | None = None, **content: Any) -> dict[str, Any]:
    extra = {"unsigned": {"prev_content": {"membership": prev}}} if prev else {}
    return event("m.room.member", user, {"membership": membership, **content}, **extra)


def room(*events: Any, state: tuple[dict[str, Any], ...] = ()) -> dict[str, Any]:
    return {"state": {"events": list(state)}, "timeline": {"events": list(events)}}


def initial_sync() -> dict[str, Any]:
    return {
        "next_batch": "s1",
        "rooms": {
            "join": {
                ROOM_A: room(
                    member("@p:x", "join", avatar_url="mxc://x/p"),
                    event("m.room.message", "", {"body": "not state"}) | {"state_key": None},
                    member("@p:x", "leave", prev="join"),
                    event("m.room.power_levels", "", {"users": {"@creator:x": 100}}),
                    state=(
                        event("m.room.create", "", {"room_version": "12"}),
                        member("@creator:x", "join", displayname="Dr Who"),
                        member(BOT, "join", prev="invite"),
                        event("m.room.encryption", "", {"algorithm": "m.megolm.v1.aes-sha2"}),
                        event("m.room.power_levels", "", {"users": {}}),
                    ),
                ),
                ROOM_B: room(member("@q:x", "invite", displayname="Q")),
            },
            "leave": {"!gone:x": room(member(BOT, "leave", prev="join"))},
            "invite": {
                "!new:x": {
                    "invite_state": {
                        "events": [
                            event("m.room.name", "", {"name": "n"}),
                            member(BOT, "invite"),
                            member("@someone:x", "join"),
                        ]
                    }
                }
            },
        },
    }


async def snapshot(dbs: Databases) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    rooms = await dbs.state.fetch(
        "SELECT room_id, is_encrypted, encryption, power_levels, create_event"
        " FROM mx_room_state ORDER BY room_id"
    )
    members = await dbs.state.fetch(
        "SELECT room_id, user_id, membership::text, displayname, avatar_url"
        " FROM mx_user_profile ORDER BY room_id, user_id"
    )
    return [tuple(r) for r in rooms], [tuple(r) for r in members]


async def mautrix_writes(store: MemberListStateStore, raw: dict[str, Any]) -> None:
    """What mautrix's sync handlers store: update_state per state event, in sync order."""
    rooms = raw["rooms"]
    for room_id, data in rooms["join"].items():
        for evt in [*data["state"]["events"], *data["timeline"]["events"]]:
            if isinstance(evt.get("state_key"), str):
                await store.update_state(_state_event(room_id, evt))
    for room_id, data in rooms["leave"].items():
        for evt in data["timeline"]["events"]:
            await store.update_state(_state_event(room_id, evt))
    for room_id, data in rooms["invite"].items():
        for evt in data["invite_state"]["events"]:
            if evt["type"] == "m.room.member" and evt["state_key"] == BOT:
                await store.update_state(_state_event(room_id, evt))


def _state_event(room_id: str, evt: dict[str, Any]) -> StateEvent:
    return StateEvent.deserialize(cast(JSON, {**copy.deepcopy(evt), "room_id": room_id}))


async def test_one_transaction_stores_what_mautrix_handlers_store_event_by_event(
    dbs: Databases,
) -> None:
    store = MemberListStateStore(dbs.state)
    raw = initial_sync()
    untouched = copy.deepcopy(raw)
    await mautrix_writes(store, raw)
    expected = await snapshot(dbs)
    await dbs.state.execute("TRUNCATE mx_room_state, mx_user_profile")

    await store.apply_sync(synced_state(raw, BOT, initial=False))
    assert await snapshot(dbs) == expected
    assert raw == untouched  # the pipeline reads the same response afterwards
    levels = await store.get_power_levels(RoomID(ROOM_A))
    assert levels is not None and levels.get_user_level(UserID("@creator:x")) == 100
    create = await store.get_create(RoomID(ROOM_A))
    assert create is not None and create.sender == "@creator:x"
    assert await store.is_encrypted(RoomID(ROOM_A)) is True
    assert await store.get_member(RoomID("!new:x"), UserID(BOT)) == Member(
        membership=Membership.INVITE
    )


async def test_an_initial_sync_marks_joined_rooms_member_lists_full(dbs: Databases) -> None:
    store = MemberListStateStore(dbs.state)
    await store.apply_sync(synced_state(initial_sync(), BOT, initial=False))
    assert not await store.has_full_member_list(RoomID(ROOM_A))
    await store.apply_sync(synced_state(initial_sync(), BOT, initial=True))
    assert await store.has_full_member_list(RoomID(ROOM_A))
    assert await store.has_full_member_list(RoomID(ROOM_B))
    assert not await store.has_full_member_list(RoomID("!gone:x"))
    assert set(await store.get_members(RoomID(ROOM_A), (Membership.JOIN,))) == {
        "@creator:x",
        BOT,
    }


async def test_later_syncs_keep_what_they_do_not_mention(dbs: Databases) -> None:
    store = MemberListStateStore(dbs.state)
    await store.apply_sync(synced_state(initial_sync(), BOT, initial=True))
    before = await snapshot(dbs)
    later = {"rooms": {"join": {ROOM_A: room(member("@new:x", "join"))}}}
    await store.apply_sync(synced_state(later, BOT, initial=False))
    rooms, members = await snapshot(dbs)
    assert rooms == before[0]
    assert (ROOM_A, "@new:x", "join", None, None) in members
    assert await store.has_full_member_list(RoomID(ROOM_A))


async def test_member_changes_in_encrypted_rooms_name_the_outbound_sessions_to_drop(
    dbs: Databases,
) -> None:
    """OlmMachine.handle_member_event's rule, per event against the stored membership."""
    store = MemberListStateStore(dbs.state)
    encryption = event("m.room.encryption", "", {"algorithm": "m.megolm.v1.aes-sha2"})
    first = {
        "rooms": {
            "join": {
                ROOM_A: room(encryption, member("@p:x", "join")),
                ROOM_B: room(member("@p:x", "join")),  # not encrypted
            }
        }
    }
    assert await store.apply_sync(synced_state(first, BOT, initial=True)) == [ROOM_A]

    def sync(*events: dict[str, Any]) -> dict[str, Any]:
        return {"rooms": {"join": {ROOM_A: room(*events)}}}

    cases = [
        (sync(member("@p:x", "join", prev="join", displayname="P")), []),  # no change
        (sync(member("@p:x", "join", prev="leave")), []),  # the store has it already
        (sync(member("@i:x", "invite")), [ROOM_A]),
        (sync(member("@i:x", "join", prev="invite")), []),  # invite → join keeps the session
        (sync(member("@p:x", "leave", prev="join")), [ROOM_A]),
        (sync(member("@p:x", "ban", prev="leave")), []),  # leave → ban keeps it
        (sync(member("@k:x", "join"), member("@k:x", "join", prev="join")), [ROOM_A]),
    ]
    for raw, rotated in cases:
        assert await store.apply_sync(synced_state(raw, BOT, initial=False)) == rotated, raw


async def test_hostile_values_are_stored_escaped_or_skipped_never_failing_the_sync(
    dbs: Databases,
) -> None:
    store = MemberListStateStore(dbs.state)
    raw = {
        "rooms": {
            "join": {
                ROOM_A: room(
                    member("@p:x", "join", displayname="a\x00b\ud800", avatar_url=["not", "url"]),
                    member("@q:x", "sideways"),  # no such membership
                    member("@nul\x00:x", "join"),
                    member("@" + "x" * 300, "join"),
                    event("m.room.power_levels", "", {"users": "not a map"}),
                    event("m.room.encryption", "", {"algorithm": "m.megolm.v1.aes-sha2"}),
                    {"type": "m.room.member", "state_key": "@r:x", "content": "join"},
                    "not an event",
                ),
                "!bad\x00room:x": room(member("@p:x", "join")),
            }
        }
    }
    await store.apply_sync(synced_state(raw, BOT, initial=True))
    rooms, members = await snapshot(dbs)
    assert members == [(ROOM_A, "@p:x", "join", "a\\u0000b\\ud800", None)]
    assert [(r[0], r[1]) for r in rooms] == [(ROOM_A, True)]
    assert await store.get_power_levels(RoomID(ROOM_A)) is None


async def test_concurrent_member_list_fetch_and_sync_do_not_collide(dbs: Databases) -> None:
    """set_members (DELETE, then COPY) and a sync's upsert of the same room take turns."""
    store = MemberListStateStore(dbs.state)
    users = [f"@u{i}:x" for i in range(30)]
    members = {UserID(u): Member(membership=Membership.JOIN) for u in users}
    raw = {"rooms": {"join": {ROOM_A: room(*(member(u, "join") for u in users))}}}
    for _ in range(30):
        results = await asyncio.gather(
            store.set_members(RoomID(ROOM_A), dict(members)),
            store.apply_sync(synced_state(raw, BOT, initial=False)),
            return_exceptions=True,
        )
        assert [r for r in results if isinstance(r, BaseException)] == []
    assert set(await store.get_members(RoomID(ROOM_A), (Membership.JOIN,))) == set(users)
