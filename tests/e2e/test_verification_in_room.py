"""In-room interactive verification against a real Synapse and Postgres.

The person's client is scripted the way Element (js-sdk) does in-room SAS: the request is an
`m.room.message` with msgtype `m.key.verification.request`, every later event relates to it
(`m.reference`), and all of them go out UNENCRYPTED in the encrypted DM (MATRIX-NOTES). The
peer's side of the protocol is the project's own pure flow (`bot.policy.sas.SasFlow` in the
person's role) over `olm.Sas`; its device and cross-signing keys are real ones published on the
server. The operator's console step is `decide()` in-process, as in test_verification.py.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any

import aiohttp
import asyncpg
import pytest
from mautrix.client import InternalEventType
from mautrix.types import DeviceID, EventType, RoomID, UserID
from olm.pk import PkSigning
from olm.utility import ed25519_verify

from bot.clock import Clock
from bot.devtools.e2ee_client import E2EEClient
from bot.matrix.verification import OlmSasCrypto, inbound_from_room_event
from bot.policy.sas import (
    CANCEL,
    KEY,
    MAC,
    REQUEST,
    SAS_V1,
    START,
    Outgoing,
    Party,
    SasFlow,
    State,
)
from bot.service.verification_cli import decide
from tests.e2e.bot_env import BotEnv, RunningBot
from tests.e2e.test_foundation import audit_rows, wait_rows
from tests.e2e.test_late_keys import raw_content
from tests.e2e.test_verification import all_rows, until, waiting_row
from tests.fixtures_synapse import MakeE2EEUser


class RoomPeer:
    """A person's client doing SAS in a room as Element does: every verification event in the
    clear, the protocol decided by the project's pure `SasFlow` in the person's role."""

    def __init__(self, client: E2EEClient, room_id: str, bot_user: str) -> None:
        self.client = client
        self.room_id = room_id
        self.bot_user = bot_user
        self.seen: list[dict[str, Any]] = []  # every verification event in the room, any sender
        self.flow: SasFlow | None = None
        self._cursor = 0
        client.client.add_event_handler(InternalEventType.SYNC_SUCCESSFUL, self._on_sync)

    @property
    def user_id(self) -> str:
        return str(self.client.user_id)

    async def _on_sync(self, data: Any) -> None:
        sync = data.get("data", data) if isinstance(data, dict) else {}
        room = sync.get("rooms", {}).get("join", {}).get(self.room_id, {})
        for raw in room.get("timeline", {}).get("events", []):
            if inbound_from_room_event({**raw, "room_id": self.room_id}) is not None:
                self.seen.append({**raw, "room_id": self.room_id})

    async def send(self, out: Outgoing) -> str:
        """One verification event, unencrypted (as Element sends them in an encrypted room)."""
        event_type = (
            EventType.ROOM_MESSAGE
            if out.type == REQUEST
            else EventType.find(out.type, EventType.Class.MESSAGE)
        )
        event_id = await self.client.client.send_message_event(
            RoomID(self.room_id), event_type, raw_content(out.content), disable_encryption=True
        )
        return str(event_id)

    async def send_steps(self, outs: list[Outgoing]) -> None:
        for out in outs:
            await self.send(out)

    def our_keys(self, master: str | None) -> dict[str, str]:
        account = self.client.olm.account
        assert account is not None
        keys = {f"ed25519:{self.client.device_id}": str(account.signing_key)}
        if master:
            keys[f"ed25519:{master}"] = master
        return keys

    async def bot_keys(self, bot_device: str) -> dict[str, str]:
        """The bot's device key and master key, as the server gives them to this client."""
        machine = self.client.olm
        device = await machine.get_or_fetch_device(UserID(self.bot_user), DeviceID(bot_device))
        assert device is not None
        keys = {f"ed25519:{bot_device}": str(device.signing_key)}
        public = await machine.get_cross_signing_public_keys(UserID(self.bot_user))
        if public is not None:
            keys[f"ed25519:{public.master_key}"] = str(public.master_key)
        return keys

    async def request(self, master: str | None) -> SasFlow:
        """Element's "Verify user": the request as a room message; its event ID is the flow."""
        content = {
            "msgtype": REQUEST,
            "body": f"{self.user_id} is asking to verify your key",
            "from_device": self.client.device_id,
            "methods": [SAS_V1],
            "to": self.bot_user,
        }
        txn = await self.send(Outgoing(REQUEST, content, self.room_id, self.bot_user))
        self.flow = SasFlow(
            txn=txn,
            us=Party(self.user_id, self.client.device_id),
            peer_user=self.bot_user,
            peer_device=None,
            crypto=OlmSasCrypto(),
            now=time.monotonic(),
            room_id=self.room_id,
            our_keys=self.our_keys(master),
            we_requested=True,
        )
        return self.flow

    async def answer_request(self, master: str | None, timeout: float = 20) -> SasFlow:
        """The bot's request arrived: answer ready (the person pressed "Verify")."""

        def bots_request() -> dict[str, Any] | None:
            for raw in self.seen:
                content = raw.get("content", {})
                if (
                    raw.get("sender") == self.bot_user
                    and content.get("msgtype") == REQUEST
                    and content.get("to") == self.user_id
                ):
                    return raw
            return None

        raw = await until(bots_request, timeout, "the bot's in-room request")
        self.flow = SasFlow(
            txn=raw["event_id"],
            us=Party(self.user_id, self.client.device_id),
            peer_user=self.bot_user,
            peer_device=raw["content"]["from_device"],
            crypto=OlmSasCrypto(),
            now=time.monotonic(),
            room_id=self.room_id,
            our_keys=self.our_keys(master),
        )
        await self.send_steps(self.flow.ready().send)
        return self.flow

    async def drive(self, until_state: State, timeout: float = 20) -> None:
        """Feed the bot's events on this transaction to the flow, send what it answers, until
        the flow reaches `until_state` (or ends). Events from anyone but the bot are not the
        bot's: the person's client ignores them."""
        flow = self.flow
        assert flow is not None
        deadline = time.monotonic() + timeout
        while flow.state is not until_state and flow.state not in (State.DONE, State.CANCELLED):
            if self._cursor >= len(self.seen):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"peer stuck in {flow.state.value}")
                await asyncio.sleep(0.01)
                continue
            raw = self.seen[self._cursor]
            self._cursor += 1
            msg = inbound_from_room_event(raw)
            assert msg is not None
            relates = msg.content.get("m.relates_to") or {}
            if msg.sender != self.bot_user or relates.get("event_id") != flow.txn:
                continue
            step = flow.receive(msg, time.monotonic())
            await self.send_steps(step.send)
        assert flow.state is until_state, (flow.state, flow.cancel_code)

    def bot_events(self, type_: str) -> list[dict[str, Any]]:
        return [r for r in self.seen if r.get("sender") == self.bot_user and r["type"] == type_]


