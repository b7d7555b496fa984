"""Audit chain verify and append at scale: `chaperone audit verify` and `AuditLog.verify` over
200,000 rows vs a raw read of the same rows; 1,000-row appends vs a raw COPY of the same rows.

    .venv/bin/python bench/verify.py [--small] [--rows 200000] [--batch 1000]

A throwaway embedded Postgres with its default, durable settings (fsync on). The rows are
appended through `bot.db.audit.AuditLog` (the keyed chain, `audit.hmac_key`) in batches; each
batch is also written by a raw `COPY` (asyncpg `copy_records_to_table`, one transaction, the
rows already chained) into a table made `LIKE audit_log INCLUDING ALL`, interleaved so both
meet the same load. Then the chain is verified in-process (`AuditLog.verify`) and by the CLI
(`python -m bot audit verify -c CONFIG`, a subprocess: interpreter start, imports and
connection included; its fixed cost is measured on an empty, migrated database in the same
run), and the same rows are read raw (asyncpg cursor of every column in seq order, the
prefetch the bot uses, in one repeatable-read snapshot). `--small`: 20,000 rows.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
from _common import (
    BENCH_HMAC_KEY,
    REPO,
    Report,
    env_line,
    fresh_database,
    postgres_settings,
    start_postgres,
    write_bot_config,
)

from bot.db.audit import COLUMNS, STREAM_PREFETCH, AuditEntry, AuditLog
from bot.db.database import open_databases
from bot.policy.audit_chain import (
    GENESIS_HASH,
    build_record,
    canonical_json,
    derive_chain_key,
    message_hmac,
)

VERIFY_TARGET = 100_000  # rows/s, issue 11
APPEND_RATIO_TARGET = 0.8


def entries(batch: int, size: int) -> list[AuditEntry]:
    """Rows shaped like the bot's commonest one: message.sent with the body's HMAC."""
    return [
        AuditEntry(
            actor=f"@patient-{i % 50}:clinic.example",
            action="message.sent",
            room_id=f"!room{i % 30}:clinic.example",
            event_id=f"$bench-{batch}-{i}-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            details={
                "hmac": message_hmac(BENCH_HMAC_KEY, f"body {batch} {i}"),
                "msgtype": "m.text",
                "encrypted": True,
            },
        )
        for i in range(size)
    ]


def chained_rows(
    batch: list[AuditEntry], seq: int, prev: str, key: bytes
) -> tuple[list[tuple[object, ...]], int, str]:
    """The same rows as the log would store them (seq, ts, hash), for the raw COPY."""
    ts = datetime.now(UTC)
    rows = []
    for e in batch:
        seq += 1
        rec = build_record(
            seq,
            ts,
            e.actor,
            e.action,
            e.room_id,
            e.event_id,
            e.subject,
            dict(e.details),
            prev,
            key=key,
        )
        prev = rec.hash
        rows.append(
            (
                rec.seq,
                rec.ts,
                rec.actor,
                rec.action,
                rec.room_id,
                rec.event_id,
                rec.subject,
                canonical_json(rec.details),
                rec.prev_hash,
                rec.hash,
            )
        )
    return rows, seq, prev


def run_cli(config: Path) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "bot", "audit", "verify", "-c", str(config)],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    seconds = time.perf_counter() - started
    out = (done.stdout + done.stderr).strip()
    if done.returncode != 0:
        raise RuntimeError(f"audit verify failed ({done.returncode}): {out}")
    return seconds, out.splitlines()[-1] if out else ""


async def raw_read(url: str) -> tuple[int, float]:
    conn = await asyncpg.connect(url)
    try:
        started = time.perf_counter()
        n = 0
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            query = f"SELECT {', '.join(COLUMNS)} FROM audit_log ORDER BY seq"  # noqa: S608
            async for _row in conn.cursor(query, prefetch=STREAM_PREFETCH):
                n += 1
        return n, time.perf_counter() - started
    finally:
        await conn.close()


async def bench(rows: int, size: int, root: Path) -> None:
    report = Report(f"bench/verify.py: {rows:,} audit rows, {size:,}-row batches")
    report.notes.append(env_line())
    pg, server_url = await asyncio.to_thread(start_postgres, root / "pg")
    try:
        report.notes.append(await postgres_settings(server_url))
        db_url = await fresh_database(server_url, "bench_verify")
        empty_url = await fresh_database(server_url, "bench_verify_empty")
        await (await open_databases(empty_url)).close()  # migrated, no rows: the CLI's fixed cost
        dbs = await open_databases(db_url)
        raw = await asyncpg.connect(db_url)
        try:
            await raw.execute("CREATE TABLE audit_copy (LIKE audit_log INCLUDING ALL)")
            audit = AuditLog(dbs.main, BENCH_HMAC_KEY)
            key = derive_chain_key(BENCH_HMAC_KEY)
            append_s = copy_s = 0.0
            seq, prev = 0, GENESIS_HASH
            for b in range(rows // size):
                batch = entries(b, size)
                copy_rows, seq, prev = chained_rows(batch, seq, prev, key)
                started = time.perf_counter()
                written = await audit.append(batch)
                append_s += time.perf_counter() - started
                assert len(written) == size, "bench rows were deduplicated"
                started = time.perf_counter()
                async with raw.transaction():
                    await raw.copy_records_to_table(
                        "audit_copy", records=copy_rows, columns=COLUMNS
                    )
                copy_s += time.perf_counter() - started
                if b % 50 == 49:
                    print(f"  appended {(b + 1) * size:,} rows", flush=True)
            started = time.perf_counter()
            result = await audit.verify()
            verify_s = time.perf_counter() - started
            assert result.ok and result.rows == rows, result
        finally:
            await raw.close()
            await dbs.close()
        read_n, read_s = await raw_read(db_url)
        assert read_n == rows

        config = write_bot_config(
            root / "config.yaml",
            base_url="http://127.0.0.1:9",
            db_url=db_url,
            bot={"user_id": "@bench-bot:localhost", "password": "bench-password-1"},
        )
        (root / "empty").mkdir()
        empty_config = write_bot_config(
            root / "empty" / "config.yaml",
            base_url="http://127.0.0.1:9",
            db_url=empty_url,
            bot={"user_id": "@bench-bot:localhost", "password": "bench-password-1"},
        )
        fixed_s, _ = await asyncio.to_thread(run_cli, empty_config)
        cli_s, cli_out = await asyncio.to_thread(run_cli, config)
    finally:
        pg.cleanup()

    read_rate = rows / read_s
    cli_rate, inproc_rate = rows / cli_s, rows / verify_s
    net_rate = rows / max(cli_s - fixed_s, 1e-9)
    append_rate, copy_rate = rows / append_s, rows / copy_s
    report.notes.append(f"CLI said: {cli_out}")
    ref = f"raw read {read_rate:,.0f} rows/s"
    report.add(
        f"`chaperone audit verify` (CLI, wall {cli_s:.2f} s)",
        f"{cli_rate:,.0f} rows/s",
        ref,
        f"{cli_rate / read_rate:.2f}",
        f">= {VERIFY_TARGET:,} rows/s",
        cli_rate >= VERIFY_TARGET,
    )
    report.add(
        f"  CLI less its fixed cost ({fixed_s:.2f} s on an empty log)",
        f"{net_rate:,.0f} rows/s",
        ref,
        f"{net_rate / read_rate:.2f}",
    )
    report.add(
        f"AuditLog.verify in-process ({verify_s:.2f} s)",
        f"{inproc_rate:,.0f} rows/s",
        ref,
        f"{inproc_rate / read_rate:.2f}",
        f">= {VERIFY_TARGET:,} rows/s",
        inproc_rate >= VERIFY_TARGET,
    )
    report.add(
        f"audit append, {size:,}-row batches (AuditLog.append)",
        f"{append_rate:,.0f} rows/s",
        f"raw COPY {copy_rate:,.0f} rows/s",
        f"{append_rate / copy_rate:.2f}",
        f">= {APPEND_RATIO_TARGET} of COPY",
        append_rate / copy_rate >= APPEND_RATIO_TARGET,
    )
    report.print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="20,000 rows")
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--batch", type=int, default=1000)
    args = parser.parse_args()
    rows = args.rows or (20_000 if args.small else 200_000)
    with tempfile.TemporaryDirectory(prefix="chaperone-bench-") as tmp:
        asyncio.run(bench(rows, args.batch, Path(tmp)))


if __name__ == "__main__":
    main()
