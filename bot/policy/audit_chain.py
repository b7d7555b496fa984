"""The audit log's hash chain: canonical row content, row hashes, chain verification, HMACs.

Pure: no I/O, no clock. The database layer (`bot.db.audit`) feeds rows in and out.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

RECORD_FIELDS = (
    "seq",
    "ts",
    "actor",
    "action",
    "room_id",
    "event_id",
    "subject",
    "details",
    "prev_hash",
    "hash",
)
"""An audit row's fields in table and export order."""

GENESIS_HASH = "0" * 64
"""The `prev_hash` of the first row (seq 1)."""


@dataclass(frozen=True)
class AuditRecord:
    """One stored audit row, exactly as it is hashed."""

    seq: int
    ts: datetime
    actor: str
    action: str
    room_id: str | None
    event_id: str | None
    subject: str | None
    details: dict[str, Any]
    prev_hash: str
    hash: str


def format_ts(ts: datetime) -> str:
    """UTC ISO-8601 with microseconds, e.g. `2024-05-01T09:30:00.000000Z`."""
    if ts.tzinfo is None or ts.utcoffset() is None:
        # A naive time would hash differently depending on the machine's zone.
        raise ValueError("audit timestamps must be timezone-aware")
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical_json(value: Any) -> str:
    """Sorted keys, no whitespace, non-ASCII kept as is; NaN and Infinity refused."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def canonical_content(
    seq: int,
    ts: datetime,
    actor: str,
    action: str,
    room_id: str | None,
    event_id: str | None,
    subject: str | None,
    details: Mapping[str, Any],
    prev_hash: str,
) -> bytes:
    """The bytes a row's hash covers: its fields as canonical JSON, UTF-8."""
    content = {
        "seq": seq,
        "ts": format_ts(ts),
        "actor": actor,
        "action": action,
        "room_id": room_id,
        "event_id": event_id,
        "subject": subject,
        "details": details,
        "prev_hash": prev_hash,
    }
    return canonical_json(content).encode("utf-8")


def compute_hash(prev_hash: str, content: bytes) -> str:
    """Hex SHA-256 over the previous row's hash followed by this row's canonical content."""
    return hashlib.sha256(prev_hash.encode("ascii") + content).hexdigest()


def build_record(
    seq: int,
    ts: datetime,
    actor: str,
    action: str,
    room_id: str | None,
    event_id: str | None,
    subject: str | None,
    details: Mapping[str, Any],
    prev_hash: str,
) -> AuditRecord:
    """A record with its hash filled in, ready to store as the chain's next row."""
    unhashed = AuditRecord(
        seq=seq,
        ts=ts,
        actor=actor,
        action=action,
        room_id=room_id,
        event_id=event_id,
        subject=subject,
        details=dict(details),
        prev_hash=prev_hash,
        hash="",
    )
    return replace(unhashed, hash=record_hash(unhashed))


def record_hash(record: AuditRecord) -> str:
    """The hash `record` ought to carry, recomputed from its content."""
    content = canonical_content(
        record.seq,
        record.ts,
        record.actor,
        record.action,
        record.room_id,
        record.event_id,
        record.subject,
        record.details,
        record.prev_hash,
    )
    return compute_hash(record.prev_hash, content)


class ChainVerifier:
    """Checks records one at a time, in seq order, so a long chain can be streamed."""

    def __init__(self, expected_prev: str = GENESIS_HASH, expected_seq: int = 1) -> None:
        self._expected_prev = expected_prev
        self._expected_seq = expected_seq
        self.rows = 0
        self.first_broken_seq: int | None = None
        self.head_hash: str | None = None

    def feed(self, record: AuditRecord) -> bool:
        """Check the next record; False once the chain is broken (here or earlier)."""
        self.rows += 1
        if self.first_broken_seq is not None:
            return False
        if (
            record.seq != self._expected_seq
            or record.prev_hash != self._expected_prev
            or record.hash != record_hash(record)
        ):
            self.first_broken_seq = record.seq
            return False
        self._expected_prev = record.hash
        self._expected_seq = record.seq + 1
        self.head_hash = record.hash
        return True


def first_broken(
    records: Iterable[AuditRecord],
    expected_prev: str = GENESIS_HASH,
    expected_seq: int = 1,
) -> int | None:
    """The first seq that breaks the chain (gap, wrong prev_hash, wrong hash), or None."""
    verifier = ChainVerifier(expected_prev, expected_seq)
    for record in records:
        if not verifier.feed(record):
            return verifier.first_broken_seq
    return None


def message_hmac(key: bytes | str, body: str) -> str:
    """Hex HMAC-SHA256 of a message body, the only trace of a message the audit log keeps."""
    key_bytes = key.encode("utf-8") if isinstance(key, str) else key
    if not key_bytes:
        # An empty key makes the "HMAC" a plain hash anyone can recompute from a guess.
        raise ValueError("audit HMAC key must not be empty")
    return hmac.new(key_bytes, body.encode("utf-8"), hashlib.sha256).hexdigest()
