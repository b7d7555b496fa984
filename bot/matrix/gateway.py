"""The one place that talks to the homeserver: login, E2EE, sync, back-fill, and sending."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard, cast

import mautrix.util.logging  # noqa: F401  (installs TraceLogger before any mau.* logger exists)
from mautrix.client import SyncStream
from mautrix.client.encryption_manager import DecryptionDispatcher
from mautrix.crypto import OlmMachine
from mautrix.errors import (
    DecryptionError,
    MForbidden,
    MNotFound,
    MUnknownToken,
    SessionNotFound,
)
from mautrix.types import (
    JSON,
    DeviceID,
    EventType,
    Filter,
    FilterID,
    Membership,
    PaginationDirection,
    PowerLevelStateEventContent,
    RoomID,
    SessionID,
    StateEvent,
    SyncToken,
    ToDeviceEvent,
    UserID,
)
from nacl.exceptions import CryptoError
from nacl.secret import SecretBox

from bot.batch_scope import once_per_batch
from bot.config import Config
from bot.db.database import Databases
from bot.db.identity import IdentityStore
from bot.logging_setup import quiet_repeated_crypto_warnings
from bot.matrix.crypto_store import BatchCachingCryptoStore, claimed_message_index
from bot.matrix.facts import trust_name
from bot.matrix.megolm import MegolmDecryptor
from bot.matrix.ratelimit import PacedHTTPAPI, retry_rate_limited
from bot.matrix.state_store import MemberListStateStore, synced_state
from bot.mautrix_compat.client import QuietClient
from bot.policy.posture import creators_outrank_power_levels
from bot.policy.withheld import WithheldKeys

log = logging.getLogger("chaperone.matrix")

TIMELINE_LIMIT = 100


def sync_filter(timeline_limit: int) -> dict[str, Any]:
    """No lazy-loaded members (key sharing needs full lists) and a long timeline per room."""
    return {
        "room": {
            "timeline": {"limit": timeline_limit, "lazy_load_members": False},
            "state": {"lazy_load_members": False},
            "ephemeral": {"not_types": ["*"]},
            "account_data": {"not_types": ["*"]},
        },
        "presence": {"not_types": ["*"]},
        "account_data": {"not_types": ["*"]},
    }


# Creators of a v12 room are above every power level and not listed in m.room.power_levels.
CREATOR_POWER = 10**9


@dataclass
class Decrypted:
    """A decrypted timeline event as a raw dict, with the sender device's trust."""

    raw: dict[str, Any]
    trust: str


@dataclass
class SyncBatch:
    next_batch: str
    raw: dict[str, Any]
    # room_id -> timeline events in order, gaps from limited timelines already paged back in.
    timelines: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    invites: dict[str, dict[str, Any]] = field(default_factory=dict)
    left: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


class TokenBox:
    """Seals the stored access token with a key derived from `encryption.pickle_key`."""

    def __init__(self, pickle_key: str) -> None:
        self._box = SecretBox(hashlib.sha256(b"chaperone-token:" + pickle_key.encode()).digest())

    def seal(self, token: str) -> str:
        return base64.b64encode(bytes(self._box.encrypt(token.encode()))).decode()

    def open(self, sealed: str) -> str | None:
        try:
            return self._box.decrypt(base64.b64decode(sealed)).decode()
        except (CryptoError, ValueError):
            return None


