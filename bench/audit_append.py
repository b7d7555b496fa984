"""Audit append throughput: a 1000-row batch in one transaction vs one transaction per row.

Also times building the chain's hashes alone, keyed (HMAC-SHA256, today's chain) against the
old unkeyed SHA-256 as a baseline in the same run.

    python bench/audit_append.py [--rows 1000] [--repeats 5]

Uses CHAPERONE_TEST_DATABASE_URL (a server URL; a scratch database is created and dropped) or,
without it, a throwaway embedded Postgres with default (durable) settings.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import asyncpg
from yarl import URL

from bot.db.audit import AuditEntry, AuditLog
from bot.db.database import open_databases
from bot.policy.audit_chain import GENESIS_HASH, build_record, derive_chain_key, message_hmac

HMAC_KEY = "bench-hmac-key-0123456789"


def make_entries(n: int, run: str) -> list[AuditEntry]:
    return [
        AuditEntry(
            actor="@therapist:clinic.example",
            action="message.sent",
            room_id="!room:clinic.example",
            event_id=f"${run}-{i}",
            subject=None,
            details={"hmac": message_hmac(HMAC_KEY, f"body {i}"), "msgtype": "m.text"},
        )
        for i in range(n)
    ]


def hash_rate(n: int, key: bytes | None) -> float:
    """Rows per second through build_record alone (canonical JSON + the row hash)."""
    ts = datetime.now(UTC)
    details = {"hmac": message_hmac(HMAC_KEY, "body"), "msgtype": "m.text"}
    prev = GENESIS_HASH
    start = time.perf_counter()
    for i in range(n):
        record = build_record(
            i + 1, ts, "@t:x", "message.sent", "!r:x", f"$e{i}", None, details, prev, key=key
        )
        prev = record.hash
    return n / (time.perf_counter() - start)


async def timed(audit: AuditLog, batches: Sequence[Sequence[AuditEntry]]) -> float:
    """Rows per second appending `batches`, one append (= one transaction) each."""
    start = time.perf_counter()
    written = 0
    for batch in batches:
        written += len(await audit.append(batch))
    elapsed = time.perf_counter() - start
    assert written == sum(len(b) for b in batches), "bench rows were deduplicated"
    return written / elapsed


async def bench(server_url: str, rows: int, repeats: int) -> None:
    name = "chaperone_bench_" + uuid.uuid4().hex[:8]
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        settings = {s: await admin.fetchval(f"SHOW {s}") for s in ("fsync", "synchronous_commit")}
        version = await admin.fetchval("SHOW server_version")
    finally:
        await admin.close()
    server = URL(server_url)
    dbs = await open_databases(str(server.with_path("/" + name).with_query(server.query)))
    try:
        audit = AuditLog(dbs.main, HMAC_KEY)
        await timed(audit, [make_entries(50, "warmup")])
        batch_rates = [
            await timed(audit, [make_entries(rows, f"batch{r}")]) for r in range(repeats)
        ]
        single = await timed(audit, [[e] for e in make_entries(rows, "single")])
        result = await audit.verify()
        assert result.ok, result
    finally:
        await dbs.close()
        admin = await asyncpg.connect(server_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()

    batch = statistics.median(batch_rates)
    print(
        f"Postgres {version}, fsync={settings['fsync']}, "
        f"synchronous_commit={settings['synchronous_commit']}"
    )
    print(
        f"batch append, {rows} rows in one transaction : {batch:>10,.0f} rows/s "
        f"(median of {repeats}: {', '.join(f'{r:,.0f}' for r in batch_rates)})"
    )
    print(f"one transaction per row, {rows} rows        : {single:>10,.0f} rows/s")
    print(f"ratio                                        : {batch / single:>10.1f}x")
    print(f"chain verified: {result.rows} rows")
    unkeyed = statistics.median(hash_rate(20_000, None) for _ in range(3))
    keyed = statistics.median(hash_rate(20_000, derive_chain_key(HMAC_KEY)) for _ in range(3))
    print(f"row hashes alone, unkeyed SHA-256 (old)      : {unkeyed:>10,.0f} rows/s")
    print(f"row hashes alone, keyed HMAC-SHA256 (now)    : {keyed:>10,.0f} rows/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    configured = os.environ.get("CHAPERONE_TEST_DATABASE_URL")
    if configured:
        asyncio.run(bench(configured, args.rows, args.repeats))
        return
    import pgserver

    with tempfile.TemporaryDirectory(prefix="chaperone-bench-") as data_dir:
        server = pgserver.get_server(  # type: ignore[attr-defined]
            data_dir, cleanup_mode="stop"
        )
        try:
            asyncio.run(bench(server.get_uri(), args.rows, args.repeats))
        finally:
            server.cleanup()


if __name__ == "__main__":
    main()
