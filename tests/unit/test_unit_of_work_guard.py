"""Audit rows are written through the unit of work only (bot/db/unit_of_work.py), which appends
them before any other write of its transaction: the lock order that keeps two writers from
deadlocking. A direct `audit.append(` anywhere else in bot/ could take a row lock first."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

BOT = Path(__file__).resolve().parents[2] / "bot"
ALLOWED = {BOT / "db" / "unit_of_work.py", BOT / "db" / "audit.py"}
APPEND = re.compile(r"\baudit\.append\(|\bAuditLog\.append\b|\.audit\s*\.\s*append\b")


@pytest.mark.parametrize(
    "path",
    sorted(p for p in BOT.rglob("*.py") if p not in ALLOWED),
    ids=lambda p: str(p.relative_to(BOT)),
)
def test_audit_rows_go_through_the_unit_of_work(path: Path) -> None:
    lines = [
        f"{n}: {line.strip()}"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if APPEND.search(line) and not line.lstrip().startswith(("#", '"', "`"))
    ]
    assert lines == [], f"{path.name} appends audit rows outside the unit of work: {lines}"


def test_the_guard_sees_a_direct_append() -> None:
    assert APPEND.search("        await self.audit.append([entry])")
    assert APPEND.search("    await audit.append(")
    assert APPEND.search("await AuditLog.append(log, rows)")
    assert not APPEND.search("await record_audit(self.audit, [entry])")