class MatrixGateway:
    def __init__(
        self,
        config: Config,
        dbs: Databases,
        identity: IdentityStore,
        timeline_limit: int | None = None,
    ) -> None:
        self.config = config
        self.timeline_limit = timeline_limit or TIMELINE_LIMIT
        self.user_id = UserID(config.bot.user_id)
        self.crypto_store = BatchCachingCryptoStore(
            self.user_id, config.encryption.pickle_key, dbs.crypto
        )
        self.state_store = MemberListStateStore(dbs.state)
        self.client = QuietClient(
            mxid=self.user_id,
            # Keeps a 429's retry_after_ms so callers can pace to the homeserver's limits.
            api=PacedHTTPAPI(base_url=config.homeserver.url),
            state_store=self.state_store,
            sync_store=self.crypto_store,
        )
        self.identity = identity
        self.machine: OlmMachine | None = None
        self.megolm: MegolmDecryptor | None = None
        self._filter_id: str | None = None
        self._tokens = TokenBox(config.encryption.pickle_key)
        self.withheld = WithheldKeys()
        self._creators: dict[str, dict[str, Any]] = {}  # room_id -> create sender/additional
        self._state_locks: dict[str, asyncio.Lock] = {}
        # Each joined room's current state as the last sync gave it, when that was an initial
        # sync (see sync()).
        self._state_in_sync: dict[str, list[dict[str, Any]]] = {}

    @property
    def device_id(self) -> str:
        return str(self.client.device_id)

    # -- start-up ---------------------------------------------------------------------------

    async def connect(self) -> None:
        """Log in reusing the stored device, set up E2EE, and cross-sign our own device."""
        await self.crypto_store.open()
        stored_device = await self.crypto_store.get_device_id()
        await self._authenticate(stored_device)
        if stored_device and stored_device != self.client.device_id:
            log.warning(
                "Device changed from %s to %s; clearing old crypto state",
                stored_device,
                self.client.device_id,
            )
            await self.crypto_store.delete()
        machine = OlmMachine(self.client, self.crypto_store, self.state_store)
        quiet_repeated_crypto_warnings(machine.log)
        self.client.crypto = machine
        self.client.remove_dispatcher(DecryptionDispatcher)  # we decrypt ourselves, with waiting
        self.client.add_event_handler(EventType.ROOM_KEY_WITHHELD, self._on_withheld)
        self.client.add_event_handler(EventType.ORG_MATRIX_ROOM_KEY_WITHHELD, self._on_withheld)
        await machine.load()
        await self.crypto_store.put_device_id(self.client.device_id)
        await machine.share_keys()
        self.machine = machine
        self.megolm = MegolmDecryptor(machine)
        await self._cross_sign()
        self._filter_id = str(
            await self.client.create_filter(
                Filter.deserialize(cast(JSON, sync_filter(self.timeline_limit)))
            )
        )
        log.info("Connected as %s, device %s", self.user_id, self.client.device_id)

    async def _authenticate(self, stored_device: str | None) -> None:
        bot = self.config.bot
        if bot.access_token:
            self.client.api.token = bot.access_token
            whoami = await self.client.whoami()
            self.client.device_id = DeviceID(whoami.device_id or "")
            return
        stored = await self.identity.get(self.user_id)
        if stored and stored.access_token and stored.device_id == stored_device:
            token = self._tokens.open(stored.access_token)
            if token:
                self.client.api.token = token
                try:
                    whoami = await self.client.whoami()
                    self.client.device_id = DeviceID(whoami.device_id or "")
                    return
                except MUnknownToken:
                    log.info("Stored access token no longer valid; logging in again")
        resp = await retry_rate_limited(
            lambda: self.client.login(
                password=bot.password,
                device_id=stored_device or None,
                device_name=bot.device_name,
            )
        )
        await self.identity.save(
            self.user_id, self.user_id, resp.device_id, self._tokens.seal(resp.access_token)
        )

    async def _cross_sign(self) -> None:
        assert self.machine is not None
        key = self.config.encryption.recovery_key
        path = Path(self.config.recovery_key_path)
        if not key and path.exists():
            key = path.read_text().strip()
        if key:
            await self.machine.verify_with_recovery_key(key)
            log.info("Own device cross-signed with the configured recovery key")
            return
        if await self.machine.get_own_cross_signing_public_keys():
            log.error(
                "The bot account already has cross-signing keys but no recovery key is configured"
                " (encryption.recovery_key or %s); the device stays unverified",
                path,
            )
            return
        # The file first: if it cannot be written, no keys are published that nobody holds.
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            try:
                recovery_key = await self.machine.generate_recovery_key()
            except BaseException:
                f.close()
                path.unlink()
                raise
            f.write(recovery_key + "\n")
            f.flush()
            os.fsync(f.fileno())
        log.warning(
            "Bootstrapped cross-signing; the recovery key was written to %s — keep it "
            "safe and set encryption.recovery_key",
            path,
        )

    async def _on_withheld(self, evt: Any) -> None:
        """Note an `m.room_key.withheld`; it counts only if it matches the event's own sender
        (bot.policy.withheld)."""
        content = evt.content
        self.withheld.note(
            str(evt.sender),
            getattr(content, "session_id", None),
            getattr(content, "sender_key", None),
            getattr(getattr(content, "code", None), "value", None),
        )

    def withheld_code(self, raw: dict[str, Any]) -> str | None:
        """The code under which this event's key was withheld, if its own sender said so; a
        notice from anyone else is ignored and logged (who sent it, never content)."""
        code = self.withheld.code_for(raw)
        if code is None and (noted_by := self.withheld.noted_by(raw)) is not None:
            log.info(
                "Ignored a key-withheld notice from %s for a session it does not own", noted_by
            )
        return code

    # -- sync -------------------------------------------------------------------------------

    async def sync(self, since: str | None, timeout_ms: int) -> SyncBatch:
        """One /sync, with its crypto side (keys, device lists) handled before we return."""
        raw = await self.client.sync(
            since=SyncToken(since) if since else None,
            timeout=timeout_ms,
            filter_id=FilterID(self._filter_id) if self._filter_id else None,
        )
        # Let mautrix's own handlers (to-device room keys, OTK counts) and the state store
        # finish before any timeline event is looked at, so keys from this batch can be used.
        # To-device events go one at a time, in order, and are waited for: mautrix runs their
        # handlers as background tasks, and two olm messages from one device decrypted at once
        # both miss the session the first creates — all but one room key would be lost.
        for raw_event in (raw.get("to_device") or {}).get("events") or []:
            event = self.client._try_deserialize(ToDeviceEvent, raw_event)
            if event is None:
                continue
            event.type = event.type.with_class(EventType.Class.TO_DEVICE)
            handlers = self.client.dispatch_manual_event(
                event.type,
                event,
                include_global_handlers=True,
                force_synchronous=True,
                source=SyncStream.TO_DEVICE,
            )
            if handlers:
                await asyncio.gather(*handlers)
        tasks = self.client.handle_sync(cast(JSON, _crypto_only(raw)))
        if tasks:
            await asyncio.gather(*tasks)
        # Room state goes to mautrix's state store in a few statements, not one or two per
        # event through its sync handlers (which would also not be waited for).
        stale = await self.state_store.apply_sync(synced_state(raw, self.user_id, not since))
        if stale:
            await self.crypto_store.remove_outbound_group_sessions(stale)
        batch = SyncBatch(next_batch=raw["next_batch"], raw=raw)
        rooms = raw.get("rooms", {})
        # An initial sync without lazy-loaded members carries each joined room's whole state:
        # the first posture check of each room reads it from here instead of one /state
        # request per room (a clinic's first start with 1,000 rooms).
        self._state_in_sync = (
            {}
            if since
            else {
                room_id: _current_state(data)
                for room_id, data in (rooms.get("join") or {}).items()
                if isinstance(data, dict)
            }
        )
        for room_id, data in rooms.get("join", {}).items():
            timeline = data.get("timeline", {})
            events = list(timeline.get("events", []))
            if timeline.get("limited") and since and timeline.get("prev_batch"):
                events = await self._backfill(room_id, timeline["prev_batch"], since) + events
            for evt in events:
                evt["room_id"] = room_id
            batch.timelines[room_id] = _dedupe(events)
        for room_id, data in rooms.get("invite", {}).items():
            for evt in data.get("invite_state", {}).get("events", []):
                if evt.get("type") == "m.room.member" and evt.get("state_key") == self.user_id:
                    batch.invites[room_id] = {**evt, "room_id": room_id, "_state": data}
        for room_id, data in rooms.get("leave", {}).items():
            events = list(data.get("timeline", {}).get("events", []))
            for evt in events:
                evt["room_id"] = room_id
            batch.left[room_id] = events
        return batch

    async def _backfill(self, room_id: str, prev_batch: str, since: str) -> list[dict[str, Any]]:
        """Events of a limited timeline's gap, paged back through /messages, oldest first."""
        older: list[dict[str, Any]] = []
        token: str | None = prev_batch
        while token:
            page = await self.client.get_messages(
                RoomID(room_id),
                PaginationDirection.BACKWARD,
                from_token=SyncToken(token),
                to_token=SyncToken(since),
                limit=100,
            )
            # PaginatedMessages is a functional NamedTuple that mypy cannot see into.
            events: list[Any] = cast(Any, page).events
            end: str | None = cast(Any, page).end
            if not events:
                break
            older.extend(evt.serialize() for evt in events)
            token = end if end and end != token else None
        older.reverse()
        log.info("Back-filled %d events in %s after a limited sync", len(older), room_id)
        return older

    # -- decryption -------------------------------------------------------------------------

    async def decrypt(self, raw: dict[str, Any]) -> Decrypted:
        """Decrypt a megolm event.

        Raises SessionNotFound when the key has not arrived (yet), DecryptionError otherwise.
        """
        assert self.megolm is not None
        try:
            plain, trust = await self.megolm.decrypt(raw)
        except (SessionNotFound, DecryptionError):
            raise
        except Exception as e:
            # An exception's message may quote the decrypted content: never chain it.
            raise DecryptionError(f"undecodable event ({type(e).__name__})") from None
        return Decrypted(raw=plain, trust=trust_name(trust))

    async def read_message_indices_ahead(self, events: Iterable[dict[str, Any]]) -> None:
        """Before a batch's messages are decrypted one by one: read in one query which of
        their megolm message indices are already in use (replay protection)."""
        claims = []
        for raw in events:
            content = raw.get("content")
            if raw.get("type") != "m.room.encrypted" or not isinstance(content, dict):
                continue
            index = claimed_message_index(content.get("ciphertext"))
            room_id, session_id = raw.get("room_id"), content.get("session_id")
            if index is not None and _short_str(room_id) and _short_str(session_id):
                claims.append((RoomID(room_id), SessionID(session_id), index))
        await self.crypto_store.read_message_indices_ahead(claims)

    async def request_key(self, raw: dict[str, Any]) -> None:
        """Ask the sender's device for a missing megolm session, without waiting."""
        assert self.machine is not None
        content = raw.get("content", {})
        sender = raw.get("sender")
        devices: dict[UserID, list[Any]] = {}
        if sender and content.get("device_id"):
            devices[UserID(sender)] = [content["device_id"]]
        if not devices:
            return
        await self.machine.request_room_key(
            RoomID(raw["room_id"]),
            content.get("sender_key"),
            content.get("session_id"),
            devices,
            timeout=0,
        )

    async def session_known(self, room_id: str, session_id: str) -> bool:
        return bool(
            await self.crypto_store.has_group_session(RoomID(room_id), SessionID(session_id))
        )

    # -- acting on the homeserver -----------------------------------------------------------

    async def load_state(self, room_id: str) -> list[StateEvent]:
        """Fetch the room's full state into the state store, one fetch per room at a time:
        mautrix's Postgres state store raises on two concurrent member-list writes."""
        lock = self._state_locks.setdefault(room_id, asyncio.Lock())
        async with lock:
            return await self.client.get_state(RoomID(room_id))

    async def join(self, room_id: str) -> None:
        """Join, then load the full state so member lists (and key sharing) are complete."""
        await self.client.join_room_by_id(RoomID(room_id))
        await self.load_state(room_id)

    async def reject_invite(self, room_id: str) -> None:
        try:
            await self.client.leave_room(RoomID(room_id))
        except MForbidden:
            log.warning("Could not reject the invite to %s", room_id)

    async def is_encrypted(self, room_id: str) -> bool:
        return bool(await self.state_store.is_encrypted(RoomID(room_id)))

    async def joined_members(self, room_id: str) -> list[UserID]:
        """User IDs joined to the room now (the full member list is loaded first if needed).
        Within a batch the list is read once: the state store took the batch's membership
        changes before the batch is handled."""

        async def read() -> list[UserID]:
            if not await self.state_store.has_full_member_list(RoomID(room_id)):
                await self.load_state(room_id)
            return list(await self.state_store.get_members(RoomID(room_id), (Membership.JOIN,)))

        return list(await once_per_batch(("members", room_id), read))

    async def joined_rooms(self) -> list[RoomID]:
        """The rooms the bot is joined to, as the homeserver has it now."""
        return list(await self.client.get_joined_rooms())

    async def room_state(self, room_id: str) -> list[dict[str, Any]]:
        """The room's current state events as raw dicts: from the initial sync being handled
        if it had them, otherwise fetched (which refreshes the state store too)."""
        synced = self._state_in_sync.get(room_id)
        if synced is not None:
            return synced
        return [evt.serialize() for evt in await self.load_state(room_id)]

    async def membership(self, room_id: str, user_id: str) -> str:
        """The user's membership in the room as the homeserver has it now (`leave` if none);
        the state store may not have synced the latest join yet."""
        try:
            content = await self.client.get_state_event(
                RoomID(room_id), EventType.ROOM_MEMBER, state_key=user_id
            )
        except MNotFound:
            return "leave"
        return str(content.get("membership") or "leave")

    async def power_level(self, room_id: str, user_id: str) -> int:
        """The user's power in the room; creators of v12+ rooms rank above every level."""
        create = await self._create_content(room_id)
        if (
            create
            and creators_outrank_power_levels(create["room_version"])
            and (
                create.get("sender") == user_id or user_id in create.get("additional_creators", [])
            )
        ):
            return CREATOR_POWER
        levels = await self.state_store.get_power_levels(RoomID(room_id))
        if levels is None:
            fetched = await self.client.get_state_event(
                RoomID(room_id), EventType.ROOM_POWER_LEVELS
            )
            levels = cast(PowerLevelStateEventContent, fetched)
        return int(levels.get_user_level(UserID(user_id)))

    async def _create_content(self, room_id: str) -> dict[str, Any] | None:
        cache = self._creators
        if room_id not in cache:
            state = await self.load_state(room_id)
            for evt in state:
                if evt.type == EventType.ROOM_CREATE:
                    content = evt.content.serialize()
                    cache[room_id] = {
                        "sender": evt.sender,
                        "additional_creators": [
                            u
                            for u in _as_list(content.get("additional_creators"))
                            if isinstance(u, str)
                        ],
                        "room_version": str(content.get("room_version", "1")),
                    }
        return cache.get(room_id)

    async def close(self) -> None:
        await self.client.api.session.close()


