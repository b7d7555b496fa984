"""A real end-to-end-encrypted Matrix user, for the end-to-end tests and ``chaperone demo``.

It plays the humans around the bot (clinician, patient): logs in as a new device, keeps its olm
state in memory, syncs in the background, decrypts what it receives and remembers it, so a test
can wait for a message that arrived before it started waiting.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar, cast

import aiohttp

# Importing mautrix installs its TraceLogger class; a ``mau.*`` logger created before that is a
# plain Logger and key sharing dies on ``log.trace`` inside a handler. login() checks it.
from mautrix.client import (
    Client,
    DecryptionDispatcher,
    InternalEventType,
    MemoryStateStore,
    SyncStream,
)
from mautrix.crypto import OlmMachine
from mautrix.crypto.store import MemoryCryptoStore
from mautrix.crypto.store import StateStore as CryptoStateStore
from mautrix.errors import DecryptionError, MNotFound, SessionNotFound
from mautrix.types import (
    CrossSigningUsage,
    EncryptedEvent,
    EventID,
    EventType,
    Filter,
    Membership,
    MemberStateEventContent,
    MessageEvent,
    MessageType,
    RedactionEvent,
    RoomCreatePreset,
    RoomEventFilter,
    RoomFilter,
    RoomID,
    SigningKey,
    StateEvent,
    StateFilter,
    TextMessageEventContent,
    TOFUSigningKey,
    UserID,
)
from mautrix.util.logging import TraceLogger

__all__ = ["E2EEClient", "MessagePredicate"]

MessagePredicate = Callable[[MessageEvent], bool]
_T = TypeVar("_T")

_MEGOLM = "m.megolm.v1.aes-sha2"
# No lazy-loading: key sharing needs the full member list (invited members included), and a
# large timeline limit keeps bursts from coming back `limited` with events missing.
_SYNC_FILTER = Filter(
    room=RoomFilter(
        state=StateFilter(lazy_load_members=False),
        timeline=RoomEventFilter(limit=100, lazy_load_members=False),
    ),
)


class _CryptoStore(MemoryCryptoStore):
    """mautrix 0.21's memory store assigns to an immutable TOFUSigningKey when a user's
    cross-signing key is seen again (e.g. after the bot bootstraps cross-signing)."""

    async def put_cross_signing_key(
        self, user_id: UserID, usage: CrossSigningUsage, key: SigningKey
    ) -> None:
        current = self._cross_signing_keys.get(user_id, {}).get(usage)
        first = current.first if current is not None else key
        self._cross_signing_keys.setdefault(user_id, {})[usage] = TOFUSigningKey(
            key=key, first=first
        )


class _StateStore(MemoryStateStore, CryptoStateStore):  # type: ignore[misc]
    """mautrix's in-memory state store plus the one query the olm machine adds."""

    async def find_shared_rooms(self, user_id: UserID) -> list[RoomID]:
        shared = (Membership.JOIN, Membership.INVITE)
        return [
            room_id
            for room_id, members in self.members.items()
            if self.encryption.get(room_id) is not None
            and user_id in members
            and members[user_id].membership in shared
        ]


