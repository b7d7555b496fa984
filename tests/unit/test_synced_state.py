"""What the gateway takes from a /sync response for mautrix's state store and olm machine
(bot.matrix.state_store.synced_state, bot.matrix.gateway._crypto_only), without a database."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bot.matrix.gateway import _crypto_only
from bot.matrix.state_store import rotates_session, synced_state

BOT = "@bot:x"


def state(type_: str, key: str, **content: Any) -> dict[str, Any]:
    return {"type": type_, "state_key": key, "content": content, "sender": "@a:x"}


def test_the_last_event_of_a_kind_counts_timeline_after_state_block() -> None:
    raw = {
        "rooms": {
            "join": {
                "!a:x": {
                    "state": {"events": [state("m.room.power_levels", "", users={"@a:x": 50})]},
                    "timeline": {
                        "events": [
                            state("m.room.power_levels", "", users={"@a:x": 100}),
                            state("m.room.member", "@p:x", membership="invite"),
                            state("m.room.member", "@p:x", membership="join", displayname="P"),
                        ]
                    },
                }
            }
        }
    }
    synced = synced_state(raw, BOT, initial=True)
    assert json.loads(synced.power_levels["!a:x"])["users"] == {"@a:x": 100}
    assert [(m.user_id, m.membership, m.displayname) for m in synced.members] == [
        ("@p:x", "invite", None),
        ("@p:x", "join", "P"),
    ]
    assert synced.full_member_lists == {"!a:x"}
    assert not synced_state(raw, BOT, initial=False).full_member_lists


def test_left_rooms_give_their_timeline_and_invites_only_our_own_member_event() -> None:
    raw = {
        "rooms": {
            "leave": {
                "!l:x": {
                    "state": {"events": [state("m.room.member", "@old:x", membership="join")]},
                    "timeline": {"events": [state("m.room.member", BOT, membership="leave")]},
                }
            },
            "invite": {
                "!i:x": {
                    "invite_state": {
                        "events": [
                            state("m.room.member", "@inviter:x", membership="join"),
                            state("m.room.member", BOT, membership="invite"),
                            state("m.room.power_levels", "", users={}),
                        ]
                    }
                }
            },
        }
    }
    synced = synced_state(raw, BOT, initial=True)
    assert [(m.room_id, m.user_id, m.membership) for m in synced.members] == [
        ("!l:x", BOT, "leave"),
        ("!i:x", BOT, "invite"),
    ]
    assert synced.rooms() == set()  # nothing but members; no member list is full


def test_the_membership_an_event_replaced_comes_from_its_prev_content() -> None:
    joined = state("m.room.member", "@p:x", membership="join")
    older = {**joined, "prev_content": {"membership": "invite"}}  # top-level, as some servers
    newer = {**joined, "unsigned": {"prev_content": {"membership": "ban"}}}
    odd = {**joined, "unsigned": {"prev_content": {"membership": 7}}}
    raw = {"rooms": {"join": {"!a:x": {"timeline": {"events": [joined, older, newer, odd]}}}}}
    assert [m.prev_membership for m in synced_state(raw, BOT, initial=False).members] == [
        "leave",
        "invite",
        "ban",
        "leave",
    ]


@pytest.mark.parametrize(
    ("prev", "now", "stored", "rotates"),
    [
        ("leave", "join", None, True),
        ("leave", "join", "join", False),  # the store has it already
        ("join", "join", "leave", False),  # a profile change
        ("invite", "join", "invite", False),  # ignored by mautrix's olm machine
        ("ban", "leave", "ban", False),
        ("leave", "ban", "leave", False),
        ("join", "leave", "join", True),
        ("join", "ban", "join", True),
        ("leave", "invite", None, True),
    ],
)
def test_which_member_changes_drop_the_outbound_session(
    prev: str, now: str, stored: str | None, rotates: bool
) -> None:
    assert rotates_session(prev, now, stored) is rotates


def test_mautrix_handlers_get_key_counts_and_device_lists_only() -> None:
    raw: dict[str, Any] = {
        "next_batch": "s1",
        "device_one_time_keys_count": {"signed_curve25519": 3},
        "device_lists": {"changed": ["@p:x"]},
        "to_device": {"events": [{"type": "m.room_key"}]},
        "rooms": {"join": {"!a:x": {}}},
        "account_data": {"events": []},
    }
    assert _crypto_only(raw) == {
        "device_one_time_keys_count": {"signed_curve25519": 3},
        "device_lists": {"changed": ["@p:x"]},
    }
    assert _crypto_only({"device_lists": "junk"}) == {}
