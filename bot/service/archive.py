"""Archive, then purge: seal a message to the clinic's archive key before it is removed, and
open the sealed copies again with the private key (`chaperone archive export`)."""

from __future__ import annotations

import getpass
import json
from collections.abc import Sequence
from functools import partial
from typing import Any, TextIO

from mautrix.errors import DecryptionError, SessionNotFound
from mautrix.types import UserID
from nacl.public import PrivateKey

from bot.clock import Clock
from bot.config import Config
from bot.db.archive import ArchiveFilter, MessageArchive
from bot.db.audit import AuditEntry, AuditLog
from bot.db.tracked_events import TrackedEvents
from bot.db.unit_of_work import UnitOfWork
from bot.policy.archive import (
    archive_record,
    key_id,
    keypair_text,
    open_sealed,
    parse_private_key,
    parse_public_key,
    public_key_of,
    seal,
)
from bot.policy.retention import TrackedEvent, to_ms
from bot.service.audit_cli import FilterError, main_database, parse_filters
from bot.service.ports import Decryptor


class Archiver:
    """Seals each message (decrypted when the bot has its key) and keeps it, audited."""

    def __init__(
        self,
        public_key_text: str,
        bot_user_id: UserID,
        decryptor: Decryptor,
        archive: MessageArchive,
        tracked: TrackedEvents,
        audit: AuditLog,
        clock: Clock,
    ) -> None:
        self.public_key = parse_public_key(public_key_text)
        self.key_id = key_id(self.public_key)
        self.decryptor = decryptor
        self.archive = archive
        self.tracked = tracked
        self.audit = audit
        self.clock = clock
        self.bot_user_id = bot_user_id

    async def _plaintext(self, raw: dict[str, Any]) -> dict[str, Any] | None:
        if raw.get("type") != "m.room.encrypted":
            return None
        try:
            return (await self.decryptor.decrypt(raw)).raw
        except (SessionNotFound, DecryptionError):
            return None  # keys the bot never had: the ciphertext is sealed instead

    async def archive_event(self, event: TrackedEvent, raw: dict[str, Any]) -> bool:
        """Seal and store one message (once); returns whether its content was readable."""
        record = archive_record(raw, await self._plaintext(raw), to_ms(self.clock.now()))
        sealed = seal(self.public_key, record)
        entry = AuditEntry(
            actor=self.bot_user_id,
            action="message.archived",
            room_id=event.room_id,
            event_id=event.event_id,
            subject=event.sender,
            details={
                "key_id": self.key_id,
                "type": record["type"],
                "readable": record["readable"],
            },
        )
        # One unit (audit row first, then the writes); both writes are idempotent.
        await (
            UnitOfWork(self.audit, [entry])
            .then(
                partial(
                    self.archive.store,
                    event_id=event.event_id,
                    room_id=event.room_id,
                    sender=event.sender,
                    origin_ts=event.origin_ts,
                    key_id=self.key_id,
                    sealed=sealed,
                ),
                partial(self.tracked.mark_archived, event.event_id),
            )
            .commit()
        )
        return bool(record["readable"])


def generate_keypair_text() -> str:
    """A new archive key pair, as `chaperone keygen` prints it."""
    return keypair_text(bytes(PrivateKey.generate()))


def archive_filter(words: Sequence[str]) -> ArchiveFilter:
    """`room=.. user=.. since=.. until=..` (times on the message's own timestamp)."""
    if any(w.startswith("action=") for w in words):
        raise FilterError(
            "action= does not apply to the archive; expected room, user, since or until"
        )
    parsed = parse_filters(words)
    return ArchiveFilter(
        room_id=parsed.room_id,
        sender=parsed.user,
        since_ms=to_ms(parsed.since) if parsed.since else None,
        until_ms=to_ms(parsed.until) if parsed.until else None,
    )


async def export_archive(
    config: Config, private_key_text: str, where: ArchiveFilter, out: TextIO
) -> tuple[int, int]:
    """Print each opened record as one JSON line; returns (opened, not openable with this key).

    Opening the archive is itself recorded (`archive.exported`: counts and filters, no content).
    """
    private_key = parse_private_key(private_key_text)
    kid = key_id(public_key_of(private_key))
    opened = unopened = 0
    async with main_database(config) as db:
        async for row in MessageArchive(db).rows(where):
            record = open_sealed(private_key, row.sealed) if row.key_id == kid else None
            if record is None:
                unopened += 1
                continue
            out.write(json.dumps(record, sort_keys=True, ensure_ascii=False) + "\n")
            opened += 1
        await AuditLog(db, config.audit.hmac_key).append(
            [
                AuditEntry(
                    actor="system",
                    action="archive.exported",
                    room_id=where.room_id,
                    subject=where.sender,
                    details={
                        "via": "cli",
                        "os_user": getpass.getuser(),
                        "key_id": kid,
                        "opened": opened,
                        "not_opened": unopened,
                        "since_ms": where.since_ms,
                        "until_ms": where.until_ms,
                    },
                )
            ]
        )
    return opened, unopened
