"""Retention end to end: a real Synapse, real Postgres, real E2EE clients."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import sys
from pathlib import Path
from typing import Any

import asyncpg
import yaml
from mautrix.client import ClientAPI
from mautrix.errors import MNotFound
from mautrix.types import EventID, EventType, RoomID, UserID
from nacl.public import PrivateKey

from bot.devtools.e2ee_client import E2EEClient
from bot.devtools.synapse import SynapseServer
from bot.policy.archive import keypair_text
from tests.e2e.bot_env import BotEnv, RunningBot, base_config
from tests.e2e.test_foundation import audit_rows, wait_rows
from tests.fixtures_synapse import MakeE2EEUser, register_unique_user

RETENTION_STATE = EventType.find("m.room.retention", EventType.Class.STATE)


def configure(env: BotEnv, retention: str = "2s", **extra: Any) -> None:
    """Consent off (its enforcement would redact too), staff may run admin commands, no
    scheduled sweep during the test, the shortest minimum."""
    settings: dict[str, Any] = {
        "defaults__consent": "off",
        "defaults__retention": retention,
        "roles__admins": [env.admin[0], env.staff[0]],
        "retention__minimum": "1s",
        "retention__sweep_interval": "1h",
    }
    env.write_config(**{**settings, **extra})


async def care_room(
    env: BotEnv, staff: E2EEClient, patient: E2EEClient, *, invite_bot: bool = True
) -> RoomID:
    """An encrypted room where the bot has the power to redact and to publish state."""
    room_id = await staff.create_room(
        invite=[patient.user_id, *([env.bot_user] if invite_bot else [])],
        name="care",
        power_level_override={"users": {env.bot_user: 100}},
    )
    await patient.wait_for_membership(room_id, patient.user_id, "invite")
    await patient.join(room_id)
    if invite_bot:
        await staff.wait_for_membership(room_id, env.bot_user, "join")
    return room_id


async def command(
    client: E2EEClient, room_id: RoomID, text: str, expect: str, timeout: float = 30
) -> str:
    """Send `!chaperone <text>` and return the bot's reply containing `expect`."""
    await client.send_text(room_id, f"!chaperone {text}")
    reply = await client.wait_for_message(
        room_id, predicate=lambda e: expect in e.content.body, timeout=timeout
    )
    return reply.content.body


def redacted_targets(client: E2EEClient, room_id: RoomID) -> list[str]:
    return [str(r.redacts) for r in client.received_redactions(room_id)]


async def wait_redacted(client: E2EEClient, room_id: RoomID, event_ids: list[EventID]) -> None:
    for event_id in event_ids:
        await client.wait_for_redaction(room_id, event_id, timeout=30)


async def retention_rows(db_url: str, room_id: str) -> list[dict[str, Any]]:
    rows = await audit_rows(db_url, "message.redacted", room_id=room_id)
    details = [json.loads(r["details"]) for r in rows]
    return [d for d in details if d.get("cause") == "retention"]


