"""What the gateway takes from a sync response before mautrix or the pipeline see it: a room's
current state from an initial sync, and the trimmed copy mautrix's own handlers get. The
response is the homeserver's, but the events in it were written by room members."""

from __future__ import annotations

from typing import Any

from bot.matrix.gateway import _current_state, _state_only


def state(type_: str, key: str, **content: Any) -> dict[str, Any]:
    return {"type": type_, "state_key": key, "content": content, "sender": "@a:x"}


def test_the_last_state_event_of_each_kind_counts_timeline_after_state_block() -> None:
    room = {
        "state": {"events": [state("m.room.join_rules", "", join_rule="public")]},
        "timeline": {
            "events": [
                state("m.room.join_rules", "", join_rule="invite"),
                {"type": "m.room.message", "content": {"body": "hi"}},  # not state
                state("m.room.member", "@p:x", membership="invite"),
                state("m.room.member", "@p:x", membership="join"),
            ]
        },
    }
    current = {(e["type"], e["state_key"]): e["content"] for e in _current_state(room)}
    assert current == {
        ("m.room.join_rules", ""): {"join_rule": "invite"},
        ("m.room.member", "@p:x"): {"membership": "join"},
    }


def test_malformed_sections_and_events_are_skipped_not_raised() -> None:
    hostile: list[Any] = [
        None,
        "m.room.create",
        ["not", "an", "event"],
        {"state_key": ""},  # no type
        {"type": 7, "state_key": ""},
        {"type": "x" * 300, "state_key": ""},  # longer than any event type may be
        {"type": "m.room.topic", "state_key": None},
        {"type": "m.room.topic", "state_key": 5},
        state("m.room.name", "", name="kept"),
    ]
    assert [e["type"] for e in _current_state({"timeline": {"events": hostile}})] == [
        "m.room.name"
    ]
    rooms: list[dict[str, Any]] = [
        {},
        {"state": []},
        {"timeline": "x"},
        {"state": {"events": {"a": 1}}},
    ]
    for room in rooms:
        assert _current_state(room) == []


def test_mautrix_gets_state_events_only_and_invites_untouched() -> None:
    message = {"type": "m.room.encrypted", "content": {}}
    member = state("m.room.member", "@p:x", membership="join")
    raw: dict[str, Any] = {
        "next_batch": "s1",
        "to_device": {"events": [{"type": "m.room_key"}]},
        "rooms": {
            "join": {"!a:x": {"timeline": {"events": [message, member, "junk"], "limited": True}}},
            "leave": {"!b:x": "not a room"},
            "invite": {"!c:x": {"invite_state": {"events": [member]}}},
        },
    }
    trimmed = _state_only(raw)
    assert trimmed["rooms"]["join"]["!a:x"]["timeline"] == {"events": [member], "limited": True}
    assert trimmed["rooms"]["leave"]["!b:x"] == "not a room"
    assert trimmed["rooms"]["invite"] == raw["rooms"]["invite"]
    assert trimmed["to_device"] == {"events": []}
    assert raw["rooms"]["join"]["!a:x"]["timeline"]["events"] == [message, member, "junk"]
