"""Audit checkpoints: the chain's head published outside the database.

At least every `audit.checkpoint_interval` while the head moved, at start and at stop, the bot
appends an `audit.checkpoint` row and publishes that row's seq and hash: one JSON line appended
to `audit.checkpoint_file` (when set) and a notice in the management room (when set). `verify`
checks the chain against these heads, so a cut tail or a rewritten prefix shows. The heads this
process published are also kept in memory, for verify in chat and over HTTP.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path

from bot.db.audit import AuditEntry, AuditLog
from bot.db.unit_of_work import record_audit
from bot.policy.audit_checkpoint import Checkpoint, checkpoint_line, parse_checkpoint_line

log = logging.getLogger("chaperone.audit.checkpoints")

Publish = Callable[[str], Awaitable[object]]


def read_checkpoint_file(path: str) -> tuple[list[Checkpoint], int]:
    """The checkpoints in `path` and how many non-empty lines were not checkpoints.

    A missing file holds none (nothing was published yet, or it was removed: the caller
    reports how many it checked).
    """
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return [], 0
    checkpoints: list[Checkpoint] = []
    bad = 0
    for line in text.splitlines():
        if not line.strip():
            continue
        parsed = parse_checkpoint_line(line)
        if parsed is None:
            bad += 1
        else:
            checkpoints.append(parsed)
    return checkpoints, bad


def _append_line(path: str, line: str) -> None:
    # O_APPEND, then fsync: the line is on disk before the checkpoint counts as published.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        os.write(fd, line.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)


class AuditCheckpointer:
    """Records `audit.checkpoint` rows and publishes the head they make."""

    def __init__(
        self,
        audit: AuditLog,
        *,
        interval_seconds: int,
        checkpoint_file: str = "",
        publish: Publish | None = None,
    ) -> None:
        """`publish` posts a line to the management room (None when there is none)."""
        self.audit = audit
        self.interval_seconds = interval_seconds
        self.checkpoint_file = checkpoint_file
        self.publish = publish
        self.published: list[Checkpoint] = []

    async def checkpoint(self, reason: str) -> Checkpoint | None:
        """Record and publish a checkpoint unless the head has not moved since the last one."""
        head = await self.audit.head()
        if head is None or (self.published and head.seq == self.published[-1].seq):
            return None
        seqs = await record_audit(
            self.audit,
            [
                AuditEntry(
                    actor="system",
                    action="audit.checkpoint",
                    details={"reason": reason, "previous_head_seq": head.seq},
                )
            ],
        )
        stored = await self.audit.hash_at(seqs[0])
        new_head = await self.audit.head()
        assert stored is not None and new_head is not None
        checkpoint = Checkpoint(seqs[0], stored)
        self.published.append(checkpoint)
        await self._publish(checkpoint, new_head.ts)
        return checkpoint

    async def _publish(self, checkpoint: Checkpoint, ts: datetime) -> None:
        if self.checkpoint_file:
            try:
                await asyncio.to_thread(
                    _append_line, self.checkpoint_file, checkpoint_line(checkpoint, ts)
                )
            except OSError as e:
                log.warning(
                    "Could not append audit checkpoint seq %d to %s (%s)",
                    checkpoint.seq,
                    self.checkpoint_file,
                    type(e).__name__,
                )
        if self.publish is not None:
            try:
                await self.publish(
                    f"Audit checkpoint: seq {checkpoint.seq} hash {checkpoint.hash}"
                )
            except Exception:
                log.warning("Could not post audit checkpoint seq %d", checkpoint.seq)
        log.info("Audit checkpoint at seq %d", checkpoint.seq)

    async def run(self) -> None:
        """Checkpoint every interval while the head moves (cancel to stop)."""
        while True:
            await asyncio.sleep(self.interval_seconds)
            try:
                await self.checkpoint("interval")
            except Exception:
                log.warning("Audit checkpoint failed; retrying next interval", exc_info=True)

    def known(self) -> tuple[list[Checkpoint], int]:
        """Every checkpoint this process can read: the file's and the ones it published."""
        from_file, bad = (
            read_checkpoint_file(self.checkpoint_file) if self.checkpoint_file else ([], 0)
        )
        seen = set(from_file)
        return from_file + [cp for cp in self.published if cp not in seen], bad
