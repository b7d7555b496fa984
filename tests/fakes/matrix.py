"""An in-memory Matrix for service tests: implements `bot.service.ports.MatrixPort` without a
homeserver, so a service test runs in milliseconds against real Postgres.

Rooms hold members, power levels, state and whether they are encrypted. Encrypted events are
made here: `encrypted()` returns an `m.room.encrypted` event and remembers the plaintext
`decrypt` hands back for it; `undecryptable()` makes one whose decryption raises
`SessionNotFound` (the key has not arrived, optionally withheld) or `DecryptionError`.
Joins, rejected invites, key requests and crypto saves are recorded for assertions.
Effects are recorded by `FakeEffects`; the real flows queue them in the outbox table anyway.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mautrix.errors import DecryptionError, SessionNotFound
from mautrix.types import EventID, RoomID, SessionID, UserID

from bot.matrix.effects import EffectResult
from bot.matrix.gateway import Decrypted, MatrixGateway, SyncBatch
from bot.service.ports import MatrixPort

_ids = itertools.count(1)


def new_event_id(prefix: str = "ev") -> EventID:
    return EventID(f"${prefix}{next(_ids)}")


@dataclass
class FakeRoom:
    room_id: RoomID
    members: dict[UserID, str] = field(default_factory=dict)  # user_id -> membership
    power: dict[UserID, int] = field(default_factory=dict)  # m.room.power_levels users
    users_default: int = 0
    state: list[dict[str, Any]] = field(default_factory=list)
    encrypted: bool = True

    def join(self, *user_ids: UserID) -> None:
        for user_id in user_ids:
            self.members[user_id] = "join"

    def leave(self, user_id: UserID) -> None:
        self.members[user_id] = "leave"


class FakeCryptoStore:
    """`save_batch_writes` does nothing but count (there is no crypto to save)."""

    def __init__(self) -> None:
        self.saves = 0

    async def save_batch_writes(self) -> None:
        self.saves += 1


class FakeMatrix:
    def __init__(self, user_id: UserID) -> None:
        self._user_id = user_id
        self._crypto_store = FakeCryptoStore()
        self.rooms: dict[RoomID, FakeRoom] = {}
        self.plaintext: dict[str, Decrypted] = {}  # event_id -> what decrypt returns
        self.failures: dict[str, Exception] = {}  # event_id -> what decrypt raises
        self.withheld: dict[str, str] = {}  # event_id -> withheld code
        self.sessions: set[tuple[RoomID, str]] = set()  # (room_id, session_id) keys held
        self.batches: list[SyncBatch] = []  # what sync() returns, in order
        self.joined: list[RoomID] = []
        self.rejected: list[RoomID] = []
        self.key_requests: list[str] = []
        self.decrypted: list[str] = []
        self._sent: dict[str, dict[str, Any]] = {}  # event_id -> plaintext, as sent
        self.indices_read: list[list[str]] = []

    # -- set-up ----------------------------------------------------------------------------

    def room(
        self,
        room_id: RoomID,
        *,
        members: Iterable[UserID] = (),
        power: dict[UserID, int] | None = None,
        encrypted: bool = True,
    ) -> FakeRoom:
        """A room the bot is joined to, with `members` joined too."""
        room = FakeRoom(room_id, power=dict(power or {}), encrypted=encrypted)
        room.join(self._user_id, *members)
        self.rooms[room_id] = room
        return room

    def encrypted(
        self, plain: dict[str, Any], *, trust: str = "cross-signed", session_id: str = "s1"
    ) -> dict[str, Any]:
        """The `m.room.encrypted` event a client would send for `plain`; decrypt returns
        `plain` with `trust`."""
        raw = self._wrapped(plain, session_id)
        self.plaintext[raw["event_id"]] = Decrypted(raw=dict(plain), trust=trust)
        self.sessions.add((raw["room_id"], session_id))
        return raw

    def undecryptable(
        self,
        plain: dict[str, Any],
        *,
        missing_key: bool = True,
        withheld: str | None = None,
        session_id: str = "s-missing",
    ) -> dict[str, Any]:
        """An encrypted event the bot cannot read: its key is missing (SessionNotFound,
        withheld under `withheld` if given) or, with `missing_key=False`, it is broken
        (DecryptionError)."""
        raw = self._wrapped(plain, session_id)
        event_id = raw["event_id"]
        if missing_key:
            self.failures[event_id] = SessionNotFound(SessionID(session_id))
            if withheld is not None:
                self.withheld[event_id] = withheld
        else:
            self.failures[event_id] = DecryptionError("bad mac")
        return raw

    def key_arrives(self, event_id: str, *, trust: str = "cross-signed") -> None:
        """The missing key of an `undecryptable` event arrived: it decrypts from now on."""
        del self.failures[event_id]
        self.withheld.pop(event_id, None)
        self.plaintext[event_id] = Decrypted(raw=dict(self._sent[event_id]), trust=trust)

    def _wrapped(self, plain: dict[str, Any], session_id: str) -> dict[str, Any]:
        self._sent[plain["event_id"]] = plain
        return {
            "type": "m.room.encrypted",
            "event_id": plain["event_id"],
            "room_id": plain["room_id"],
            "sender": plain["sender"],
            "origin_server_ts": plain.get("origin_server_ts", 0),
            "content": {
                "algorithm": "m.megolm.v1.aes-sha2",
                "ciphertext": "opaque",
                "session_id": session_id,
                "sender_key": "curve-key",
                "device_id": "DEVICE",
            },
        }

    # -- SyncSource ------------------------------------------------------------------------

    @property
    def user_id(self) -> UserID:
        return self._user_id

    async def sync(self, since: str | None, timeout_ms: int) -> SyncBatch:
        if not self.batches:
            raise LookupError("FakeMatrix.sync: no batch prepared")
        return self.batches.pop(0)

    # -- Decryptor -------------------------------------------------------------------------

    @property
    def crypto_store(self) -> FakeCryptoStore:
        return self._crypto_store

    async def decrypt(self, raw: dict[str, Any]) -> Decrypted:
        event_id = raw["event_id"]
        self.decrypted.append(event_id)
        if event_id in self.failures:
            raise self.failures[event_id]
        found = self.plaintext.get(event_id)
        if found is None:
            raise DecryptionError(f"FakeMatrix: nothing prepared for {event_id}")
        return Decrypted(raw=dict(found.raw), trust=found.trust)

    def withheld_code(self, raw: dict[str, Any]) -> str | None:
        return self.withheld.get(raw.get("event_id", ""))

    async def read_message_indices_ahead(self, events: Iterable[dict[str, Any]]) -> None:
        self.indices_read.append([raw.get("event_id", "") for raw in events])

    async def request_key(self, raw: dict[str, Any]) -> None:
        self.key_requests.append(raw["event_id"])

    async def session_known(self, room_id: RoomID, session_id: str) -> bool:
        return (room_id, session_id) in self.sessions

    # -- Invites ---------------------------------------------------------------------------

    async def join(self, room_id: RoomID) -> None:
        self.joined.append(room_id)
        self.rooms.setdefault(room_id, FakeRoom(room_id)).join(self._user_id)

    async def reject_invite(self, room_id: RoomID) -> None:
        self.rejected.append(room_id)

    # -- RoomReader ------------------------------------------------------------------------

    def _room(self, room_id: RoomID) -> FakeRoom:
        room = self.rooms.get(room_id)
        if room is None:
            raise LookupError(f"FakeMatrix: no room {room_id}")
        return room

    async def power_level(self, room_id: RoomID, user_id: UserID) -> int:
        room = self._room(room_id)
        return room.power.get(user_id, room.users_default)

    async def joined_members(self, room_id: RoomID) -> list[UserID]:
        room = self._room(room_id)
        return [user for user, membership in room.members.items() if membership == "join"]

    async def room_state(self, room_id: RoomID) -> list[dict[str, Any]]:
        return list(self._room(room_id).state)

    async def is_encrypted(self, room_id: RoomID) -> bool:
        return self._room(room_id).encrypted

    async def joined_rooms(self) -> list[RoomID]:
        return [r.room_id for r in self.rooms.values() if r.members.get(self._user_id) == "join"]

    async def membership(self, room_id: RoomID, user_id: UserID) -> str:
        room = self.rooms.get(room_id)
        return room.members.get(user_id, "leave") if room is not None else "leave"


class FakeEffects:
    """Stands in for `MatrixEffects` where a service calls it directly (most effects go through
    the outbox table): notices and redactions are recorded and succeed."""

    def __init__(self, *, dry_run: bool = False) -> None:
        self.dry_run = dry_run
        self.notices: list[tuple[RoomID, str]] = []  # (room_id, text)
        self.redactions: list[tuple[RoomID, EventID]] = []  # (room_id, event_id)

    async def notice(
        self,
        room_id: RoomID,
        text: str,
        *,
        mentions: Sequence[UserID] = (),
        html: str | None = None,
        txn_id: str | None = None,
    ) -> str:
        self.notices.append((room_id, text))
        return new_event_id("notice")

    async def redact(
        self, room_id: RoomID, event_id: EventID, reason: str, *, txn_id: str | None = None
    ) -> EffectResult:
        self.redactions.append((room_id, event_id))
        if self.dry_run:
            return EffectResult(False)
        return EffectResult(True, new_event_id("redaction"))


def _gateway_is_a_port(gateway: MatrixGateway) -> MatrixPort:
    return gateway  # mypy: the real gateway satisfies every port


def _fake_is_a_port(fake: FakeMatrix) -> MatrixPort:
    return fake  # mypy: and so does the fake, so the two cannot drift apart