async def in_dm_with_bot(client: E2EEClient, bot_env: BotEnv, db_url: str) -> RoomID:
    room_id = await client.create_direct_chat(bot_env.bot_user)
    await wait_rows(db_url, "room.joined", room_id=room_id)
    await client.wait_for_membership(room_id, UserID(bot_env.bot_user), "join")
    return room_id


async def operator_confirms(
    db_url: str, bot_env: BotEnv, flow: SasFlow
) -> tuple[asyncpg.Record, float]:
    """The short code waits in the table; it is the one the person sees; the operator confirms.
    Returns the row and when the code was there."""
    row = await until(lambda: waiting_row(db_url), what="the short code waits for the operator")
    t_sas = time.monotonic()
    assert flow.code is not None
    assert row["emoji"] == "  ".join(f"{s} {n}" for s, n in flow.code.emoji)
    assert row["decimals"] == " ".join(str(d) for d in flow.code.decimals)
    assert row["room_id"] == flow.room_id
    ok, message = await decide(bot_env.config, row["id"], confirmed=True, clock=Clock())
    assert ok, message
    return row, t_sas


def assert_no_short_code(row: asyncpg.Record, audit_text: str, log_text: str) -> None:
    for text in (audit_text, log_text):
        assert row["emoji"] not in text and row["decimals"] not in text
        for symbol in row["emoji"].split("  "):
            assert symbol not in text
    for part in row["decimals"].split():
        # As a number of its own: any four digits turn up inside hex hashes and event IDs.
        alone = re.compile(rf"(?<![0-9A-Za-z]){part}(?![0-9A-Za-z])")
        assert not alone.search(audit_text)
        assert f" {part} " not in log_text


