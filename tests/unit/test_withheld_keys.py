"""Which key-withheld notices count: only the event's own sender's, bounded."""

from __future__ import annotations

from bot.policy.withheld import WithheldKeys

ADMIN, MALLORY = "@admin:x", "@mallory:x"


def encrypted(sender: str, session_id: str, sender_key: str = "KEY") -> dict[str, object]:
    return {"sender": sender, "content": {"session_id": session_id, "sender_key": sender_key}}


def test_a_notice_counts_only_from_the_events_own_sender_and_key() -> None:
    keys = WithheldKeys()
    keys.note(MALLORY, "s1", "KEY", "m.unverified")  # forged: names the admin's session
    assert keys.code_for(encrypted(ADMIN, "s1")) is None
    assert keys.noted_by(encrypted(ADMIN, "s1")) == MALLORY  # logged as ignored
    keys.note(ADMIN, "s2", "OTHER", "m.unverified")  # the admin's user, another key
    assert keys.code_for(encrypted(ADMIN, "s2")) is None
    keys.note(ADMIN, "s3", "KEY", "m.unverified")
    assert keys.code_for(encrypted(ADMIN, "s3")) == "m.unverified"
    assert keys.code_for(encrypted(MALLORY, "s3")) is None


def test_hostile_fields_are_refused_or_made_storable() -> None:
    keys = WithheldKeys()
    keys.note(ADMIN, "x" * 10_000, "KEY", "m.unverified")  # an oversize session ID
    keys.note(ADMIN, ["not", "a", "string"], "KEY", "m.unverified")
    assert len(keys) == 0
    keys.note(ADMIN, "s", 42, "m.bad\x00" + "c" * 500)
    code = keys.code_for(encrypted(ADMIN, "s"))
    assert code is not None and "\x00" not in code and len(code) <= 64
    assert keys.code_for({"sender": ADMIN, "content": "not an object"}) is None


def test_the_notices_kept_are_bounded_oldest_forgotten_first() -> None:
    keys = WithheldKeys(kept=100)
    for i in range(1_000):
        keys.note(MALLORY, f"s{i}", "KEY", "m.unverified")
    assert len(keys) == 100
    assert keys.code_for(encrypted(MALLORY, "s0")) is None
    assert keys.code_for(encrypted(MALLORY, "s999")) == "m.unverified"
