"""Consent violation → the patient sees the redaction: send-to-redaction latency under Synapse's
default rate limits, with the bot exempt from them and without.

    .venv/bin/python bench/violation.py [--small] [--messages 100] [--limited-messages 30]
                                        [--interval 0.3] [--window 60]

For each case a throwaway Synapse with its default rate limits (as in production) and a fresh
database on one embedded Postgres with its default, durable settings (fsync on). A staff
member makes an encrypted room with a patient (a real E2EE client, `bot.devtools.E2EEClient`)
and the bot (`python -m bot run -c CONFIG`, a subprocess; consent required, enforcement
redact). The staff member and the patient are exempted from the limits, so only the bot's own
requests meet them. The patient, who never consented, sends a message every `--interval` s;
each latency runs from just before the send request to the redaction reaching the patient's
client through its /sync. Baseline, the same messages: send → the patient's own client
receiving its message (the homeserver's delivery floor).

(a) `homeserver.admin_token` set: the bot exempts itself at start. Target: p99 < 500 ms.
(b) no admin token, the bot not exempt: Synapse paces it (`rc_message` 0.2/s after a burst of
    10, which redactions of others' events fall under); reported: how many of
    `--limited-messages` were redacted within `--window` s of the last send, and the rate.

`--small`: 30 and 15 messages, a 30 s window.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import (
    Api,
    BotProcess,
    Report,
    env_line,
    fresh_database,
    percentile,
    postgres_settings,
    quiet_mautrix,
    register,
    start_postgres,
    wait_until,
    write_bot_config,
)
from mautrix.types import EventType, MessageType, RoomID, TextMessageEventContent

from bot.devtools.e2ee_client import E2EEClient
from bot.devtools.synapse import start_synapse

P99_TARGET = 0.5


class Patient:
    """The patient's client, timing each send and when its echo and its redaction arrive."""

    def __init__(self, client: E2EEClient, room_id: str) -> None:
        self.client = client
        self.room_id = room_id
        self.sent_at: dict[str, float] = {}
        self.echo_at: dict[str, float] = {}
        self.redacted_at: dict[str, float] = {}
        client.client.add_event_handler(EventType.ROOM_ENCRYPTED, self._on_encrypted)
        client.client.add_event_handler(EventType.ROOM_REDACTION, self._on_redaction)

    async def _on_encrypted(self, evt: Any) -> None:
        self.echo_at.setdefault(str(evt.event_id), time.time())

    async def _on_redaction(self, evt: Any) -> None:
        target = getattr(evt, "redacts", None) or evt.content.get("redacts")
        if target:
            self.redacted_at.setdefault(str(target), time.time())

    async def send(self, body: str) -> str:
        room = RoomID(self.room_id)
        await self.client._prepare_group_session(room)
        content = TextMessageEventContent(msgtype=MessageType.TEXT, body=body)
        sent = time.time()
        event_id = str(
            await self.client.client.send_message_event(room, EventType.ROOM_MESSAGE, content)
        )
        self.sent_at[event_id] = sent
        return event_id


async def run_case(
    root: Path,
    server_url: str,
    name: str,
    exempt: bool,
    messages: int,
    interval: float,
    window: float,
) -> dict[str, Any]:
    synapse = await start_synapse(root / f"synapse-{name}", rate_limits=True)
    patient_client: E2EEClient | None = None
    proc: BotProcess | None = None
    try:
        admin = await register(synapse, "admin", admin=True)
        staff = await register(synapse, "staff")
        patient = await register(synapse, "patient")
        bot = await register(synapse, "chaperone")
        admin_api = Api(synapse.base_url, admin["access_token"])
        for user in (staff, patient):  # only the bot's own requests should meet the limits
            await admin_api.exempt(user["user_id"])
        await admin_api.close()
        staff_api = Api(synapse.base_url, staff["access_token"])
        room_id = await staff_api.create_room(
            [patient["user_id"], bot["user_id"]], power=[bot["user_id"]]
        )
        await staff_api.close()
        work = root / f"bot-{name}"
        work.mkdir()
        config = write_bot_config(
            work / "config.yaml",
            base_url=synapse.base_url,
            db_url=await fresh_database(server_url, f"bench_violation_{name}"),
            bot=bot,
            admins=[staff["user_id"]],
            staff=[staff["user_id"]],
            consent="required",
            admin_token=admin["access_token"] if exempt else "",
        )
        proc = BotProcess(config, work / "bot.log").start()
        patient_client = await E2EEClient.login(
            synapse.base_url, patient["user_id"], patient["password"]
        )
        await patient_client.join(RoomID(room_id))
        await patient_client.wait_for_membership(RoomID(room_id), bot["user_id"], "join", 60)
        await proc.wait_log(r"First sync batch processed", 60)
        await asyncio.sleep(3)  # the bot's greeting and consent form go out first
        exempted = (
            "Exempted the bot's account from the homeserver's rate limits" in proc.log_text()
        )
        p = Patient(patient_client, room_id)
        ids = []
        started = time.monotonic()
        for i in range(messages):
            await asyncio.sleep(max(0.0, started + i * interval - time.monotonic()))
            ids.append(await p.send(f"violation {i}: please call me back"))
        last_send = time.monotonic()

        async def done() -> bool:
            return all(e in p.redacted_at for e in ids) and all(e in p.echo_at for e in ids)

        try:
            await wait_until(done, window, "the redactions")
        except TimeoutError:
            pass
        waited = time.monotonic() - last_send
        redacted = [e for e in ids if e in p.redacted_at]
        latencies = [p.redacted_at[e] - p.sent_at[e] for e in redacted]
        echo = [p.echo_at[e] - p.sent_at[e] for e in ids if e in p.echo_at]
        first_sent = min(p.sent_at[e] for e in ids)
        last_redacted = max((p.redacted_at[e] for e in redacted), default=first_sent)
        return {
            "name": name,
            "exempt_requested": exempt,
            "exempted": exempted,
            "sent": len(ids),
            "redacted": len(redacted),
            "latencies": latencies,
            "echo": echo,
            "rate": len(redacted) / max(last_redacted - first_sent, 1e-9),
            "send_rate": len(ids) / max(last_send - started, 1e-9),
            "waited": waited,
        }
    finally:
        if patient_client is not None:
            await patient_client.close()
        if proc is not None:
            proc.stop()
        synapse.stop()


