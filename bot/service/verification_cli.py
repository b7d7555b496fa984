"""`chaperone verify --list | --confirm ID | --cancel ID`: the operator's side of SAS.

Run beside the bot against the same database; the running bot sees the decision within a
second and sends its MAC (or the cancel). The console is the out-of-band channel: the emoji are
printed here and nowhere else.
"""

from __future__ import annotations

from bot.clock import Clock
from bot.config import Config
from bot.db.verification import VerificationRepo
from bot.service.audit_cli import cli_actor, main_database


async def list_waiting(config: Config, clock: Clock) -> list[str]:
    """One block per verification waiting for the operator."""
    async with main_database(config) as db:
        rows = await VerificationRepo(db).waiting(clock.now())
    if not rows:
        return ["No verification waits for a comparison."]
    lines = []
    for row in rows:
        where = f"in {row.room_id}" if row.room_id else "to-device"
        lines += [
            f"[{row.id}] {row.user_id}  device {row.device_id}  ({where};"
            f" expires {row.expires_at:%H:%M:%S %Z})",
            f"    emoji:    {row.emoji}",
            f"    numbers:  {row.decimals}",
        ]
    lines.append(
        "Compare with what the person sees; then chaperone verify --confirm ID"
        " (they match) or --cancel ID (they do not)."
    )
    return lines


async def decide(config: Config, row_id: int, confirmed: bool, clock: Clock) -> tuple[bool, str]:
    async with main_database(config) as db:
        before = await VerificationRepo(db).decide(row_id, confirmed, cli_actor(), clock.now())
    if before is None:
        return False, f"verify: no verification {row_id}"
    if before != "waiting":
        return False, f"verify: verification {row_id} is {before}; nothing changed"
    if confirmed:
        return True, f"Verification {row_id} confirmed; the bot sends its confirmation now."
    return True, f"Verification {row_id} cancelled; the bot tells the other side."
