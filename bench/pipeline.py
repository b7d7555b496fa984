"""The event pipeline at full speed: catch-up after a stop, and send → audit latency under load,
each against what the same machine can do in the same run.

    .venv/bin/python bench/pipeline.py [--small] [--messages 3000] [--rooms 30]
                                       [--senders 10] [--rate 20] [--seconds 30]

One throwaway Synapse (rate limits off) and an embedded Postgres with its default, durable
settings (fsync on); the bot runs as `python -m bot run -c CONFIG` (a subprocess, as in
production) with consent off, so every message is audited and nothing else is done to it.
Real E2EE senders (`bot.devtools.E2EEClient`, staff) each own some of the encrypted rooms.

(a) Catch-up: the bot starts once (joins the rooms, publishes its keys, gets one message per
    room so olm sessions exist, as for any bot that ran before; `--first-contact` skips that)
    and stops; the senders send `--messages` encrypted messages spread over `--rooms` rooms;
    then the bot is started and timed from spawn until every one of them has its
    `message.sent` audit row (the database polled every 100 ms); also, from the bot's log,
    the first batch's own rate: its events from the /sync response in hand to the commit
    (no interpreter start, imports, log-in or homeserver time). Ceiling, measured afterwards
    in this process on one core with the same primitives the bot uses, over the same events:
    megolm decrypt with python-olm (`InboundGroupSession.decrypt` of each event's ciphertext,
    the senders' sessions), mautrix `Event.deserialize` of each event as /sync gave it, the
    audit chain (the body's HMAC + `build_record` with the key derived from
    `audit.hmac_key`), and a Postgres COPY of the same number of rows (one transaction, into
    a table `LIKE audit_log INCLUDING ALL`) → combined ceiling = 1 / Σ(1/rate). Target:
    ≥ 50% of it.
(b) Steady state: the bot running and caught up, the senders send `--rate` messages/s in
    total (open loop: each room on its own schedule) for `--seconds` s; latency from just
    before the send request to the audit row being visible to another connection (a held
    connection polls `seq > last` every 20 ms: ±20 ms, one index scan each). Baseline: send →
    the sender's own client receiving the event from its /sync, the homeserver's delivery
    floor, for the same messages. Targets: p50 < 250 ms, p99 < 1 s.

`--small`: 300 messages in 10 rooms, 5 senders, 10 s of steady state.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
from _common import (
    BENCH_HMAC_KEY,
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
from mautrix.types import Event, EventType, MessageType, RoomID, TextMessageEventContent

from bot.db.audit import COLUMNS
from bot.devtools.e2ee_client import E2EEClient
from bot.devtools.synapse import start_synapse
from bot.policy.audit_chain import (
    GENESIS_HASH,
    build_record,
    canonical_json,
    derive_chain_key,
    message_hmac,
)

CEILING_SHARE_TARGET = 0.5
P50_TARGET, P99_TARGET = 0.250, 1.0
POLL_SECONDS = 0.02
COMPLIANT_STATE = [
    {
        "type": "m.room.history_visibility",
        "state_key": "",
        "content": {"history_visibility": "joined"},
    },
    {"type": "m.room.guest_access", "state_key": "", "content": {"guest_access": "forbidden"}},
]


class Senders:
    """The E2EE senders, which room each owns, and when each sent message was sent/echoed."""

    def __init__(self, clients: list[E2EEClient]) -> None:
        self.clients = clients
        self.owner: dict[str, E2EEClient] = {}
        self.sent_at: dict[str, float] = {}  # event_id -> wall clock just before the request
        self.echo_at: dict[str, float] = {}  # event_id -> wall clock the sender's sync had it
        for client in clients:
            client.client.add_event_handler(EventType.ROOM_ENCRYPTED, self._on_encrypted)

    async def _on_encrypted(self, evt: Any) -> None:
        self.echo_at.setdefault(str(evt.event_id), time.time())

    async def send(self, room_id: str, body: str) -> str:
        """An encrypted m.text; timed from just before the request (after the member check)."""
        client = self.owner[room_id]
        await client._prepare_group_session(RoomID(room_id))
        content = TextMessageEventContent(msgtype=MessageType.TEXT, body=body)
        sent = time.time()
        event_id = str(
            await client.client.send_message_event(
                RoomID(room_id), EventType.ROOM_MESSAGE, content
            )
        )
        self.sent_at[event_id] = sent
        return event_id


async def audited(conn: asyncpg.Connection, ids: list[str]) -> tuple[int, int]:
    """How many of `ids` have their message.sent row, and how many a decryption.failed one."""
    rows = await conn.fetch(
        "SELECT action, count(*) AS n FROM audit_log WHERE event_id = ANY($1::text[])"
        " AND action IN ('message.sent', 'decryption.failed') GROUP BY action",
        ids,
    )
    got = {r["action"]: r["n"] for r in rows}
    return got.get("message.sent", 0), got.get("decryption.failed", 0)


async def catch_up(
    proc: BotProcess, conn: asyncpg.Connection, ids: list[str], timeout: float
) -> tuple[float, FirstBatch, int]:
    """Seconds from spawn until every one of `ids` is audited (or given up as undecryptable),
    the bot's own first-batch figures, and how many failed to decrypt."""
    proc.start()
    deadline = proc.started + timeout
    while True:
        ok, failed = await audited(conn, ids)
        if ok + failed >= len(ids):
            break
        proc.check_alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {ok} of {len(ids)} messages audited after {timeout} s")
        await asyncio.sleep(0.1)
    total = time.monotonic() - proc.started
    first = await proc.wait_log(
        r"First sync batch processed ([0-9.]+) s after start "
        r"\(received at ([0-9.]+) s, ([0-9]+) timeline events\)",
        5,
    )
    return total, FirstBatch(*map(float, first.groups())), failed


