"""v02: consent records and per-room policy (issue: consent)."""

from __future__ import annotations

from mautrix.util.async_db import Connection

from . import upgrade_table


@upgrade_table.register(description="consent records and per-room policy")  # type: ignore[call-arg, arg-type, untyped-decorator]
async def upgrade_v2(conn: Connection) -> None:
    """Filled in by the feature that owns this version."""