def ms(values: list[float], p: float) -> str:
    return f"{percentile(values, p) * 1000:,.0f} ms" if values else "n/a"


async def bench(args: argparse.Namespace, root: Path) -> None:
    report = Report(
        "bench/violation.py: a patient without consent sends one message every"
        f" {args.interval:g} s; send → the patient's client sees the redaction"
    )
    report.notes.append(env_line())
    pg, server_url = await asyncio.to_thread(start_postgres, root / "pg")
    try:
        report.notes.append(await postgres_settings(server_url))
        exempt = await run_case(
            root, server_url, "exempt", True, args.messages, args.interval, 30.0
        )
        paced = await run_case(
            root, server_url, "paced", False, args.limited_messages, args.interval, args.window
        )
    finally:
        pg.cleanup()

    for case in (exempt, paced):
        report.notes.append(
            f"({case['name']}) sent {case['sent']} at {case['send_rate']:.1f}/s; redacted"
            f" {case['redacted']}; the bot logged that it exempted itself: {case['exempted']}"
        )
    lat, echo = exempt["latencies"], exempt["echo"]
    for p, target in ((50, None), (95, None), (99, P99_TARGET)):
        report.add(
            f"(a) bot exempt (admin_token), {exempt['redacted']}/{exempt['sent']} redacted: p{p}",
            ms(lat, p),
            f"patient's own echo p{p} {ms(echo, p)}",
            f"{percentile(lat, p) / percentile(echo, p):.1f}x" if lat and echo else "",
            f"< {target * 1000:.0f} ms" if target else "",
            (bool(lat) and exempt["redacted"] == exempt["sent"] and percentile(lat, p) < target)
            if target
            else None,
        )
    lat, echo = paced["latencies"], paced["echo"]
    report.add(
        f"(b) bot not exempt: redacted within {paced['waited']:.0f} s of the last send",
        f"{paced['redacted']} of {paced['sent']}",
        f"(a) {exempt['redacted']} of {exempt['sent']}",
    )
    report.add(
        "(b) redactions per second, first send → last redaction seen",
        f"{paced['rate']:.2f}/s",
        f"(a) {exempt['rate']:.2f}/s",
        f"{paced['rate'] / exempt['rate']:.2f}" if exempt["rate"] else "",
    )
    for p in (50, 95, 99):
        report.add(
            f"(b) bot not exempt, of those redacted: p{p}",
            ms(lat, p),
            f"patient's own echo p{p} {ms(echo, p)}",
            f"{percentile(lat, p) / percentile(echo, p):.1f}x" if lat and echo else "",
        )
    report.print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="30 and 15 messages, 30 s window")
    parser.add_argument("--messages", type=int)
    parser.add_argument("--limited-messages", type=int)
    parser.add_argument("--interval", type=float, default=0.3)
    parser.add_argument("--window", type=float)
    args = parser.parse_args()
    quiet_mautrix()
    args.messages = args.messages or (30 if args.small else 100)
    args.limited_messages = args.limited_messages or (15 if args.small else 30)
    args.window = args.window or (30.0 if args.small else 60.0)
    with tempfile.TemporaryDirectory(prefix="chaperone-bench-") as tmp:
        asyncio.run(bench(args, Path(tmp)))


if __name__ == "__main__":
    main()
