"""The audit log's hash chain: canonical row content, row hashes, chain verification, HMACs.

Rows are chained with HMAC-SHA256 under a key derived from `audit.hmac_key`, so whoever
can write the table but lacks the key cannot recompute the chain. Rows written before the chain
was keyed (seq < `keyed_from_seq`) carry plain SHA-256 hashes and are checked as such.

Pure: no I/O, no clock. The database layer (`bot.db.audit`) feeds rows in and out.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import orjson

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

CHAIN_KEY_SALT = b"chaperone audit_log"
CHAIN_KEY_INFO = b"chaperone audit_log chain hmac-sha256 v1"
"""HKDF labels: the chain key is distinct from the key's use for message HMACs."""


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
    utc = ts if ts.tzinfo is UTC else ts.astimezone(UTC)
    # isoformat is twice as fast as strftime (verify formats every row); same text, its
    # "+00:00" written as "Z".
    return utc.isoformat(timespec="microseconds")[:-6] + "Z"


# Made once: json.dumps with options builds a new encoder on every call (verify calls it for
# every row).
_CANONICAL = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)


def canonical_json(value: Any) -> str:
    """Sorted keys, no whitespace, non-ASCII kept as is; NaN and Infinity refused."""
    return _CANONICAL.encode(value)


def _fast_canonical_json(value: Any) -> bytes | None:
    """The same bytes as canonical_json, UTF-8, about ten times faster (orjson), for what
    verify reads back: everything but floats below 1e-4, which orjson writes as 0.00001 where
    json writes 1e-05 (the hash then differs and the caller falls back). None for what orjson
    refuses (integers beyond 64 bits)."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        return None


def _content(
    seq: int,
    ts_text: str,
    actor: str,
    action: str,
    room_id: str | None,
    event_id: str | None,
    subject: str | None,
    details: Mapping[str, Any],
    prev_hash: str,
) -> dict[str, Any]:
    """The fields a row's hash covers, by name: the one definition of the canonical row."""
    return {
        "seq": seq,
        "ts": ts_text,
        "actor": actor,
        "action": action,
        "room_id": room_id,
        "event_id": event_id,
        "subject": subject,
        "details": details,
        "prev_hash": prev_hash,
    }


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
    *,
    fast: bool = False,
) -> bytes:
    """The bytes a row's hash covers: its fields as canonical JSON, UTF-8. With `fast`,
    possibly another encoding of the same fields (see _fast_canonical_json)."""
    content = _content(
        seq, format_ts(ts), actor, action, room_id, event_id, subject, details, prev_hash
    )
    encoded = _fast_canonical_json(content) if fast else None
    return encoded if encoded is not None else canonical_json(content).encode("utf-8")


def _key_bytes(key: bytes | str) -> bytes:
    key_bytes = key.encode("utf-8") if isinstance(key, str) else key
    if not key_bytes:
        # An empty key makes the "HMAC" a plain hash anyone can recompute from a guess.
        raise ValueError("audit HMAC key must not be empty")
    return key_bytes


def derive_chain_key(hmac_key: bytes | str) -> bytes:
    """The chain's key: HKDF-SHA256 (RFC 5869) of `audit.hmac_key` with fixed labels."""
    prk = hmac.new(CHAIN_KEY_SALT, _key_bytes(hmac_key), hashlib.sha256).digest()
    return hmac.new(prk, CHAIN_KEY_INFO + b"\x01", hashlib.sha256).digest()


def compute_hash(prev_hash: str, content: bytes, key: bytes | None = None) -> str:
    """Hex HMAC-SHA256 under `key` over the previous row's hash then this row's content.

    Without a key: plain SHA-256, the form of rows written before the chain was keyed.
    """
    return _hasher(key)(prev_hash.encode("ascii") + content)


def _sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@lru_cache(maxsize=8)
def _hasher(key: bytes | None) -> Callable[[bytes], str]:
    """The row hash function under `key` (None: plain SHA-256)."""
    return _sha256_hex if key is None else _HmacSha256(key).hexdigest


_BLOCK = 64  # SHA-256's block size
_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))


