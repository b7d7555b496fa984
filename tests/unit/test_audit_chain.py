"""The audit hash chain: canonical content, hashes, verification, message HMACs."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.policy.audit_chain import (
    GENESIS_HASH,
    AuditRecord,
    ChainVerifier,
    _fast_canonical_json,
    build_record,
    canonical_content,
    canonical_json,
    compute_hash,
    derive_chain_key,
    first_broken,
    message_hmac,
    record_hash,
)

Chain = list[AuditRecord]
Tamper = Callable[[Chain], Chain]

T0 = datetime(2024, 3, 31, 0, 59, 59, 123456, tzinfo=UTC)


def make_chain(n: int = 30) -> list[AuditRecord]:
    records: list[AuditRecord] = []
    prev = GENESIS_HASH
    for seq in range(1, n + 1):
        record = build_record(
            seq,
            T0 + timedelta(seconds=seq),
            "@therapist:clinic.example" if seq % 2 else "system",
            "message.sent",
            "!room:clinic.example",
            f"$event{seq}",
            "@patient:clinic.example",
            {"n": seq, "hmac": "ab" * 32},
            prev,
        )
        records.append(record)
        prev = record.hash
    return records


def rehash(record: AuditRecord, **changes: object) -> AuditRecord:
    """A record with changed fields and a hash that matches them (a careful forger)."""
    changed = dataclasses.replace(record, **changes)  # type: ignore[arg-type]
    return dataclasses.replace(changed, hash=record_hash(changed))


def at(index: int, fn: Callable[[AuditRecord], AuditRecord]) -> Tamper:
    def apply(chain: list[AuditRecord]) -> list[AuditRecord]:
        chain = list(chain)
        chain[index] = fn(chain[index])
        return chain

    return apply


def swap(i: int, j: int) -> Tamper:
    def apply(chain: list[AuditRecord]) -> list[AuditRecord]:
        chain = list(chain)
        chain[i], chain[j] = chain[j], chain[i]
        return chain

    return apply


def delete(i: int) -> Tamper:
    return lambda chain: chain[:i] + chain[i + 1 :]


R17 = 16  # list index of the row with seq 17

CASES: list[tuple[str, Tamper, int | None]] = [
    ("intact", lambda c: c, None),
    ("empty", lambda c: [], None),
    (
        "details altered at 17",
        at(R17, lambda r: dataclasses.replace(r, details={**r.details, "n": 999})),
        17,
    ),
    ("actor altered at 17", at(R17, lambda r: dataclasses.replace(r, actor="@mallory:x")), 17),
    ("ts altered at 17", at(R17, lambda r: dataclasses.replace(r, ts=r.ts + timedelta(0, 1))), 17),
    ("room_id nulled at 17", at(R17, lambda r: dataclasses.replace(r, room_id=None)), 17),
    ("hash altered at 17", at(R17, lambda r: dataclasses.replace(r, hash="f" * 64)), 17),
    ("17 altered and rehashed: 18 no longer links", at(R17, lambda r: rehash(r, action="x")), 18),
    ("wrong prev_hash at 5 (hash recomputed)", at(4, lambda r: rehash(r, prev_hash="1" * 64)), 5),
    ("row 17 deleted", delete(R17), 18),
    ("first row deleted", delete(0), 2),
    ("last row deleted", delete(29), None),  # the tail needs an outside anchor
    ("rows 10 and 11 reordered", swap(9, 10), 11),
    ("row 12 duplicated", lambda c: c[:12] + [c[11]] + c[12:], 12),
    ("seq renumbered at 20", at(19, lambda r: rehash(r, seq=21)), 21),
]


@pytest.mark.parametrize(("tamper", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_first_broken(tamper: Tamper, expected: int | None) -> None:
    assert first_broken(tamper(make_chain())) == expected


def test_first_broken_resumes_from_a_known_point() -> None:
    chain = make_chain()
    assert first_broken(chain[10:], expected_prev=chain[9].hash, expected_seq=11) is None
    assert first_broken(chain[10:]) == 11
    assert first_broken(chain[10:], expected_prev=chain[8].hash, expected_seq=11) == 11


def test_verifier_counts_every_row_and_keeps_the_first_break() -> None:
    chain = make_chain()
    chain[4] = dataclasses.replace(chain[4], details={})
    chain[20] = dataclasses.replace(chain[20], details={})
    verifier = ChainVerifier()
    results = [verifier.feed(r) for r in chain]
    assert results == [True] * 4 + [False] * 26
    assert (verifier.rows, verifier.first_broken_seq) == (30, 5)
    assert verifier.head_hash == chain[3].hash


def test_build_record_links_to_prev_hash() -> None:
    chain = make_chain(3)
    assert chain[0].prev_hash == GENESIS_HASH
    assert [r.prev_hash for r in chain[1:]] == [r.hash for r in chain[:-1]]
    assert all(r.hash == record_hash(r) for r in chain)


def test_canonical_content_golden() -> None:
    content = canonical_content(
        7,
        datetime(2024, 5, 1, 11, 30, tzinfo=timezone(timedelta(hours=2))),
        "@Zoë:clinic.example",
        "consent.granted",
        "!r:clinic.example",
        None,
        None,
        {"b": [1, 2], "a": {"y": True, "x": None}},
        GENESIS_HASH,
    )
    assert (
        content
        == (
            '{"action":"consent.granted","actor":"@Zoë:clinic.example",'
            '"details":{"a":{"x":null,"y":true},"b":[1,2]},"event_id":null,'
            f'"prev_hash":"{GENESIS_HASH}","room_id":"!r:clinic.example","seq":7,'
            '"subject":null,"ts":"2024-05-01T09:30:00.000000Z"}'
        ).encode()
    )


def test_canonical_content_ignores_key_order_and_zone() -> None:
    args = (1, T0, "a", "b", None, None, None)
    local = T0.astimezone(timezone(timedelta(hours=-5)))
    assert canonical_content(*args, {"x": 1, "y": 2}, GENESIS_HASH) == canonical_content(
        1, local, "a", "b", None, None, None, {"y": 2, "x": 1}, GENESIS_HASH
    )


@pytest.mark.parametrize(
    ("ts", "details"),
    [
        (datetime(2024, 1, 1), {}),  # naive: ambiguous
        (T0, {"x": float("nan")}),
        (T0, {"x": object()}),
    ],
    ids=["naive ts", "NaN", "not JSON"],
)
def test_canonical_content_refuses_ambiguous_input(
    ts: datetime, details: dict[str, object]
) -> None:
    with pytest.raises((ValueError, TypeError)):
        canonical_content(1, ts, "a", "b", None, None, None, details, GENESIS_HASH)


def test_compute_hash_is_sha256_of_prev_then_content() -> None:
    content = b'{"seq":1}'
    expected = hashlib.sha256(GENESIS_HASH.encode() + content).hexdigest()
    assert compute_hash(GENESIS_HASH, content) == expected
    assert compute_hash("1" * 64, content) != expected


def test_message_hmac_rfc4231_case_2() -> None:
    expected = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    assert message_hmac("Jefe", "what do ya want for nothing?") == expected
    assert message_hmac(b"Jefe", "what do ya want for nothing?") == expected


@pytest.mark.parametrize("key", ["", b""])
def test_message_hmac_refuses_empty_key(key: str | bytes) -> None:
    with pytest.raises(ValueError):
        message_hmac(key, "hello")


def test_message_hmac_differs_by_key_and_body() -> None:
    assert message_hmac("k1", "hello") != message_hmac("k2", "hello")
    assert message_hmac("k1", "hello") != message_hmac("k1", "hello ")


@given(
    index=st.integers(min_value=0, max_value=29),
    field=st.sampled_from(["actor", "action", "room_id", "event_id", "subject"]),
    value=st.text(max_size=20),
)
def test_any_single_field_change_is_caught_at_that_row(index: int, field: str, value: str) -> None:
    chain = make_chain()
    original = chain[index]
    if getattr(original, field) == value:
        return
    chain[index] = dataclasses.replace(original, **{field: value})  # type: ignore[arg-type]
    assert first_broken(chain) == original.seq


def test_verify_fast_path_accepts_rows_whose_exact_form_differs() -> None:
    """Tiny floats (json: 1e-05, orjson: 0.00001) and integers beyond 64 bits take the exact
    form; verify still accepts them, and still refuses a changed row."""
    key = derive_chain_key("unit-test-hmac-key-0123456789")
    ts = datetime(2026, 11, 1, 9, 30, tzinfo=UTC)
    prev, records = GENESIS_HASH, []
    cases: list[dict[str, Any]] = [
        {"waited_seconds": 2.5e-05},
        {"n": 2**70},
        {"plain": "text é \u2028"},
    ]
    for seq, details in enumerate(cases, start=1):
        record = build_record(seq, ts, "system", "x", None, None, None, details, prev, key=key)
        records.append(record)
        prev = record.hash
    verifier = ChainVerifier(key=key)
    assert all(verifier.feed(r) for r in records)
    changed = dataclasses.replace(records[0], details={"waited_seconds": 2.6e-05})
    assert ChainVerifier(key=key).feed(changed) is False


@given(
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers(-(2**63), 2**63 - 1)
        | st.text(alphabet=st.characters(codec="utf-8"), max_size=20),
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
        ),
        max_leaves=16,
    )
)
def test_the_fast_canonical_form_is_the_exact_one_for_all_but_floats(value: object) -> None:
    assert _fast_canonical_json(value) == canonical_json(value).encode("utf-8")