class E2EEClient:
    """One logged-in device of one user, with E2EE. Create with :meth:`login`; :meth:`close` it."""

    session_wait_seconds = 10.0
    """How long a megolm event waits for its room key before it counts as undecryptable."""

    def __init__(
        self,
        client: Client,
        olm: OlmMachine,
        crypto_store: MemoryCryptoStore,
        state_store: _StateStore,
        http: aiohttp.ClientSession,
    ) -> None:
        self.client = client
        self.olm = olm
        self.crypto_store = crypto_store
        self.state_store = state_store
        self._http = http
        self._log = client.log
        self._changed = asyncio.Condition()
        self._first_sync = asyncio.Event()
        self._sync_task: asyncio.Future[Any] | None = None
        self._sync_error: BaseException | None = None
        self._closed = False
        self._messages: dict[RoomID, list[MessageEvent]] = {}
        self._consumed: set[EventID] = set()
        self._undecryptable: dict[RoomID, list[EncryptedEvent]] = {}
        self._redactions: dict[RoomID, list[RedactionEvent]] = {}
        self._memberships: dict[tuple[RoomID, UserID], Membership] = {}

    @property
    def user_id(self) -> UserID:
        return UserID(self.client.mxid)

    @property
    def device_id(self) -> str:
        return str(self.client.device_id)

    @classmethod
    async def login(
        cls,
        base_url: str,
        user_id: str,
        password: str,
        *,
        device_name: str = "chaperone-devtools",
        first_sync_timeout: float = 15.0,
    ) -> E2EEClient:
        """Log in as a new device, publish its keys, and start syncing in the background."""
        log = logging.getLogger(f"mau.devtools.{user_id.lstrip('@').split(':', 1)[0]}")
        if not isinstance(log, TraceLogger):
            raise RuntimeError(f"logger {log.name} predates mautrix's TraceLogger class")
        http = aiohttp.ClientSession()
        client: Client | None = None
        try:
            state_store = _StateStore()
            crypto_store = _CryptoStore(account_id=user_id, pickle_key=secrets.token_hex(16))
            client = Client(
                mxid=UserID(user_id),
                base_url=base_url,
                client_session=http,
                state_store=state_store,
                sync_store=crypto_store,
                log=log,
                crypto_log=log.getChild("crypto"),
            )
            await client.login(password=password, device_name=device_name)
            olm = OlmMachine(client, crypto_store, state_store, log=log.getChild("olm"))
            client.crypto = olm
            # The stock dispatcher drops an event whose room key is still in flight; ours waits.
            client.remove_dispatcher(DecryptionDispatcher)
            await crypto_store.put_device_id(client.device_id)
            await olm.load()
            await olm.share_keys()
            self = cls(client, olm, crypto_store, state_store, http)
            self._register_handlers()
            self._sync_task = client.start(_SYNC_FILTER)
            await asyncio.wait_for(self._first_sync.wait(), first_sync_timeout)
        except BaseException:
            if client is not None:
                client.stop()
            await http.close()
            raise
        return self

    async def close(self) -> None:
        """Stop syncing and close the HTTP session (the device stays registered)."""
        if self._closed:
            return
        self._closed = True
        task, self._sync_task = self._sync_task, None
        self.client.stop()
        if task is not None:
            try:
                await asyncio.wait_for(task, 10)
            except (asyncio.CancelledError, TimeoutError):
                self._log.warning("%s: sync did not stop within 10 s", self.user_id)
        await self._http.close()

    # ---- rooms ---------------------------------------------------------------------------

    async def create_room(
        self,
        invite: Iterable[str] = (),
        encrypted: bool = True,
        name: str | None = None,
        **kwargs: Any,
    ) -> RoomID:
        """Create a private room; an encrypted one gets ``m.room.encryption`` (megolm) at once."""
        initial_state = list(kwargs.pop("initial_state", []))
        if encrypted:
            initial_state.append(
                {
                    "type": str(EventType.ROOM_ENCRYPTION),
                    "state_key": "",
                    "content": {"algorithm": _MEGOLM},
                }
            )
        room_id: RoomID = await self.client.create_room(
            name=name,
            invitees=[UserID(u) for u in invite],
            initial_state=initial_state,
            **kwargs,
        )
        return room_id

    async def create_direct_chat(
        self, user_id: str, *, room_version: str | None = None, invite: Iterable[str] = ()
    ) -> RoomID:
        """A direct chat as Element's "Start chat" makes it: the ``trusted_private_chat``
        preset (the invitee gets power 100, or becomes an additional creator in room version
        12), ``is_direct``, encrypted, and the room recorded in this user's ``m.direct``."""
        options: dict[str, Any] = {"preset": RoomCreatePreset.TRUSTED_PRIVATE, "is_direct": True}
        if room_version is not None:
            options["room_version"] = room_version
        room_id = await self.create_room(invite=[user_id, *invite], **options)
        try:
            direct = dict(await self.client.get_account_data(EventType.DIRECT))
        except MNotFound:
            direct = {}
        direct[user_id] = [*direct.get(user_id, []), room_id]
        await self.client.set_account_data(EventType.DIRECT, direct)
        return room_id

    async def invite(self, room_id: RoomID, user_id: str) -> None:
        await self.client.invite_user(room_id, UserID(user_id))

    async def join(self, room_id: RoomID) -> None:
        """Join, then load the room's full state, so the first message reaches every member."""
        await self.client.join_room_by_id(room_id)
        await self.client.get_state(room_id)

    async def leave(self, room_id: RoomID) -> None:
        await self.client.leave_room(room_id)

    # ---- sending -------------------------------------------------------------------------

    async def send_text(self, room_id: RoomID, body: str) -> EventID:
        """Send an ``m.text`` message, encrypted if the room is."""
        content = TextMessageEventContent(msgtype=MessageType.TEXT, body=body)
        if await self._is_encrypted(room_id):
            await self._prepare_group_session(room_id)
        event_id: EventID = await self.client.send_message_event(
            room_id, EventType.ROOM_MESSAGE, content
        )
        return event_id

    async def redact(
        self, room_id: RoomID, event_id: EventID, reason: str | None = None
    ) -> EventID:
        redaction_id: EventID = await self.client.redact(room_id, event_id, reason=reason)
        return redaction_id

    async def _is_encrypted(self, room_id: RoomID) -> bool:
        known = await self.state_store.is_encrypted(room_id)
        if known is not None:
            return bool(known)
        try:
            await self.client.get_state_event(room_id, EventType.ROOM_ENCRYPTION)
        except MNotFound:
            return False
        return True

    async def _prepare_group_session(self, room_id: RoomID) -> None:
        """Refresh the member list; drop the outbound session if a member device lacks its key.

        mautrix rotates on membership events it has synced, but not when a test invites and
        sends before the sync arrives, nor on invite→join: asking the server keeps it exact.
        """
        await self.client.get_members(room_id)
        session = await self.crypto_store.get_outbound_group_session(room_id)
        if session is None:
            return
        covered = session.users_shared_with | session.users_ignored
        for member in await self.state_store.get_members(room_id):
            devices = await self.crypto_store.get_devices(member)
            if devices is None or any((member, device) not in covered for device in devices):
                await self.crypto_store.remove_outbound_group_session(room_id)
                return

    # ---- what was received ---------------------------------------------------------------

    def received(self, room_id: RoomID) -> list[MessageEvent]:
        """Every ``m.room.message`` seen in the room so far (decrypted ones included)."""
        return list(self._messages.get(room_id, []))

    def undecryptable(self, room_id: RoomID) -> list[EncryptedEvent]:
        """Encrypted events whose room key never arrived."""
        return list(self._undecryptable.get(room_id, []))

    def received_redactions(self, room_id: RoomID) -> list[RedactionEvent]:
        return list(self._redactions.get(room_id, []))

    @staticmethod
    def was_encrypted(evt: MessageEvent) -> bool:
        """True if the event reached us encrypted (mautrix marks what it decrypted)."""
        info = evt.get("mautrix") or {}
        return bool(info.get("was_encrypted", False))

    async def wait_for_message(
        self,
        room_id: RoomID,
        predicate: MessagePredicate | None = None,
        sender: str | None = None,
        timeout: float = 20,
    ) -> MessageEvent:
        """The first not-yet-returned message matching; waits for it if it has not arrived.

        ``sender=None`` matches anyone *except this user*, so a test waiting for a reply never
        gets its own echo; pass ``sender=client.user_id`` to wait for the echo.
        """

        def match(evt: MessageEvent) -> bool:
            if evt.event_id in self._consumed:
                return False
            if sender is None and evt.sender == self.user_id:
                return False
            if sender is not None and evt.sender != sender:
                return False
            return predicate is None or predicate(evt)

        def find() -> MessageEvent | None:
            return next((e for e in self._messages.get(room_id, []) if match(e)), None)

        found = await self._wait(find, timeout, lambda: self._describe_room(room_id))
        self._consumed.add(found.event_id)
        return found

    async def wait_for_redaction(
        self, room_id: RoomID, event_id: EventID, timeout: float = 20
    ) -> RedactionEvent:
        """The redaction of ``event_id``, once it has arrived."""

        def find() -> RedactionEvent | None:
            return next(
                (r for r in self._redactions.get(room_id, []) if r.redacts == event_id), None
            )

        return await self._wait(find, timeout, lambda: f"no redaction of {event_id}")

    async def wait_for_membership(
        self, room_id: RoomID, user_id: str, membership: str | Membership, timeout: float = 20
    ) -> None:
        """Wait until the synced membership of ``user_id`` in the room is ``membership``."""
        wanted = Membership(str(membership))
        key = (room_id, UserID(user_id))

        def find() -> bool | None:
            return True if self._memberships.get(key) == wanted else None

        await self._wait(
            find, timeout, lambda: f"{user_id} is {self._memberships.get(key)}, not {wanted}"
        )

    async def _wait(
        self, find: Callable[[], _T | None], timeout: float, describe: Callable[[], str]
    ) -> _T:
        result: _T | None = None

        def ready() -> bool:
            nonlocal result
            result = find()
            return result is not None or self._sync_error is not None

        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(ready), timeout)
            except TimeoutError:
                pass
        if result is None:
            why = f" (sync died: {self._sync_error!r})" if self._sync_error else ""
            raise TimeoutError(f"{self.user_id}: timed out after {timeout} s: {describe()}{why}")
        return result

    def _describe_room(self, room_id: RoomID) -> str:
        seen = [f"{e.sender}: {e.content.body[:80]!r}" for e in self._messages.get(room_id, [])]
        lost = len(self._undecryptable.get(room_id, []))
        return f"no matching message in {room_id}; seen {seen}; undecryptable: {lost}"

    # ---- sync handlers -------------------------------------------------------------------

    def _register_handlers(self) -> None:
        add = self.client.add_event_handler
        add(EventType.ROOM_ENCRYPTED, self._on_encrypted)
        add(EventType.ROOM_MESSAGE, self._on_message)
        add(EventType.ROOM_REDACTION, self._on_redaction)
        add(EventType.ROOM_MEMBER, self._on_member)
        add(InternalEventType.SYNC_SUCCESSFUL, self._on_sync_successful)
        add(InternalEventType.SYNC_STOPPED, self._on_sync_stopped)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _on_encrypted(self, evt: EncryptedEvent) -> None:
        try:
            decrypted = await self._decrypt(evt)
        except DecryptionError as e:
            self._log.warning("Could not decrypt %s in %s: %s", evt.event_id, evt.room_id, e)
            self._undecryptable.setdefault(evt.room_id, []).append(evt)
            await self._notify()
            return
        if not self._closed:
            source = getattr(evt, "source", SyncStream.JOINED_ROOM | SyncStream.TIMELINE)
            self.client.dispatch_event(decrypted, source)

    async def _decrypt(self, evt: EncryptedEvent) -> Any:
        try:
            return await self.olm.decrypt_megolm_event(evt)
        except SessionNotFound:
            pass
        # The room key travels as a to-device event, often in the same sync batch, and the
        # handlers of a batch run concurrently: give it time to land.
        deadline = time.monotonic() + self.session_wait_seconds
        session_id = evt.content.session_id
        while time.monotonic() < deadline and not self._closed:
            if await self.olm.wait_for_session(evt.room_id, session_id, timeout=0.5):
                break
        return await self.olm.decrypt_megolm_event(evt)

    async def _on_message(self, evt: MessageEvent) -> None:
        self._messages.setdefault(evt.room_id, []).append(evt)
        await self._notify()

    async def _on_redaction(self, evt: RedactionEvent) -> None:
        if not getattr(evt, "redacts", None):
            # v11+ rooms carry the target in the content; Synapse also copies it top-level.
            evt.redacts = EventID(evt.content.get("redacts", ""))
        self._redactions.setdefault(evt.room_id, []).append(evt)
        await self._notify()

    async def _on_member(self, evt: StateEvent) -> None:
        content = cast(MemberStateEventContent, evt.content)
        self._memberships[(evt.room_id, UserID(evt.state_key))] = content.membership
        await self._notify()

    async def _on_sync_successful(self, _data: Any) -> None:
        self._first_sync.set()

    async def _on_sync_stopped(self, data: Any) -> None:
        error = data.get("error") if isinstance(data, dict) else None
        if error is not None:
            self._sync_error = error
            self._first_sync.set()
            await self._notify()
