"""What the gateway takes from a sync response before the pipeline sees it: a room's current
state from an initial sync (what mautrix's handlers and state store get is in
test_synced_state.py). The response is the homeserver's, but the events in it were written by
room members."""

from __future__ import annotations

from typing import Any

from bot.matrix.gateway import _current_state


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
