"""The end-to-end harness itself: a real Synapse, real E2EE users, real process clean-up."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest
from mautrix.api import Method
from mautrix.api import Path as ApiPath

from bot.devtools.e2ee_client import E2EEClient
from bot.devtools.synapse import SynapseError, SynapseServer, start_synapse
from tests.fixtures_synapse import MakeE2EEUser, MakeUser, register_unique_user


async def test_encrypted_message_reaches_invited_user_and_redaction_follows(
    e2ee_user: MakeE2EEUser,
) -> None:
    alice = await e2ee_user("alice")
    bob = await e2ee_user("bob")

    room_id = await alice.create_room(invite=[bob.user_id], name="harness")
    await bob.wait_for_membership(room_id, bob.user_id, "invite")
    await bob.join(room_id)

    started = time.monotonic()
    event_id = await alice.send_text(room_id, "hello bob")
    received = await bob.wait_for_message(room_id, sender=alice.user_id)
    first_round_trip = time.monotonic() - started

    assert received.event_id == event_id
    assert received.content.body == "hello bob"
    assert E2EEClient.was_encrypted(received)
    raw = await bob.client.api.request(
        Method.GET, ApiPath.v3.rooms[room_id].event[event_id], metrics_method="getEvent"
    )
    assert raw["type"] == "m.room.encrypted"
    assert "hello bob" not in str(raw["content"])

    started = time.monotonic()
    reply_id = await bob.send_text(room_id, "hi alice")
    reply = await alice.wait_for_message(room_id)
    warm_round_trip = time.monotonic() - started
    assert (reply.event_id, reply.content.body) == (reply_id, "hi alice")

    await alice.redact(room_id, event_id, reason="harness")
    redaction = await bob.wait_for_redaction(room_id, event_id)
    assert redaction.sender == alice.user_id

    print(f"first E2EE round trip {first_round_trip:.3f} s, warm {warm_round_trip:.3f} s")


async def test_wait_for_message_sees_earlier_messages_once_each(
    e2ee_user: MakeE2EEUser,
) -> None:
    alice = await e2ee_user("alice")
    bob = await e2ee_user("bob")
    room_id = await alice.create_room(invite=[bob.user_id])
    await bob.join(room_id)

    await alice.send_text(room_id, "one")
    await alice.send_text(room_id, "two")
    async with asyncio.timeout(20):
        while len(bob.received(room_id)) < 2:
            await asyncio.sleep(0.05)

    bodies = [(await bob.wait_for_message(room_id)).content.body for _ in range(2)]
    assert bodies == ["one", "two"]
    assert (await alice.wait_for_message(room_id, sender=alice.user_id)).content.body == "one"
    with pytest.raises(TimeoutError):
        await bob.wait_for_message(room_id, timeout=0.3)
    assert bob.undecryptable(room_id) == []


async def test_rate_limits_off_by_default_and_on_when_asked(
    synapse: SynapseServer, synapse_rate_limited: SynapseServer, make_user: MakeUser
) -> None:
    user_id, password = await make_user("logins")
    for _ in range(8):
        await synapse.login(user_id, password)

    limited_id, limited_password = await register_unique_user(synapse_rate_limited, "logins")
    with pytest.raises(SynapseError, match="HTTP 429"):
        for _ in range(8):
            await synapse_rate_limited.login(limited_id, limited_password)


async def test_stop_leaves_no_process_behind(tmp_path: Path) -> None:
    server = await start_synapse(tmp_path / "synapse")
    assert server.start_seconds > 0
    pid = server.pid
    os.kill(pid, 0)  # alive

    server.stop()
    server.stop()  # idempotent

    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)
    assert server.process.returncode is not None