async def sql(db_url: str, query: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(db_url)
    try:
        rows: list[asyncpg.Record] = await conn.fetch(query, *args)
        return rows
    finally:
        await conn.close()


def removed_count(report: str) -> int:
    match = re.search(r"(\d+) messages? removed", report)
    assert match, report
    return int(match.group(1))


async def test_sweep_archives_then_removes_only_old_messages_and_preview_matches(
    bot_env: BotEnv, e2ee_user: MakeE2EEUser, db_url: str, tmp_path: Path
) -> None:
    private = PrivateKey.generate()
    key_file = tmp_path / "archive.key"
    key_file.write_text(keypair_text(bytes(private)))
    public = key_file.read_text().split("archive_public_key: ")[1].split()[0]
    configure(bot_env, "4s", retention__archive_public_key=public)
    bot = await RunningBot(bot_env.config).start()
    try:
        staff = await e2ee_user(credentials=bot_env.staff)
        patient = await e2ee_user("patient")
        room_id = await care_room(bot_env, staff, patient)
        old_texts = ["I slept badly again qxw1", "can we move Tuesday? qxw2", "thanks qxw3"]
        old = [await patient.send_text(room_id, text) for text in old_texts]
        old.append(await staff.send_text(room_id, "Tuesday 10:00 works qxw4"))
        old_texts.append("Tuesday 10:00 works qxw4")
        await wait_rows(db_url, "message.sent", count=4, room_id=room_id)
        await asyncio.sleep(4.3)
        new = [await patient.send_text(room_id, "see you then qxw5")]

        preview = await command(staff, room_id, "retention preview", "Retention 4s")
        expected = int(re.search(r"would remove (\d+) message", preview).group(1))  # type: ignore[union-attr]
        assert expected >= len(old)  # the bot's own older notices count too
        report = await command(staff, room_id, "retention sweep", "Retention sweep done")
        assert removed_count(report) == expected
        assert f"{expected} archived first" in report

        await wait_redacted(staff, room_id, old)
        assert not set(new) & set(redacted_targets(staff, room_id))
        assert any(
            "kept for 4s" in e.content.body and "sealed copy" in e.content.body
            for e in patient.received(room_id)
        ), "the room was not told its retention"
        state = await staff.client.get_state_event(room_id, RETENTION_STATE)
        assert state.serialize() == {"max_lifetime": 4000}

        removals = await retention_rows(db_url, room_id)
        assert len(removals) == expected and {d["redacts"] for d in removals} >= set(old)
        archived = await audit_rows(db_url, "message.archived", room_id=room_id)
        assert len(archived) == expected
        swept = await audit_rows(db_url, "retention.swept", room_id=room_id)
        assert [json.loads(r["details"])["removed"] for r in swept] == [expected]
        metrics = bot.app.metrics.registry
        assert metrics.get_sample_value(
            "chaperone_redactions_total", {"cause": "retention"}
        ) == float(expected)
        assert metrics.get_sample_value("chaperone_retention_backlog") == 0.0
        status = await command(staff, room_id, "status", "Retention (redact)")
        assert f"{expected} removed, 0 failed" in status, status
    finally:
        await bot.stop()

    # Every removed message opens again with the private key, exactly as it was sent.
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "archive", "export", "-c", str(bot_env.config_path),
        "--private-key-file", str(key_file), f"room={room_id}",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    records = [json.loads(line) for line in out.decode().splitlines()]
    assert len(records) == expected
    bodies = {r["event_id"]: r["content"].get("body") for r in records}
    assert [bodies[e] for e in old] == old_texts
    assert all(r["readable"] and r["encrypted"] for r in records)
    assert not set(new) & set(bodies)
    wrong_key = tmp_path / "other.key"
    wrong_key.write_text(keypair_text(bytes(PrivateKey.generate())))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "archive", "export", "-c", str(bot_env.config_path),
        "--private-key-file", str(wrong_key),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode == 1 and out == b"" and b"sealed to another key" in err
    # The archive is sealed: no plaintext anywhere in the database.
    dump = await sql(db_url, "SELECT sealed FROM message_archive")
    assert dump and not any(b"qxw1" in r["sealed"] or b"qxw4" in r["sealed"] for r in dump)
    assert len(await audit_rows(db_url, "archive.exported")) == 2


async def test_legal_hold_suspends_removal_until_it_is_lifted(
    bot_env: BotEnv, e2ee_user: MakeE2EEUser, db_url: str
) -> None:
    configure(bot_env, "1s")
    bot = await RunningBot(bot_env.config).start()
    try:
        staff = await e2ee_user(credentials=bot_env.staff)
        patient = await e2ee_user("patient")
        room_id = await care_room(bot_env, staff, patient)
        sent = [await patient.send_text(room_id, f"note {i}") for i in range(3)]
        await command(staff, room_id, "hold on", "Legal hold is on")
        held = await staff.client.get_state_event(room_id, RETENTION_STATE)
        assert held.serialize() == {}  # homeservers purging by retention must hold off too
        await asyncio.sleep(1.1)
        # The reply and the sweep's report may come in either order.
        await command(staff, room_id, "retention sweep", "Retention sweep started")
        report = await staff.wait_for_message(
            room_id, predicate=lambda e: "nothing was removed" in e.content.body
        )
        assert "legal hold" in report.content.body
        assert redacted_targets(staff, room_id) == []
        swept = await audit_rows(db_url, "retention.swept", room_id=room_id)
        assert json.loads(swept[0]["details"])["held"] is True
        assert len(await audit_rows(db_url, "legal_hold.changed", room_id=room_id)) == 1

        await command(staff, room_id, "hold off", "Legal hold is off")
        await command(staff, room_id, "retention sweep", "Retention sweep done")
        await wait_redacted(staff, room_id, sent)
        state = await staff.client.get_state_event(room_id, RETENTION_STATE)
        assert state.serialize() == {"max_lifetime": 1000}
    finally:
        await bot.stop()


async def test_an_interrupted_sweep_finishes_after_a_restart_without_duplicates(
    bot_env: BotEnv, e2ee_user: MakeE2EEUser, db_url: str
) -> None:
    configure(bot_env, "1s")
    bot = await RunningBot(bot_env.config).start()
    staff = await e2ee_user(credentials=bot_env.staff)
    patient = await e2ee_user("patient")
    room_id = await care_room(bot_env, staff, patient)
    sent = [await patient.send_text(room_id, f"message {i}") for i in range(12)]
    await wait_rows(db_url, "message.sent", count=12, room_id=room_id)
    await asyncio.sleep(1.1)
    # Slow each removal down so the stop lands mid-sweep.
    effects = bot.app.effects
    redact = effects.redact

    async def slow_redact(*args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(0.3)
        return await redact(*args, **kwargs)

    effects.redact = slow_redact  # type: ignore[method-assign]
    try:
        await staff.send_text(room_id, "!chaperone retention sweep")
        while len(await retention_rows(db_url, room_id)) < 4:
            await asyncio.sleep(0.05)
    finally:
        await bot.stop()
    done_before = len(await retention_rows(db_url, room_id))
    assert done_before < 12

    bot = await RunningBot(bot_env.config).start()  # sweeps at start: finishes the job
    try:
        await wait_redacted(staff, room_id, sent)
        rows = await wait_rows(db_url, "retention.swept", count=1, room_id=room_id, timeout=30)
        assert rows
    finally:
        await bot.stop()
    targets = [t for t in redacted_targets(staff, room_id) if t in sent]
    assert sorted(targets) == sorted(sent)  # each message redacted exactly once
    removals = [d["redacts"] for d in await retention_rows(db_url, room_id)]
    assert len(removals) == len(set(removals)) and set(sent) <= set(removals)


async def test_history_from_before_the_bot_joined_is_backfilled_and_swept(
    bot_env: BotEnv, e2ee_user: MakeE2EEUser, db_url: str
) -> None:
    configure(bot_env, "1s")
    bot = await RunningBot(bot_env.config).start()
    try:
        staff = await e2ee_user(credentials=bot_env.staff)
        patient = await e2ee_user("patient")
        room_id = await care_room(bot_env, staff, patient, invite_bot=False)
        before = [await patient.send_text(room_id, f"before the bot {i}") for i in range(3)]
        before.append(await staff.send_text(room_id, "noted"))
        await staff.invite(room_id, bot_env.bot_user)
        await staff.wait_for_membership(room_id, bot_env.bot_user, "join")
        await asyncio.sleep(1.1)
        await command(staff, room_id, "retention sweep", "Retention sweep done")
        await wait_redacted(staff, room_id, before)
        tracked = await sql(
            db_url,
            "SELECT event_type FROM tracked_events WHERE event_id = ANY($1::text[])",
            before,
        )
        # Keys were never shared with the bot, yet the metadata was recorded and swept.
        assert [r["event_type"] for r in tracked] == ["m.room.encrypted"] * 4
        assert {d["redacts"] for d in await retention_rows(db_url, room_id)} >= set(before)
    finally:
        await bot.stop()


async def test_retention_below_the_minimum_is_refused(
    bot_env: BotEnv, e2ee_user: MakeE2EEUser, db_url: str
) -> None:
    configure(bot_env, "off", retention__minimum="1m")
    bot = await RunningBot(bot_env.config).start()
    try:
        staff = await e2ee_user(credentials=bot_env.staff)
        patient = await e2ee_user("patient")
        room_id = await care_room(bot_env, staff, patient)
        reply = await command(staff, room_id, "policy set retention 5s", "minimum")
        assert "\n" not in reply.strip() and "1m" in reply
        assert await audit_rows(db_url, "policy.changed", room_id=room_id) == []
        assert "nothing" in await command(staff, room_id, "retention preview", "off")
    finally:
        await bot.stop()


async def test_purge_method_deletes_old_history_from_the_server(
    bot_env: BotEnv, e2ee_user: MakeE2EEUser, db_url: str, synapse: SynapseServer
) -> None:
    admin_user, admin_password = await register_unique_user(synapse, "hsadmin", admin=True)
    token, _ = await synapse.login(admin_user, admin_password)
    configure(bot_env, "1s", retention__method="purge", homeserver__admin_token=token)
    bot = await RunningBot(bot_env.config).start()
    try:
        staff = await e2ee_user(credentials=bot_env.staff)
        patient = await e2ee_user("patient")
        room_id = await care_room(bot_env, staff, patient)
        old = [await patient.send_text(room_id, f"old {i}") for i in range(3)]
        await asyncio.sleep(1.1)
        report = await command(staff, room_id, "retention sweep", "Retention sweep done")
        assert removed_count(report) >= 3
        for event_id in old:
            try:
                await staff.client.get_event(room_id, event_id)
                raise AssertionError(f"{event_id} is still on the server")
            except MNotFound:
                pass
        removals = await retention_rows(db_url, room_id)
        assert {d["method"] for d in removals} == {"purge"} and set(old) <= {
            d["redacts"] for d in removals
        }
    finally:
        await bot.stop()


async def registered_client(
    server: SynapseServer, prefix: str, *, admin: bool = False
) -> ClientAPI:
    """A plain client from shared-secret registration, which hands out a token: no login, so
    the rate-limited server's login limit (other tests use it up) does not apply."""
    name = f"{prefix}-{secrets.token_hex(5)}"
    data = await server.register_account(name, secrets.token_hex(12), admin=admin)
    return ClientAPI(UserID(data["user_id"]), base_url=server.base_url, token=data["access_token"])


async def test_rate_limited_sweep_slows_down_finishes_and_fails_nothing(
    synapse_rate_limited: SynapseServer, db_url: str, tmp_path: Path
) -> None:
    server = synapse_rate_limited
    bot_api, staff, patient = [
        await registered_client(server, name) for name in ("chaperone", "therapist", "patient")
    ]
    config = base_config(server, db_url, tmp_path / "data", bot_api.mxid, "", [staff.mxid], [])
    config["bot"]["access_token"] = bot_api.api.token
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    env = BotEnv(server, tmp_path / "data", config_path, bot_api.mxid, ("", ""), ("", ""))
    configure(env, "1s", roles__admins=[staff.mxid])
    bot = await RunningBot(env.config).start()
    bot_is_admin: dict[str, Any] = {"users": {bot_api.mxid: 100}}
    try:
        room_id = await staff.create_room(
            invitees=[patient.mxid, bot_api.mxid],
            power_level_override=bot_is_admin,
        )
        await patient.join_room_by_id(room_id)
        while room_id not in await bot.app.parts.rooms.managed():
            await asyncio.sleep(0.05)
        sent = [await patient.send_text(room_id, f"m{i}") for i in range(4)]
        sent += [await staff.send_text(room_id, f"s{i}") for i in range(2)]
        await asyncio.sleep(1.1)
        await staff.send_text(room_id, "!chaperone retention sweep")
        rows = await wait_rows(db_url, "retention.swept", room_id=room_id, timeout=120)
        details = json.loads(rows[0]["details"])
        assert details["failed"] == 0 and details["error"] is None
        assert details["rate_limited_waits"] > 0 and details["waited_seconds"] > 1
        assert details["removed"] == details["due"] >= len(sent)
        for event_id in sent:  # what a member now sees: the content is gone
            assert (await staff.get_event(room_id, event_id)).content.serialize() == {}
    finally:
        await bot.stop()
        for api in (bot_api, staff, patient):
            await api.api.session.close()