def _crypto_only(raw: dict[str, Any]) -> dict[str, Any]:
    """The part of a sync response mautrix's own handlers still get: one-time key counts and
    device lists for its olm machine. To-device events were handled one by one already, room
    state goes to the state store in bulk (`synced_state`), and no handler of ours is
    registered for timeline messages (parsing them cost a tenth of a catch-up)."""
    return {
        key: raw[key]
        for key in ("device_one_time_keys_count", "device_lists")
        if isinstance(raw.get(key), dict)
    }


def _current_state(room: dict[str, Any]) -> list[dict[str, Any]]:
    """A joined room's state from an initial sync: its state block, then the timeline's state
    events in order, the last of each (type, state key) counting."""
    current: dict[tuple[str, str], dict[str, Any]] = {}
    for evt in [*_events_of(room.get("state")), *_events_of(room.get("timeline"))]:
        if isinstance(evt, dict) and _short_str(evt.get("type")):
            state_key = evt.get("state_key")
            if isinstance(state_key, str):
                current[evt["type"], state_key] = evt
    return list(current.values())


def _short_str(value: Any) -> TypeGuard[str]:
    """A string that can be a Matrix ID (the spec caps them at 255 bytes)."""
    return isinstance(value, str) and 0 < len(value) <= 255


def _events_of(section: Any) -> list[Any]:
    return _as_list(section.get("events")) if isinstance(section, dict) else []


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _dedupe(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: set[str] = set()
    out = []
    for evt in events:
        eid = evt.get("event_id")
        if eid and eid in seen:
            continue
        if eid:
            seen.add(eid)
        out.append(evt)
    return out
