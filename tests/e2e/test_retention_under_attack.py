"""Retention under pressure, end to end (real Synapse, Postgres and E2EE clients): a legal hold
that arrives while a sweep archives stops every removal, by either method; a retention Matrix
cannot represent is refused; a failing `m.room.retention` publish never repeats the notice."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from mautrix.errors import MNotFound, make_request_error
from nacl.public import PrivateKey

from bot.devtools.synapse import SynapseServer
from bot.matrix.effects import EffectResult
from bot.policy.archive import keypair_text
from bot.policy.retention import TrackedEvent
from tests.e2e.bot_env import BotEnv, RunningBot
from tests.e2e.test_foundation import audit_rows
from tests.e2e.test_retention import (
    care_room,
    command,
    configure,
    redacted_targets,
    retention_rows,
    sql,
)
from tests.fixtures_synapse import MakeE2EEUser, register_unique_user


def archive_key(tmp_path: Path) -> str:
    key_file = tmp_path / "archive.key"
    key_file.write_text(keypair_text(bytes(PrivateKey.generate())))
    return key_file.read_text().split("archive_public_key: ")[1].split()[0]


@pytest.mark.parametrize("method", ["redact", "purge"])
async def test_a_legal_hold_arriving_mid_archive_stops_every_removal(
    method: str,
    bot_env: BotEnv,
    e2ee_user: MakeE2EEUser,
    db_url: str,
    synapse: SynapseServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    extra: dict[str, Any] = {"retention__archive_public_key": archive_key(tmp_path)}
    if method == "purge":
        admin_user, admin_password = await register_unique_user(synapse, "hsadmin", admin=True)
        token, _ = await synapse.login(admin_user, admin_password)
        extra |= {"retention__method": "purge", "homeserver__admin_token": token}
    configure(bot_env, "1s", **extra)
    bot = await RunningBot(bot_env.config).start()
    try:
        staff = await e2ee_user(credentials=bot_env.staff)
        patient = await e2ee_user("patient")
        room_id = await care_room(bot_env, staff, patient)
        sent = [await patient.send_text(room_id, f"note {i}") for i in range(3)]
        await asyncio.sleep(1.2)

        app = bot.app
        assert app.parts.retention.archiver is not None
        archiver = app.parts.retention.archiver
        archive_event = archiver.archive_event
        held: list[str] = []

        async def archive_then_hold(event: TrackedEvent, raw: dict[str, Any]) -> bool:
            readable = await archive_event(event, raw)
            if not held:
                # Another instance (or an admin at the database) puts the hold on: written
                # through a connection of its own, so no in-process signal reaches the sweep.
                await sql(
                    db_url,
                    "INSERT INTO room_policy (room_id, legal_hold, updated_by, updated_at)"
                    " VALUES ($1, true, 'test', now()) ON CONFLICT (room_id)"
                    " DO UPDATE SET legal_hold = true",
                    room_id,
                )
                held.append(event.event_id)
            return readable

        removals: list[str] = []
        redact, purge = app.effects.redact, app.effects.purge_history

        async def counting_redact(
            room: str, event_id: str, reason: str, **kwargs: Any
        ) -> EffectResult:
            removals.append(event_id)
            return await redact(room, event_id, reason, **kwargs)

        async def counting_purge(room: str, up_to: str) -> EffectResult:
            removals.append(up_to)
            return await purge(room, up_to)

        monkeypatch.setattr(archiver, "archive_event", archive_then_hold)
        monkeypatch.setattr(app.effects, "redact", counting_redact)
        monkeypatch.setattr(app.effects, "purge_history", counting_purge)

        await command(staff, room_id, "retention sweep", "Retention sweep started")
        report = await staff.wait_for_message(
            room_id,
            predicate=lambda e: (
                e.content.body.startswith("Retention sweep") and "started" not in e.content.body
            ),
            timeout=30,
        )
        assert held, "the sweep archived nothing, so the hold never arrived mid-archive"
        text = report.content.body
        assert "legal hold" in text and "nothing was removed" in text, text
        assert removals == []
        await asyncio.sleep(0.5)
        assert redacted_targets(staff, room_id) == []
        for event_id in sent:  # still on the server (a purge would have deleted them)
            try:
                await staff.client.get_event(room_id, event_id)
            except MNotFound:
                raise AssertionError(f"{event_id} was removed under a legal hold") from None
        assert await retention_rows(db_url, room_id) == []
        swept = [json.loads(r["details"]) for r in await audit_rows(db_url, "retention.swept")]
        mine = [d for d in swept if d["trigger"] == "command"]
        assert mine and mine[-1]["held"] is True and mine[-1]["removed"] == 0, mine
    finally:
        await bot.stop()


async def test_retention_matrix_cannot_hold_is_refused_and_the_notice_goes_out_once(
    bot_env: BotEnv, e2ee_user: MakeE2EEUser, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(bot_env, "off")
    bot = await RunningBot(bot_env.config).start()
    try:
        staff = await e2ee_user(credentials=bot_env.staff)
        patient = await e2ee_user("patient")
        room_id = await care_room(bot_env, staff, patient)

        reply = await command(staff, room_id, "policy set retention 99999999999y", "285616y")
        assert "\n" not in reply.strip() and "retention" in reply, reply
        assert await audit_rows(db_url, "policy.changed", room_id=room_id) == []

        set_state = bot.app.effects.set_state
        attempts: list[str] = []

        async def refusing_set_state(
            room: str, event_type: str, content: dict[str, Any], state_key: str = ""
        ) -> EffectResult:
            if event_type == "m.room.retention":
                attempts.append(room)
                raise make_request_error(
                    400, "{}", "M_BAD_JSON", "JSON integer out of range", None
                )
            return await set_state(room, event_type, content, state_key)

        monkeypatch.setattr(bot.app.effects, "set_state", refusing_set_state)
        await command(staff, room_id, "policy set retention 2s", "Policy changed")
        # The change back-fills history, then publishes (refused here) and tells the room.
        deadline = asyncio.get_running_loop().time() + 20
        while not any("kept for 2s" in e.content.body for e in patient.received(room_id)):
            assert asyncio.get_running_loop().time() < deadline, "the room was never told"
            await asyncio.sleep(0.1)
        await asyncio.sleep(2)
        assert attempts, "publishing m.room.retention was never attempted"
        told = [e for e in patient.received(room_id) if "kept for 2s" in e.content.body]
        assert len(told) == 1, [e.content.body for e in told]
    finally:
        await bot.stop()
