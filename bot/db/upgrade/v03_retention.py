"""v03: tracked event metadata, sealed archive, sweep progress (issue: retention)."""

from __future__ import annotations

from mautrix.util.async_db import Connection

from . import upgrade_table


@upgrade_table.register(description="tracked event metadata, sealed archive, sweep progress")  # type: ignore[call-arg, arg-type, untyped-decorator]
async def upgrade_v3(conn: Connection) -> None:
    """Filled in by the feature that owns this version."""
