"""Any text in an audit field has a storable form that hashes and verifies."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from bot.policy.audit_chain import (
    GENESIS_HASH,
    build_record,
    canonical_content,
    derive_chain_key,
    first_broken,
    message_hmac,
)
from bot.policy.audit_checkpoint import Checkpoint, check_checkpoints
from bot.policy.storable import storable, storable_text

KEY = derive_chain_key("unit-test-hmac-key-0123456789")
TS = datetime(2026, 11, 1, 9, 30, tzinfo=UTC)
any_text = st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=40)


@given(
    actor=any_text, room=any_text, event=any_text, subject=any_text, key=any_text, value=any_text
)
def test_any_text_becomes_storable_and_chains(
    actor: str, room: str, event: str, subject: str, key: str, value: str
) -> None:
    details = storable({key: [value, {"nested": value}]})
    fields = [storable_text(t) for t in (actor, room, event, subject)]
    for text in (*fields, str(details)):
        assert "\x00" not in text and not any(0xD800 <= ord(c) <= 0xDFFF for c in text)
    actor_text, room_text, event_text, subject_text = fields
    row = (1, TS, actor_text, "a", room_text, event_text, subject_text, details, GENESIS_HASH)
    content = canonical_content(*row)
    assert content.decode("utf-8")  # encodable, and decodes back
    record = build_record(*row, key=KEY)
    assert first_broken([record], key=KEY) is None


def test_storable_form_is_visible_and_leaves_other_text_alone() -> None:
    assert storable_text("a\x00b\ud800c") == "a\\u0000b\\ud800c"
    assert storable_text("Grüße 😀 \\ plain") == "Grüße 😀 \\ plain"
    assert storable({"k\x00": ("\udfff",)}) == {"k\\u0000": ["\\udfff"]}


def test_chain_key_is_derived_and_distinct_from_message_hmacs() -> None:
    raw = "unit-test-hmac-key-0123456789"
    assert derive_chain_key(raw) == KEY and len(KEY) == 32
    assert KEY.hex() != message_hmac(raw, "")
    assert derive_chain_key(raw + "x") != KEY


def test_keyed_and_unkeyed_hashes_differ() -> None:
    no_details: dict[str, Any] = {}
    args = (1, TS, "system", "bot.started", None, None, None, no_details, GENESIS_HASH)
    keyed, plain = build_record(*args, key=KEY), build_record(*args)
    assert keyed.hash != plain.hash
    assert first_broken([plain], key=KEY) == 1
    assert first_broken([plain], key=KEY, keyed_from_seq=2) is None


def test_check_checkpoints() -> None:
    stored = {3: "a" * 64, 5: "b" * 64}
    ok = check_checkpoints(stored, 5, [Checkpoint(3, "a" * 64), Checkpoint(5, "b" * 64)])
    assert (ok.truncated_after_seq, ok.checkpoint_mismatch_seq) == (None, None)
    cut = check_checkpoints(stored, 5, [Checkpoint(9, "c" * 64)])
    assert cut.truncated_after_seq == 5
    changed = check_checkpoints(stored, 5, [Checkpoint(3, "f" * 64), Checkpoint(5, "0" * 64)])
    assert changed.checkpoint_mismatch_seq == 3
