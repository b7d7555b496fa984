"""v04: posture state and admin surface (issue: admin surface)."""

from __future__ import annotations

from mautrix.util.async_db import Connection

from . import upgrade_table


@upgrade_table.register(description="posture state and admin surface")  # type: ignore[call-arg, arg-type, untyped-decorator]
async def upgrade_v4(conn: Connection) -> None:
    """Filled in by the feature that owns this version."""