class _HmacSha256:
    """HMAC-SHA256 (RFC 2104) under one key, as `hmac.new(key, data, sha256).hexdigest()`.

    Both padded keys are hashed once; a row then copies two plain hash states, twice as fast
    as copying an `hmac.HMAC` (verify hashes every row; a unit test keeps the digests equal).
    """

    def __init__(self, key: bytes) -> None:
        if len(key) > _BLOCK:
            key = hashlib.sha256(key).digest()
        key = key.ljust(_BLOCK, b"\0")
        self._inner = hashlib.sha256(key.translate(_IPAD))
        self._outer = hashlib.sha256(key.translate(_OPAD))

    def hexdigest(self, data: bytes) -> str:
        inner = self._inner.copy()
        inner.update(data)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.hexdigest()


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
    *,
    key: bytes | None = None,
) -> AuditRecord:
    """A record with its hash filled in, ready to store as the chain's next row.

    `key` is the chain key (`derive_chain_key`); None builds an old, unkeyed row.
    """
    details = dict(details)
    fields = (actor, action, room_id, event_id, subject, details)
    return AuditRecord(
        seq=seq,
        ts=ts,
        actor=actor,
        action=action,
        room_id=room_id,
        event_id=event_id,
        subject=subject,
        details=details,
        prev_hash=prev_hash,
        hash=chain_hashes(seq, ts, [fields], prev_hash, key=key)[0],
    )


NewRow = tuple[str, str, str | None, str | None, str | None, dict[str, Any]]
"""A row to append, without what the chain gives it: actor, action, room_id, event_id, subject,
details."""


def chain_hashes(
    first_seq: int,
    ts: datetime,
    rows: Iterable[NewRow],
    prev_hash: str,
    *,
    key: bytes | None = None,
) -> list[str]:
    """The hashes of `rows` stored as seqs `first_seq`, `first_seq + 1`, ... at `ts`, the first
    after a row hashed `prev_hash`: `build_record`'s hashes, the timestamp formatted once.

    `key` is the chain key (`derive_chain_key`); None hashes old, unkeyed rows.
    """
    ts_text = format_ts(ts)
    mac = _hasher(key)
    hashes = []
    for seq, (actor, action, room_id, event_id, subject, details) in enumerate(rows, first_seq):
        content = _content(
            seq, ts_text, actor, action, room_id, event_id, subject, details, prev_hash
        )
        # The fast encoding is the exact one whenever no float is involved (a property test
        # keeps it so); integers it refuses fall back by themselves.
        encoded = None if contains_float(details) else _fast_canonical_json(content)
        if encoded is None:
            encoded = canonical_json(content).encode("utf-8")
        prev_hash = mac(prev_hash.encode("ascii") + encoded)
        hashes.append(prev_hash)
    return hashes


def contains_float(value: Any) -> bool:
    """Whether a float is anywhere in `value` (the one type whose JSON forms differ)."""
    kind = type(value)
    if kind is float:
        return True
    if kind is dict:
        value = value.values()
    elif kind is not list and kind is not tuple:
        return isinstance(value, float)
    for item in value:
        kind = type(item)
        if kind is float or (kind in _CONTAINERS and contains_float(item)):
            return True
        if kind not in _PLAIN and isinstance(item, float):  # a float subclass
            return True
    return False


_CONTAINERS = {dict, list, tuple}
_PLAIN = {str, int, bool, type(None), dict, list, tuple}


def record_hash(record: AuditRecord, key: bytes | None = None, *, fast: bool = False) -> str:
    """The hash `record` ought to carry under chain key `key` (None: unkeyed SHA-256).
    With `fast`, a cheaper encoding that gives the same hash for almost every row; a mismatch
    then proves nothing until the exact form is tried."""
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
        fast=fast,
    )
    return compute_hash(record.prev_hash, content, key)