@dataclass
class FirstBatch:
    """The bot's own figures for its first sync batch (seconds since `Chaperone` was made)."""

    processed_at: float
    received_at: float
    events: float

    @property
    def rate(self) -> float:
        """Events per second from the /sync response in hand to the batch committed."""
        return self.events / (self.processed_at - self.received_at)


async def steady_state(
    senders: Senders, rooms: list[str], conn: asyncpg.Connection, rate: float, seconds: float
) -> tuple[list[float], list[float], list[float], float]:
    """Open-loop sends → (visible latencies, row-ts latencies, echo latencies, send rate)."""
    seen: dict[str, tuple[float, datetime]] = {}
    last_seq: int = await conn.fetchval("SELECT coalesce(max(seq), 0) FROM audit_log")
    stop = asyncio.Event()

    async def watch() -> None:
        nonlocal last_seq
        while not stop.is_set():
            rows = await conn.fetch(
                "SELECT seq, event_id, ts FROM audit_log"
                " WHERE seq > $1 AND action = 'message.sent'",
                last_seq,
            )
            now = time.time()
            for row in rows:
                seen.setdefault(row["event_id"], (now, row["ts"]))
                last_seq = max(last_seq, row["seq"])
            await asyncio.sleep(POLL_SECONDS)

    per_room = rate / len(rooms)
    total = int(rate * seconds)
    ids: list[str] = []
    started = time.monotonic()

    async def room_worker(index: int, room_id: str) -> None:
        k = 0
        while True:
            n = index + k * len(rooms)
            if n >= total:
                return
            # Room i's k-th message is due at (i + k·rooms) / rate: the rooms interleave evenly.
            due = started + n / rate
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            ids.append(await senders.send(room_id, f"steady {n} " + "x" * 80))
            k += 1

    assert per_room > 0
    watcher = asyncio.create_task(watch())
    await asyncio.gather(*(room_worker(i, r) for i, r in enumerate(rooms)))
    send_seconds = time.monotonic() - started

    async def all_seen() -> bool:
        return all(e in seen for e in ids) and all(e in senders.echo_at for e in ids)

    try:
        await wait_until(all_seen, 120, "the steady-state messages' audit rows")
    except TimeoutError:
        missing = sum(e not in seen for e in ids)
        print(f"  !! {missing} of {len(ids)} steady-state messages never got an audit row")
    finally:
        stop.set()
        await watcher
    done = [e for e in ids if e in seen and e in senders.echo_at]
    visible = [seen[e][0] - senders.sent_at[e] for e in done]
    stamped = [seen[e][1].timestamp() - senders.sent_at[e] for e in done]
    echo = [senders.echo_at[e] - senders.sent_at[e] for e in done]
    return visible, stamped, echo, len(ids) / send_seconds


