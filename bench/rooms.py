"""First sync on a fresh database with 0/100/300 rooms: time from `chaperone run` to the first
processed batch and the process's peak RSS, fitted linearly and extrapolated to 1,000 rooms.

    .venv/bin/python bench/rooms.py [--small] [--rooms 0,100,300]

One throwaway Synapse (rate limits off) and an embedded Postgres with its default, durable
settings (fsync on). A staff account creates the rooms (private, encrypted, compliant
posture) through the plain client API; for each size N a fresh bot account is invited to N of
them and joins them before the bot ever starts. Then, per size, on a fresh database:

- baseline: the same account's initial `/sync` with the bot's own filter
  (`bot.matrix.gateway.sync_filter`), one plain HTTP request, measured just before the bot;
- the bot: `python -m bot run -c CONFIG` as a subprocess, from spawn to the log line "First
  sync batch processed" (also printed: the bot's own figure, from `Chaperone()` on), and its
  VmHWM (peak RSS) from /proc 3 s after that line.

`--small`: 0/20/60 rooms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

from _common import (
    Api,
    BotProcess,
    Report,
    env_line,
    fresh_database,
    linear_fit,
    postgres_settings,
    register,
    start_postgres,
    write_bot_config,
)

from bot.devtools.synapse import start_synapse
from bot.matrix.gateway import TIMELINE_LIMIT, sync_filter

TARGET_ROOMS = 1000
TARGET_SECONDS = 10.0
TARGET_MIB = 150.0
SETTLE_SECONDS = 3.0


async def bounded(n: int, coros: list) -> list:  # type: ignore[type-arg]
    sem = asyncio.Semaphore(n)

    async def one(c):  # type: ignore[no-untyped-def]
        async with sem:
            return await c

    return await asyncio.gather(*(one(c) for c in coros))


async def bare_sync(base_url: str, token: str) -> float:
    api = Api(base_url, token)
    try:
        started = time.perf_counter()
        await api.call(
            "GET",
            "/_matrix/client/v3/sync",
            filter=json.dumps(sync_filter(TIMELINE_LIMIT)),
            timeout="0",
        )
        return time.perf_counter() - started
    finally:
        await api.close()


async def bench(sizes: list[int], root: Path) -> None:
    report = Report(f"bench/rooms.py: first sync on a fresh database, {sizes} rooms")
    report.notes.append(env_line())
    report.notes.append(
        "the bot is spawned with its bytecode compiled beforehand, as installed from a wheel"
        " (bench/_common.py bot_env)"
    )
    pg, server_url = await asyncio.to_thread(start_postgres, root / "pg")
    synapse = await start_synapse(root / "synapse")
    results: list[tuple[int, float, float, float, float]] = []
    try:
        report.notes.append(await postgres_settings(server_url))
        staff = await register(synapse, "staff")
        bots = {n: await register(synapse, f"bot{n}") for n in sizes}
        staff_api = Api(synapse.base_url, staff["access_token"])
        most = max(sizes)
        started = time.monotonic()
        rooms = await bounded(
            4,
            [
                staff_api.create_room([b["user_id"] for n, b in bots.items() if i < n])
                for i in range(most)
            ],
        )
        for n, b in bots.items():
            api = Api(synapse.base_url, b["access_token"])
            await bounded(4, [api.join(r) for r in rooms[:n]])
            await api.close()
        await staff_api.close()
        print(f"  {most} rooms made and joined in {time.monotonic() - started:.1f} s", flush=True)

        for n in sizes:
            bot = bots[n]
            baseline = await bare_sync(synapse.base_url, bot["access_token"])
            work = root / f"bot{n}"
            work.mkdir()
            config = write_bot_config(
                work / "config.yaml",
                base_url=synapse.base_url,
                db_url=await fresh_database(server_url, f"bench_rooms_{n}"),
                bot=bot,
                admins=[staff["user_id"]],
                staff=[staff["user_id"]],
            )
            proc = BotProcess(config, work / "bot.log").start()
            try:
                found = await proc.wait_log(
                    r"First sync batch processed ([0-9.]+) s after start", timeout=600
                )
                wall = time.monotonic() - proc.started
                await asyncio.sleep(SETTLE_SECONDS)
                proc.check_alive()
                mib = proc.memory_kib()["VmHWM"] / 1024
            finally:
                proc.stop()
            own = float(found.group(1))
            print(
                f"  {n:>5} rooms: first batch {wall:.2f} s after spawn ({own:.2f} s by the"
                f" bot's clock), VmHWM {mib:.0f} MiB; bare /sync {baseline:.2f} s",
                flush=True,
            )
            results.append((n, wall, own, mib, baseline))
    finally:
        synapse.stop()
        pg.cleanup()

    for n, wall, own, mib, baseline in results:
        report.add(
            f"{n} rooms: spawn → first batch processed (bot's own clock {own:.2f} s)",
            f"{wall:.2f} s",
            f"bare initial /sync {baseline:.2f} s",
            f"{wall / baseline:.1f}x" if baseline else "",
        )
        report.add(
            f"{n} rooms: peak RSS (VmHWM)", f"{mib:.0f} MiB", f"0 rooms {results[0][3]:.0f} MiB"
        )
    xs = [float(r[0]) for r in results]
    t0, t1 = linear_fit(xs, [r[1] for r in results])
    b0, b1 = linear_fit(xs, [r[4] for r in results])
    m0, m1 = linear_fit(xs, [r[3] for r in results])
    at = float(TARGET_ROOMS)
    t_fit, b_fit, m_fit = t0 + t1 * at, b0 + b1 * at, m0 + m1 * at
    report.add(
        f"fit to {TARGET_ROOMS:,} rooms: first batch ({t0:.2f} s + {t1 * 1000:.1f} ms/room)",
        f"{t_fit:.1f} s",
        f"bare /sync fit {b_fit:.1f} s",
        f"{t_fit / b_fit:.1f}x" if b_fit > 0 else "",
        f"< {TARGET_SECONDS:.0f} s",
        t_fit < TARGET_SECONDS,
    )
    report.add(
        f"fit to {TARGET_ROOMS:,} rooms: peak RSS ({m0:.0f} MiB + {m1 * 1024:.0f} KiB/room)",
        f"{m_fit:.0f} MiB",
        f"0 rooms {results[0][3]:.0f} MiB",
        f"{m_fit / results[0][3]:.2f}",
        f"<= {TARGET_MIB:.0f} MiB",
        m_fit <= TARGET_MIB,
    )
    report.print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="0/20/60 rooms")
    parser.add_argument("--rooms", default=None, help="comma-separated sizes, e.g. 0,100,300")
    args = parser.parse_args()
    sizes = sorted(
        int(x) for x in (args.rooms or ("0,20,60" if args.small else "0,100,300")).split(",")
    )
    with tempfile.TemporaryDirectory(prefix="chaperone-bench-") as tmp:
        asyncio.run(bench(sizes, Path(tmp)))


if __name__ == "__main__":
    main()