class ChainVerifier:
    """Checks records one at a time, in seq order, so a long chain can be streamed.

    With `key`, rows from `keyed_from_seq` on must carry HMACs under it; earlier rows (written
    before the chain was keyed) plain SHA-256. Without a key every row is checked unkeyed.
    """

    def __init__(
        self,
        expected_prev: str = GENESIS_HASH,
        expected_seq: int = 1,
        *,
        key: bytes | None = None,
        keyed_from_seq: int = 1,
    ) -> None:
        self._expected_prev = expected_prev
        self._expected_seq = expected_seq
        self._key = key
        self._keyed_from_seq = keyed_from_seq
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
            or not self._hash_ok(record)
        ):
            self.first_broken_seq = record.seq
            return False
        self._expected_prev = record.hash
        self._expected_seq = record.seq + 1
        self.head_hash = record.hash
        return True

    def feed_rows(self, rows: Sequence[Sequence[Any]]) -> bool:
        """Check the next stored rows as `feed` checks records; False once the chain is broken.

        Each row holds RECORD_FIELDS in order, its details as the JSON text the database
        returns, its ts a datetime or the text `format_ts` makes of it (None: a time no record
        can hold, such as one before year 1). A row is first hashed as read, encoded by orjson,
        without building a record: the canonical bytes for every row but a few (floats, a
        datetime on a whole second), which `feed`'s encodings then decide.
        """
        self.rows += len(rows)
        if self.first_broken_seq is not None:
            return False
        keyed, plain, keyed_from = _hasher(self._key), _hasher(None), self._keyed_from_seq
        expected_seq, expected_prev = self._expected_seq, self._expected_prev
        dumps, loads, same = orjson.dumps, orjson.loads, hmac.compare_digest
        for row in rows:
            seq, ts, actor, action, room_id, event_id, subject, details, prev_hash, hash_ = row
            if seq != expected_seq or prev_hash != expected_prev:
                self.first_broken_seq = seq
                break
            try:
                content = dumps(
                    {
                        "action": action,
                        "actor": actor,
                        "details": loads(details),
                        "event_id": event_id,
                        "prev_hash": prev_hash,
                        "room_id": room_id,
                        "seq": seq,
                        "subject": subject,
                        "ts": ts,
                    },
                    option=_ROW_OPTIONS,
                )
            except (TypeError, orjson.JSONDecodeError):
                content = b""  # orjson refuses it: the exact form decides
            mac = keyed if seq >= keyed_from else plain
            if not same(hash_, mac(prev_hash.encode("ascii") + content)) and not self._row_ok(row):
                self.first_broken_seq = seq
                break
            expected_seq, expected_prev = seq + 1, hash_
        if expected_seq != self._expected_seq:
            self._expected_seq, self._expected_prev = expected_seq, expected_prev
            self.head_hash = expected_prev
        return self.first_broken_seq is None

    def _row_ok(self, row: Sequence[Any]) -> bool:
        """`feed`'s check of the hash of a stored row the fast form did not match."""
        record = _stored_record(row)
        return record is not None and self._hash_ok(record)

    def _hash_ok(self, record: AuditRecord) -> bool:
        key = self._key_for(record.seq)
        return hmac.compare_digest(
            record.hash, record_hash(record, key, fast=True)
        ) or hmac.compare_digest(record.hash, record_hash(record, key))

    def _key_for(self, seq: int) -> bytes | None:
        return self._key if seq >= self._keyed_from_seq else None


_ROW_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_UTC_Z
"""A stored row's content as orjson writes it: keys sorted, a UTC timestamp ending in Z."""


def _stored_record(row: Sequence[Any]) -> AuditRecord | None:
    """A stored row as a record, its details read by json (exactly, large integers too); None
    when its time is one no record can hold."""
    seq, ts, actor, action, room_id, event_id, subject, details, prev_hash, hash_ = row
    if ts is None:
        return None
    return AuditRecord(
        seq=seq,
        ts=datetime.fromisoformat(ts) if isinstance(ts, str) else ts,
        actor=actor,
        action=action,
        room_id=room_id,
        event_id=event_id,
        subject=subject,
        details=json.loads(details) if isinstance(details, str) else dict(details),
        prev_hash=prev_hash,
        hash=hash_,
    )


def first_broken(
    records: Iterable[AuditRecord],
    expected_prev: str = GENESIS_HASH,
    expected_seq: int = 1,
    *,
    key: bytes | None = None,
    keyed_from_seq: int = 1,
) -> int | None:
    """The first seq that breaks the chain (gap, wrong prev_hash, wrong hash), or None."""
    verifier = ChainVerifier(expected_prev, expected_seq, key=key, keyed_from_seq=keyed_from_seq)
    for record in records:
        if not verifier.feed(record):
            return verifier.first_broken_seq
    return None


def message_hmac(key: bytes | str, body: str) -> str:
    """Hex HMAC-SHA256 of a message body, the only trace of a message the audit log keeps.
    A lone surrogate (valid JSON, not UTF-8) is encoded as it stands ("surrogatepass"), so
    any body gets its HMAC and the same body always the same one."""
    data = body.encode("utf-8", "surrogatepass")
    return hmac.new(_key_bytes(key), data, hashlib.sha256).hexdigest()