async def fetch_raw(api: Api, room_id: str, wanted: set[str]) -> list[dict[str, Any]]:
    """The room's events with the wanted IDs, exactly as the server serves them."""
    found: list[dict[str, Any]] = []
    token: str | None = None
    while True:
        params = {"dir": "b", "limit": "500"}
        if token:
            params["from"] = token
        page = await api.call("GET", f"/_matrix/client/v3/rooms/{room_id}/messages", **params)
        for evt in page.get("chunk", []):
            if evt.get("event_id") in wanted:
                evt["room_id"] = room_id
                found.append(evt)
        token = page.get("end")
        if not page.get("chunk") or not token:
            return found


def rate_of(n: int, fn: Any, repeats: int = 3) -> float:
    """Median items/s of `fn()` (which handles n items) over `repeats` runs."""
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        rates.append(n / (time.perf_counter() - started))
    return statistics.median(rates)


async def ceilings(
    senders: Senders, events: list[dict[str, Any]], db_url: str
) -> dict[str, float]:
    """Single-core rates of the bot's hot-path primitives over the same events."""
    sessions = {}
    for evt in events:
        content = evt["content"]
        key = (evt["room_id"], content["session_id"])
        if key not in sessions:
            client = senders.owner[evt["room_id"]]
            session = await client.crypto_store.get_group_session(RoomID(key[0]), key[1])
            assert session is not None, "the sender lost its own megolm session"
            sessions[key] = session
    work = [(sessions[(e["room_id"], e["content"]["session_id"])], e) for e in events]
    n = len(work)
    bodies: list[str] = []

    def decrypt() -> None:
        bodies.clear()
        for session, evt in work:
            plaintext, _index = session.decrypt(evt["content"]["ciphertext"])
            bodies.append(plaintext)

    def deserialize() -> None:
        for _session, evt in work:
            Event.deserialize(evt)

    chain_key = derive_chain_key(BENCH_HMAC_KEY)
    hmac_key = BENCH_HMAC_KEY.encode()
    records: list[tuple[Any, ...]] = []

    def chain() -> None:
        records.clear()
        prev, ts = GENESIS_HASH, datetime.now(UTC)
        for seq, ((_s, evt), body) in enumerate(zip(work, bodies, strict=True), start=1):
            details = {
                "hmac": message_hmac(hmac_key, body),
                "msgtype": "m.text",
                "encrypted": True,
            }
            rec = build_record(
                seq,
                ts,
                evt["sender"],
                "message.sent",
                evt["room_id"],
                evt["event_id"],
                None,
                details,
                prev,
                key=chain_key,
            )
            prev = rec.hash
            records.append(
                (
                    *(getattr(rec, c) for c in COLUMNS[:7]),
                    canonical_json(details),
                    rec.prev_hash,
                    rec.hash,
                )
            )

    rates = {
        "megolm decrypt (python-olm)": rate_of(n, decrypt),
        "Event.deserialize (mautrix)": rate_of(n, deserialize),
        "audit chain (HMAC + build_record)": rate_of(n, chain),
    }
    conn = await asyncpg.connect(db_url)
    try:
        copy_rates = []
        for i in range(3):
            table = f"bench_copy_{i}"
            await conn.execute(f"CREATE TABLE {table} (LIKE audit_log INCLUDING ALL)")
            started = time.perf_counter()
            async with conn.transaction():
                await conn.copy_records_to_table(table, records=records, columns=COLUMNS)
            copy_rates.append(n / (time.perf_counter() - started))
        rates["Postgres COPY, one transaction"] = statistics.median(copy_rates)
    finally:
        await conn.close()
    return rates


