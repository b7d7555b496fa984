"""Checkpoints: chain heads published outside the database (the management room, the
checkpoint file), which catch what a chain alone cannot show: a cut tail, a rewritten prefix
re-hashed with the key.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import hmac
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from bot.policy.audit_chain import canonical_json, format_ts


@dataclass(frozen=True)
class Checkpoint:
    """A chain head published outside the database: row `seq` carried `hash`."""

    seq: int
    hash: str


@dataclass(frozen=True)
class CheckpointCheck:
    """The chain against its checkpoints; both None when every checkpoint matches."""

    truncated_after_seq: int | None
    """The last stored seq, when a checkpoint names a later row (the tail was cut)."""
    checkpoint_mismatch_seq: int | None
    """The first checkpointed seq whose stored hash differs (history was rewritten)."""


def check_checkpoints(
    stored: Mapping[int, str], last_seq: int, checkpoints: Sequence[Checkpoint]
) -> CheckpointCheck:
    """Compare published heads with the stored hashes at their seqs (`stored`, seq → hash)."""
    truncated = mismatch = None
    for cp in sorted(checkpoints, key=lambda c: c.seq):
        if cp.seq > last_seq:
            truncated = last_seq
        elif mismatch is None and not hmac.compare_digest(stored.get(cp.seq, ""), cp.hash):
            mismatch = cp.seq
    return CheckpointCheck(truncated, mismatch)


_HASH_RE = re.compile(r"[0-9a-f]{64}")


def checkpoint_line(checkpoint: Checkpoint, ts: datetime) -> str:
    """One line of `audit.checkpoint_file`: `{"seq":..,"hash":..,"ts":..}` and a newline."""
    return (
        canonical_json({"seq": checkpoint.seq, "hash": checkpoint.hash, "ts": format_ts(ts)})
        + "\n"
    )


def parse_checkpoint_line(line: str) -> Checkpoint | None:
    """A checkpoint file line back into a Checkpoint; None if it is not one."""
    try:
        value = json.loads(line)
    except ValueError:
        return None
    if not isinstance(value, dict):
        return None
    seq, hash_ = value.get("seq"), value.get("hash")
    if type(seq) is not int or seq < 1 or not isinstance(hash_, str):
        return None
    if not _HASH_RE.fullmatch(hash_):
        return None
    return Checkpoint(seq, hash_)