async def master_key_seen_by(bot_env: BotEnv, user_id: str, password: str, of: str) -> Any:
    """`of`'s master key as `/keys/query` returns it to another (fresh) login of `user_id`.
    Signatures by a user-signing key are shown to their signer only (spec), so the bot's own
    account is the one to ask."""
    token, _device = await bot_env.synapse.login(user_id, password)
    url = f"{bot_env.synapse.base_url}/_matrix/client/v3/keys/query"
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
        async with http.post(url, json={"device_keys": {of: []}}) as resp:
            assert resp.status == 200, await resp.text()
            body = await resp.json()
        async with http.post(f"{bot_env.synapse.base_url}/_matrix/client/v3/logout") as resp:
            assert resp.status == 200
    return body["master_keys"][of]


async def test_element_style_in_room_verification_signs_the_master_key(
    bot_env: BotEnv,
    running_bot: RunningBot,
    e2ee_user: MakeE2EEUser,
    db_url: str,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    bot_user, bot_device = bot_env.bot_user, running_bot.app.gateway.device_id
    # The therapist (config staff) has cross-signing like any Element user: master,
    # self-signing and user-signing keys published, this device signed by the self-signing key.
    staff = await e2ee_user(credentials=bot_env.staff)
    recovery_key = await staff.olm.generate_recovery_key()
    own = await staff.olm.get_own_cross_signing_public_keys()
    assert own is not None
    master = str(own.master_key)
    room_id = await in_dm_with_bot(staff, bot_env, db_url)
    peer = RoomPeer(staff, room_id, bot_user)

    # -- "Verify user": request → ready → start → accept → keys, all in the clear ----------
    t0 = time.monotonic()
    flow = await peer.request(master)
    peer.flow = flow
    await peer.drive(State.KEYS)
    row, t_sas = await operator_confirms(db_url, bot_env, flow)
    t_confirm = time.monotonic()
    assert (row["user_id"], row["device_id"]) == (staff.user_id, staff.device_id)
    # The bot followed the person's lead: it answered ready and accepted their start.
    assert peer.bot_events("m.key.verification.ready") and not peer.bot_events(START)
    for raw in peer.seen:  # every verification event of both sides went out in the clear
        assert raw["type"] != "m.room.encrypted"

    # -- the person presses "They match"; both MACs; done -----------------------------------
    flow.their_keys = await peer.bot_keys(bot_device)
    await peer.send_steps(flow.confirm().send)
    await peer.drive(State.DONE)
    [done] = await wait_rows(db_url, "verification.done", timeout=15)
    t_done = time.monotonic()
    # The bot's MAC covered its device key and its master key; the peer checked both.
    bot_machine = running_bot.app.gateway.machine
    assert bot_machine is not None
    bot_master = bot_machine._cross_signing_public_keys
    assert bot_master is not None
    assert set(flow.their_verified) == {
        f"ed25519:{bot_device}",
        f"ed25519:{bot_master.master_key}",
    }
    assert peer.bot_events("m.key.verification.done")

    details = json.loads(done["details"])
    assert details["transport"] == "room" and details["device"] == staff.device_id
    assert details["master_key_signed"] is True and details["keys_verified"] == 2
    [started] = await audit_rows(db_url, "verification.started")
    assert started["actor"] == staff.user_id and started["room_id"] == room_id
    assert not await audit_rows(db_url, "verification.cancelled")

    # -- the bot signed the person's master key with its user-signing key, and published it --
    machine = running_bot.app.gateway.machine
    assert machine is not None and machine._cross_signing_private_keys is not None
    usk = str(machine._cross_signing_private_keys.user_signing_key.public_key)
    published = await master_key_seen_by(
        bot_env, bot_user, bot_env.config.bot.password, staff.user_id
    )
    assert published["keys"] == {f"ed25519:{master}": master}
    signature = published["signatures"][bot_user][f"ed25519:{usk}"]
    signed = {k: v for k, v in published.items() if k not in ("signatures", "unsigned")}
    ed25519_verify(usk, json.dumps(signed, sort_keys=True, separators=(",", ":")), signature)

    # -- a second device of the person, cross-signed but never SAS-verified, is `verified` --
    second = await e2ee_user(credentials=bot_env.staff)
    await second.olm.verify_with_recovery_key(recovery_key)  # signs itself with the SSK
    event_id = await second.send_text(room_id, "!chaperone status")
    [executed] = await wait_rows(db_url, "command.executed", event_id=event_id, timeout=20)
    assert json.loads(executed["details"])["trust"] == "verified"
    # ... and so is the device the person verified with.
    event_id = await staff.send_text(room_id, "!chaperone status")
    [executed] = await wait_rows(db_url, "command.executed", event_id=event_id, timeout=20)
    assert json.loads(executed["details"])["trust"] == "verified"

    # -- never the short code: not in the audit log, not in a log line -----------------------
    audit_text = json.dumps([dict(r) for r in await all_rows(db_url)], default=str)
    assert_no_short_code(row, audit_text, capsys.readouterr().err + caplog.text)

    machine_time = (t_sas - t0) + (t_done - t_confirm)
    with capsys.disabled():
        print(
            f"\nSAS in-room (Element-style): request->code {t_sas - t0:.2f} s, operator's"
            f" confirm->done {t_done - t_confirm:.2f} s; without the operator {machine_time:.2f} s"
        )
    assert machine_time < 10


async def test_admin_asks_and_the_bot_starts_in_the_room(
    bot_env: BotEnv,
    running_bot: RunningBot,
    e2ee_user: MakeE2EEUser,
    db_url: str,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    bot_user = bot_env.bot_user
    admin = await e2ee_user(credentials=bot_env.admin)
    staff = await e2ee_user(credentials=bot_env.staff)
    room_id = await admin.create_room(invite=[bot_user, staff.user_id], name="verify")
    await staff.wait_for_membership(room_id, staff.user_id, "invite")
    await staff.join(room_id)
    await wait_rows(db_url, "room.joined", room_id=room_id)
    await admin.wait_for_membership(room_id, UserID(bot_user), "join")
    peer = RoomPeer(staff, room_id, bot_user)

    t0 = time.monotonic()
    command = await admin.send_text(room_id, f"!chaperone verify {staff.user_id}")
    flow = await peer.answer_request(None)
    await peer.drive(State.KEYS)  # ready → the bot's start → accept → keys
    row, t_sas = await operator_confirms(db_url, bot_env, flow)
    t_confirm = time.monotonic()
    assert peer.bot_events(START)  # the bot drove: it sent the start
    [request] = [r for r in peer.seen if r["event_id"] == flow.txn and r["sender"] == bot_user]
    assert request["type"] == "m.room.message"  # the request is a message, in the clear

    flow.their_keys = await peer.bot_keys(running_bot.app.gateway.device_id)
    await peer.send_steps(flow.confirm().send)
    await peer.drive(State.DONE)
    [done] = await wait_rows(db_url, "verification.done", timeout=15)
    t_done = time.monotonic()
    details = json.loads(done["details"])
    assert details["transport"] == "room" and details["device"] == staff.device_id
    # No master key in this person's MAC (no cross-signing): only the device is verified.
    assert details["master_key_signed"] is False and details["keys_verified"] == 1
    [started] = await audit_rows(db_url, "verification.started")
    assert started["actor"] == admin.user_id and started["subject"] == staff.user_id
    assert json.loads(started["details"])["direction"] == "outgoing"
    [executed] = await wait_rows(db_url, "command.executed", event_id=command)
    assert json.loads(executed["details"])["command"] == "verify"

    # The verified device's next command carries `verified`.
    event_id = await staff.send_text(room_id, "!chaperone status")
    [executed] = await wait_rows(db_url, "command.executed", event_id=event_id, timeout=20)
    assert json.loads(executed["details"])["trust"] == "verified"

    audit_text = json.dumps([dict(r) for r in await all_rows(db_url)], default=str)
    assert_no_short_code(row, audit_text, capsys.readouterr().err + caplog.text)
    machine_time = (t_sas - t0) + (t_done - t_confirm)
    with capsys.disabled():
        print(
            f"\nSAS in-room (bot-initiated): command->code {t_sas - t0:.2f} s, operator's"
            f" confirm->done {t_done - t_confirm:.2f} s; without the operator {machine_time:.2f} s"
        )
    assert machine_time < 10


async def test_non_staff_is_refused_and_a_third_users_forgery_is_ignored(
    bot_env: BotEnv,
    running_bot: RunningBot,
    e2ee_user: MakeE2EEUser,
    db_url: str,
) -> None:
    bot_user = bot_env.bot_user
    staff = await e2ee_user(credentials=bot_env.staff)
    patient = await e2ee_user("patient")
    room_id = await staff.create_room(invite=[bot_user, patient.user_id], name="care")
    await patient.wait_for_membership(room_id, patient.user_id, "invite")
    await patient.join(room_id)
    await wait_rows(db_url, "room.joined", room_id=room_id)
    await staff.wait_for_membership(room_id, UserID(bot_user), "join")
    intruder = RoomPeer(patient, room_id, bot_user)
    peer = RoomPeer(staff, room_id, bot_user)

    # -- a patient (not staff) asks to verify: refused with m.user, in the room --------------
    refused = await intruder.request(None)
    await intruder.drive(State.CANCELLED)
    [cancel] = [
        r
        for r in intruder.bot_events(CANCEL)
        if r["content"]["m.relates_to"] == {"rel_type": "m.reference", "event_id": refused.txn}
    ]
    assert cancel["content"]["code"] == "m.user"
    [row] = await wait_rows(db_url, "verification.cancelled")
    details = json.loads(row["details"])
    assert details["reason"] == "not_allowed" and details["code"] == "m.user"
    assert row["subject"] == patient.user_id and details["transport"] == "room"
    assert not await audit_rows(db_url, "verification.started")

    # -- staff verifies; the patient forges events on that transaction; the flow goes on -----
    flow = await peer.request(None)
    await until(lambda: peer.bot_events("m.key.verification.ready"), what="the bot's ready")

    def forged(type_: str, **fields: Any) -> Outgoing:
        content = {"m.relates_to": {"rel_type": "m.reference", "event_id": flow.txn}, **fields}
        return Outgoing(type_, content, room_id, bot_user)

    await intruder.send(forged(CANCEL, code="m.user", reason="forged"))
    await intruder.send(forged(KEY, key="A" * 43))
    await peer.drive(State.KEYS)
    await intruder.send(forged(MAC, mac={f"ed25519:{patient.device_id}": "A" * 43}, keys="A" * 43))
    await operator_confirms(db_url, bot_env, flow)
    flow.their_keys = await peer.bot_keys(running_bot.app.gateway.device_id)
    await peer.send_steps(flow.confirm().send)
    await peer.drive(State.DONE)
    [done] = await wait_rows(db_url, "verification.done", timeout=15)
    assert done["subject"] == staff.user_id
    # The bot never answered the forgeries: its only cancel is the patient's refusal.
    assert len(peer.bot_events(CANCEL)) == 1
    assert len(await audit_rows(db_url, "verification.cancelled")) == 1


def _sign(obj: dict[str, Any], signer: PkSigning, user_id: str) -> dict[str, Any]:
    unsigned = {k: v for k, v in obj.items() if k not in ("signatures", "unsigned")}
    signature = signer.sign(json.dumps(unsigned, sort_keys=True, separators=(",", ":")))
    obj.setdefault("signatures", {}).setdefault(user_id, {})[f"ed25519:{signer.public_key}"] = (
        signature
    )
    return obj


async def reset_cross_signing(bot_env: BotEnv, user_id: str, password: str) -> None:
    """New master, self-signing and user-signing keys for `user_id`, uploaded from another
    login (`/keys/device_signing/upload`, the password in UIA), as "reset cross-signing" in
    another client does."""
    master, ssk, usk = (PkSigning(PkSigning.generate_seed()) for _ in range(3))

    def key(signer: PkSigning, usage: str) -> dict[str, Any]:
        pub = signer.public_key
        return {"user_id": user_id, "usage": [usage], "keys": {f"ed25519:{pub}": pub}}

    body: dict[str, Any] = {
        "master_key": key(master, "master"),
        "self_signing_key": _sign(key(ssk, "self_signing"), master, user_id),
        "user_signing_key": _sign(key(usk, "user_signing"), master, user_id),
    }
    token, _device = await bot_env.synapse.login(user_id, password)
    base = bot_env.synapse.base_url + "/_matrix/client/v3"
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
        async with http.post(f"{base}/keys/device_signing/upload", json=body) as resp:
            if resp.status == 401:
                body["auth"] = {
                    "type": "m.login.password",
                    "identifier": {"type": "m.id.user", "user": user_id},
                    "password": password,
                    "session": (await resp.json())["session"],
                }
                async with http.post(f"{base}/keys/device_signing/upload", json=body) as retry:
                    assert retry.status == 200, await retry.text()
            else:
                assert resp.status == 200, await resp.text()
        async with http.post(f"{base}/logout") as resp:
            assert resp.status == 200


async def test_a_refused_master_key_signature_is_not_claimed_nor_trusted(
    bot_env: BotEnv,
    running_bot: RunningBot,
    e2ee_user: MakeE2EEUser,
    db_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The bot account's cross-signing was reset from another client while the bot ran: its
    user-signing key is no longer the account's, so Synapse refuses its signature (HTTP 200 with
    `failures`). The verification still completes for the device, but the audit row does not
    claim a signed master key and the person's other devices do not become `verified`."""
    bot_user = bot_env.bot_user
    await reset_cross_signing(bot_env, bot_user, bot_env.config.bot.password)
    staff = await e2ee_user(credentials=bot_env.staff)
    recovery_key = await staff.olm.generate_recovery_key()
    own = await staff.olm.get_own_cross_signing_public_keys()
    assert own is not None
    room_id = await in_dm_with_bot(staff, bot_env, db_url)
    peer = RoomPeer(staff, room_id, bot_user)
    flow = await peer.request(str(own.master_key))
    await peer.drive(State.KEYS)
    await operator_confirms(db_url, bot_env, flow)
    flow.their_keys = await peer.bot_keys(running_bot.app.gateway.device_id)
    await peer.send_steps(flow.confirm().send)
    await peer.drive(State.DONE)
    [done] = await wait_rows(db_url, "verification.done", timeout=15)
    details = json.loads(done["details"])
    assert details["keys_verified"] == 2 and details["master_key_signed"] is False
    assert "Could not publish the signature" in caplog.text and "SignatureRefused" in caplog.text

    second = await e2ee_user(credentials=bot_env.staff)
    await second.olm.verify_with_recovery_key(recovery_key)
    event_id = await second.send_text(room_id, "!chaperone status")
    [executed] = await wait_rows(db_url, "command.executed", event_id=event_id, timeout=20)
    assert json.loads(executed["details"])["trust"] == "cross-signed"
    event_id = await staff.send_text(room_id, "!chaperone status")  # the SAS-verified device
    [executed] = await wait_rows(db_url, "command.executed", event_id=event_id, timeout=20)
    assert json.loads(executed["details"])["trust"] == "verified"