async def bench(args: argparse.Namespace, root: Path) -> None:
    n_msgs, n_rooms, n_senders = args.messages, args.rooms, args.senders
    report = Report(
        f"bench/pipeline.py: {n_msgs:,} messages in {n_rooms} rooms from {n_senders} senders;"
        f" steady {args.rate:g} msgs/s for {args.seconds:g} s"
    )
    report.notes.append(env_line())
    report.notes.append(
        "the bot is spawned with its bytecode compiled beforehand, as installed from a wheel"
        " (bench/_common.py bot_env)"
    )
    pg, server_url = await asyncio.to_thread(start_postgres, root / "pg")
    synapse = await start_synapse(root / "synapse")
    clients: list[E2EEClient] = []
    proc: BotProcess | None = None
    conn: asyncpg.Connection | None = None
    try:
        report.notes.append(await postgres_settings(server_url))
        bot = await register(synapse, "chaperone")
        people = [await register(synapse, f"staff{i}") for i in range(n_senders)]
        for person in people:
            clients.append(
                await E2EEClient.login(synapse.base_url, person["user_id"], person["password"])
            )
        senders = Senders(clients)
        rooms: list[str] = []
        for i in range(n_rooms):
            owner = clients[i % n_senders]
            room_id = str(
                await owner.create_room(
                    invite=[bot["user_id"]],
                    initial_state=COMPLIANT_STATE,
                    power_level_override={"users": {bot["user_id"]: 100}},
                )
            )
            senders.owner[room_id] = owner
            rooms.append(room_id)
        db_url = await fresh_database(server_url, "bench_pipeline")
        work = root / "bot"
        work.mkdir()
        staff_ids = [p["user_id"] for p in people]
        config = write_bot_config(
            work / "config.yaml",
            base_url=synapse.base_url,
            db_url=db_url,
            bot=bot,
            admins=staff_ids[:1],
            staff=staff_ids,
        )
        proc = BotProcess(config, work / "bot.log").start()
        for room_id in rooms:
            await senders.owner[room_id].wait_for_membership(
                RoomID(room_id), bot["user_id"], "join", timeout=120
            )
        await proc.wait_log(r"First sync batch processed", 60)
        conn = await asyncpg.connect(db_url)
        if not args.first_contact:
            # A bot that has run before: olm sessions with every sender exist. (Without this,
            # every sender's first room keys reach the bot together at its start.)
            # First one room per sender: olm keys for two rooms from one sender in one sync
            # race in the bot (BAD_MESSAGE_KEY_ID; see --first-contact).
            for phase in (rooms[:n_senders], rooms[n_senders:]):
                warm = [await senders.send(r, "warm-up") for r in phase]

                async def warmed(warm: list[str] = warm) -> bool:
                    return (await audited(conn, warm))[0] == len(warm)

                await wait_until(warmed, 60, "the warm-up messages' audit rows")
        else:
            await asyncio.sleep(2)  # the bot loads each room's state after joining
        proc.stop()
        print(f"  bot joined {n_rooms} rooms and stopped", flush=True)

        # (a) catch-up
        started = time.monotonic()
        per_room = n_msgs // n_rooms
        catch_ids: dict[str, list[str]] = {r: [] for r in rooms}

        async def fill(client: E2EEClient) -> None:
            for room_id in [r for r in rooms if senders.owner[r] is client]:
                for k in range(per_room):
                    catch_ids[room_id].append(
                        await senders.send(room_id, f"catch-up {k} " + "x" * 80)
                    )

        await asyncio.gather(*(fill(c) for c in clients))
        sent = sum(len(v) for v in catch_ids.values())
        send_s = time.monotonic() - started
        print(
            f"  sent {sent} messages while the bot was stopped, {sent / send_s:.0f}/s", flush=True
        )
        all_ids = [e for ids in catch_ids.values() for e in ids]
        catch_s, first_batch, lost = await catch_up(proc, conn, all_ids, timeout=1800)
        catch_rate = sent / catch_s
        print(f"  caught up in {catch_s:.1f} s = {catch_rate:.0f} events/s", flush=True)

        # (b) steady state, the bot running and caught up
        visible, stamped, echo, send_rate = await steady_state(
            senders, rooms, conn, args.rate, args.seconds
        )
        failed = await conn.fetchval(
            "SELECT count(*) FROM audit_log WHERE action IN ('decryption.failed', 'event.failed')"
        )
        await conn.close()
        conn = None
        proc.stop()
        warnings = proc.log_text().count(" WARNING ")

        # ceilings, the bot stopped
        api = Api(synapse.base_url, "")
        events: list[dict[str, Any]] = []
        for room_id in rooms:
            api.token = senders.owner[room_id].client.api.token
            events += await fetch_raw(api, room_id, set(catch_ids[room_id]))
        await api.close()
        assert len(events) == sent, (len(events), sent)
        rates = await ceilings(senders, events, db_url)
    finally:
        if conn is not None:
            await conn.close()
        if proc is not None:
            proc.stop()
        for client in clients:
            await client.close()
        synapse.stop()
        pg.cleanup()

    ceiling = 1 / sum(1 / r for r in rates.values())
    if lost:
        report.notes.append(
            f"!! {lost} of the {sent} catch-up messages could not be decrypted by the bot"
            " (decryption.failed): the catch-up time includes waiting for their keys"
        )
    report.notes.append(
        f"bot log: {warnings} WARNING lines; {failed} decryption.failed/event.failed rows"
    )
    report.add(
        f"(a) catch-up: {sent:,} messages, spawn → all audited ({catch_s:.1f} s)",
        f"{catch_rate:,.0f} events/s",
        f"ceiling {ceiling:,.0f} events/s",
        f"{catch_rate / ceiling:.1%}",
        f">= {CEILING_SHARE_TARGET:.0%} of ceiling",
        catch_rate >= CEILING_SHARE_TARGET * ceiling,
    )
    report.add(
        f"    first batch: /sync in hand {first_batch.received_at:.2f} s, processed"
        f" {first_batch.processed_at:.2f} s after start (bot's clock), {first_batch.events:,.0f}"
        " events",
        f"{first_batch.rate:,.0f} events/s",
        "same ceiling",
        f"{first_batch.rate / ceiling:.1%}",
    )
    for name, r in rates.items():
        report.add(f"    ceiling part: {name}", "", f"{r:,.0f}/s", "")
    report.add(
        f"(b) steady state: {len(visible)} messages at {send_rate:.1f}/s, send → audit row p50",
        f"{percentile(visible, 50) * 1000:,.0f} ms",
        f"sender's own /sync echo {percentile(echo, 50) * 1000:,.0f} ms",
        f"{percentile(visible, 50) / percentile(echo, 50):.1f}x",
        f"< {P50_TARGET * 1000:.0f} ms",
        percentile(visible, 50) < P50_TARGET,
    )
    report.add(
        "    p95",
        f"{percentile(visible, 95) * 1000:,.0f} ms",
        f"echo {percentile(echo, 95) * 1000:,.0f} ms",
        f"{percentile(visible, 95) / percentile(echo, 95):.1f}x",
    )
    report.add(
        "    p99",
        f"{percentile(visible, 99) * 1000:,.0f} ms",
        f"echo {percentile(echo, 99) * 1000:,.0f} ms",
        f"{percentile(visible, 99) / percentile(echo, 99):.1f}x",
        f"< {P99_TARGET * 1000:.0f} ms",
        percentile(visible, 99) < P99_TARGET,
    )
    report.add(
        "    send → row's own ts stamp (before commit) p50/p99",
        f"{percentile(stamped, 50) * 1000:,.0f} / {percentile(stamped, 99) * 1000:,.0f} ms",
    )
    report.print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="300 messages, 10 rooms, 10 s")
    parser.add_argument("--messages", type=int)
    parser.add_argument("--rooms", type=int)
    parser.add_argument("--senders", type=int)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--seconds", type=float)
    parser.add_argument(
        "--first-contact",
        action="store_true",
        help="no warm-up: the senders' first olm messages to the bot arrive during catch-up",
    )
    args = parser.parse_args()
    quiet_mautrix()
    small = args.small
    args.messages = args.messages or (300 if small else 3000)
    args.rooms = args.rooms or (10 if small else 30)
    args.senders = args.senders or (5 if small else 10)
    args.seconds = args.seconds or (10.0 if small else 30.0)
    with tempfile.TemporaryDirectory(prefix="chaperone-bench-") as tmp:
        asyncio.run(bench(args, Path(tmp)))


if __name__ == "__main__":
    main()
