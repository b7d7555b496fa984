"""The audit chain's fast paths agree with the exact ones: stored rows checked without building
records (`ChainVerifier.feed_rows`), a batch's hashes at once (`chain_hashes`), and the HMAC
with its key schedule done once."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.policy.audit_chain import (
    GENESIS_HASH,
    AuditRecord,
    ChainVerifier,
    _HmacSha256,
    build_record,
    chain_hashes,
    derive_chain_key,
    format_ts,
    record_hash,
)
from tests.unit.test_audit_chain import CASES, Tamper, make_chain

KEY = derive_chain_key("unit-test-hmac-key-0123456789")


def stored(record: AuditRecord, *, ts_as_text: bool = True) -> tuple[Any, ...]:
    """`record` as verify reads it: details as jsonb's text (spaced), ts as Postgres's text."""
    return (
        record.seq,
        format_ts(record.ts) if ts_as_text else record.ts,
        record.actor,
        record.action,
        record.room_id,
        record.event_id,
        record.subject,
        json.dumps(record.details),
        record.prev_hash,
        record.hash,
    )


def feed_in_chunks(
    rows: Sequence[Sequence[Any]], size: int, **kwargs: Any
) -> tuple[int | None, int, str | None]:
    verifier = ChainVerifier(**kwargs)
    for start in range(0, len(rows), size):
        verifier.feed_rows(rows[start : start + size])
    return verifier.first_broken_seq, verifier.rows, verifier.head_hash


def feed_one_by_one(
    records: Sequence[AuditRecord], **kwargs: Any
) -> tuple[int | None, int, str | None]:
    verifier = ChainVerifier(**kwargs)
    for record in records:
        verifier.feed(record)
    return verifier.first_broken_seq, verifier.rows, verifier.head_hash


@pytest.mark.parametrize("size", [1, 7, 16, 17, 100])
@pytest.mark.parametrize("ts_as_text", [True, False], ids=["ts text", "ts datetime"])
@pytest.mark.parametrize(("tamper", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_rows_in_chunks_break_where_records_do(
    tamper: Tamper, expected: int | None, size: int, ts_as_text: bool
) -> None:
    """Every tampering, wherever the chunks start and end (size 16: row 17 opens a chunk)."""
    records = tamper(make_chain())
    rows = [stored(r, ts_as_text=ts_as_text) for r in records]
    result = feed_in_chunks(rows, size)
    assert result == feed_one_by_one(records)
    assert result[0] == expected


def keyed_chain(n: int, keyed_from: int) -> list[AuditRecord]:
    """Rows before `keyed_from` unkeyed (from before the keyed chain), the rest keyed."""
    records: list[AuditRecord] = []
    prev = GENESIS_HASH
    ts = datetime(2026, 11, 1, 9, 30, 0, 250_000, tzinfo=UTC)
    for seq in range(1, n + 1):
        key = KEY if seq >= keyed_from else None
        record = build_record(seq, ts, "system", "x", None, None, None, {"n": seq}, prev, key=key)
        records.append(record)
        prev = record.hash
    return records


@pytest.mark.parametrize("size", [1, 4, 5, 6, 50])
def test_keyed_boundary_inside_and_at_the_edge_of_a_chunk(size: int) -> None:
    rows = [stored(r) for r in keyed_chain(12, keyed_from=6)]
    assert feed_in_chunks(rows, size, key=KEY, keyed_from_seq=6) == (None, 12, rows[-1][-1])
    # The boundary one row later or earlier: the rows around it fail as the wrong kind.
    assert feed_in_chunks(rows, size, key=KEY, keyed_from_seq=5)[0] == 5
    assert feed_in_chunks(rows, size, key=KEY, keyed_from_seq=7)[0] == 6
    assert feed_in_chunks(rows, size, key=KEY)[0] == 1


def test_rows_the_fast_form_misses_take_the_exact_one() -> None:
    """Whole seconds (orjson drops the fraction of a datetime), another zone, tiny floats
    (json: 1e-05, orjson: 0.00001) and integers beyond 64 bits all verify, and still fail
    when changed."""
    whole = datetime(2026, 11, 1, 9, 30, tzinfo=UTC)
    cases: list[tuple[datetime, dict[str, Any]]] = [
        (whole, {"plain": "text é \u2028 \x7f"}),
        (whole.astimezone(timezone(timedelta(hours=2))), {}),
        (whole, {"waited_seconds": 2.5e-05, "ratio": 1e22}),
        (whole, {"n": 2**70, "m": -(2**64)}),
        (whole, {"nested": [{"b": 1, "a": [None, True, 1.5]}]}),
    ]
    prev, records = GENESIS_HASH, []
    for seq, (ts, details) in enumerate(cases, start=1):
        record = build_record(seq, ts, "system", "x", None, None, None, details, prev, key=KEY)
        records.append(record)
        prev = record.hash
    for ts_as_text in (True, False):
        rows = [stored(r, ts_as_text=ts_as_text) for r in records]
        assert feed_in_chunks(rows, 2, key=KEY) == (None, 5, records[-1].hash)
        for i in range(len(rows)):
            changed = list(rows)
            changed[i] = (*rows[i][:7], json.dumps({**records[i].details, "x": 1}), *rows[i][8:])
            assert feed_in_chunks(changed, 2, key=KEY)[0] == i + 1


def test_a_time_no_record_can_hold_breaks_the_chain_there() -> None:
    """Postgres gives None for a time before year 1 or after 9999: never a valid row."""
    rows = [stored(r) for r in make_chain(5)]
    rows[2] = (rows[2][0], None, *rows[2][2:])
    assert feed_in_chunks(rows, 2) == (3, 5, rows[1][-1])


@given(
    seq=st.integers(1, 2**40),
    details=st.dictionaries(
        st.text(max_size=6),
        st.none()
        | st.booleans()
        | st.integers(-(2**80), 2**80)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(alphabet=st.characters(codec="utf-8"), max_size=12),
        max_size=4,
    ),
    text=st.text(alphabet=st.characters(codec="utf-8"), max_size=12),
    microsecond=st.sampled_from([0, 1, 999_999]),
)
def test_chain_hashes_are_the_canonical_ones(
    seq: int, details: dict[str, Any], text: str, microsecond: int
) -> None:
    ts = datetime(2026, 3, 29, 1, 30, 0, microsecond, tzinfo=UTC)
    rows = [(text, "a", None, text, "s", details), ("b", text, text, None, None, {})]
    hashes = chain_hashes(seq, ts, rows, GENESIS_HASH, key=KEY)
    prev = GENESIS_HASH
    for n, ((actor, action, room_id, event_id, subject, d), hash_) in enumerate(
        zip(rows, hashes, strict=True)
    ):
        record = AuditRecord(seq + n, ts, actor, action, room_id, event_id, subject, d, prev, "")
        assert hash_ == record_hash(record, KEY)  # the exact, canonical form
        prev = hash_
        row = stored(dataclasses.replace(record, hash=hash_))
        assert (
            feed_in_chunks([row], 1, expected_prev=row[8], expected_seq=seq + n, key=KEY)[0]
            is None
        )


@given(key=st.binary(max_size=200), data=st.binary(max_size=300))
def test_hmac_with_the_key_schedule_done_once_is_hmac(key: bytes, data: bytes) -> None:
    assert _HmacSha256(key).hexdigest(data) == hmac.new(key, data, hashlib.sha256).hexdigest()
