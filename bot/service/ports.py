"""What services need from Matrix, as narrow ports (Protocols).

Services depend on these, not on `bot.matrix.gateway.MatrixGateway`: the gateway satisfies
them structurally (mypy checks it where `bot/app.py` passes the gateway in), and service tests
pass the in-memory fake in `tests/fakes/matrix.py` instead of a homeserver. Each port is named
for a need; a service asks for the smallest one that covers what it calls.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from mautrix.types import EventID, RoomID, UserID

if TYPE_CHECKING:  # types only: the archive commands use a port and start without Matrix
    from bot.matrix.effects import EffectResult
    from bot.matrix.gateway import Decrypted, SyncBatch


class RoomReader(Protocol):
    """Rooms as the homeserver (or the state store kept from /sync) has them now."""

    async def power_level(self, room_id: RoomID, user_id: UserID) -> int: ...

    async def joined_members(self, room_id: RoomID) -> list[UserID]: ...

    async def room_state(self, room_id: RoomID) -> list[dict[str, Any]]: ...

    async def is_encrypted(self, room_id: RoomID) -> bool: ...

    async def joined_rooms(self) -> list[RoomID]: ...

    async def membership(self, room_id: RoomID, user_id: UserID) -> str: ...


class BatchWrites(Protocol):
    """Crypto bookkeeping a batch deferred, written inside the batch's commit transaction."""

    async def save_batch_writes(self) -> None: ...


class Decryptor(Protocol):
    """Megolm decryption and the key bookkeeping around it.

    `decrypt` raises mautrix's `SessionNotFound` while the key has not arrived and
    `DecryptionError` when the event can never be read.
    """

    @property
    def crypto_store(self) -> BatchWrites: ...

    async def decrypt(self, raw: dict[str, Any]) -> Decrypted: ...

    def withheld_code(self, raw: dict[str, Any]) -> str | None: ...

    async def read_message_indices_ahead(self, events: Iterable[dict[str, Any]]) -> None: ...

    async def request_key(self, raw: dict[str, Any]) -> None: ...

    async def session_known(self, room_id: RoomID, session_id: str) -> bool: ...


class Invites(Protocol):
    """Answering an invite of the bot."""

    async def join(self, room_id: RoomID) -> None: ...

    async def reject_invite(self, room_id: RoomID) -> None: ...


class EventSource(Decryptor, Invites, Protocol):
    """What the event pipeline needs: events decrypted, invites answered."""


class SyncSource(Protocol):
    """The bot's account and its /sync, one batch at a time."""

    @property
    def user_id(self) -> UserID: ...

    async def sync(self, since: str | None, timeout_ms: int) -> SyncBatch: ...


class Notices(Protocol):
    """Telling a room something and removing a message: what the outbox, alerts and the
    consent flow do to rooms. With `dry_run` nothing in a room is changed (notices still go)."""

    @property
    def dry_run(self) -> bool: ...

    async def notice(
        self,
        room_id: RoomID,
        text: str,
        *,
        mentions: Sequence[UserID] = (),
        html: str | None = None,
        txn_id: str | None = None,
    ) -> str: ...

    async def redact(
        self, room_id: RoomID, event_id: EventID, reason: str, *, txn_id: str | None = None
    ) -> EffectResult: ...


class RoomHistory(Protocol):
    """A room's history as the homeserver holds it now, and the bot's power over it (for
    retention: back-fill, removal, the room's notices)."""

    async def fetch_event(self, room_id: RoomID, event_id: EventID) -> dict[str, Any] | None: ...

    async def messages_page(
        self, room_id: RoomID, token: str | None
    ) -> tuple[list[dict[str, Any]], str | None]: ...

    async def may_redact_others(self, room_id: RoomID) -> bool: ...

    async def may_send_state(self, room_id: RoomID, event_type: str) -> bool: ...

    async def purge_status(self, purge_id: str) -> tuple[str, str | None]: ...


class MatrixPort(RoomReader, EventSource, SyncSource, Protocol):
    """Every port at once: what the gateway and the test fake both provide."""
