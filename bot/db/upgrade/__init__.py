"""Chaperone's schema migrations, tracked in their own `chaperone_version` table.

Migrations are never edited once shipped: add a new `vNN_*.py` module and import it below.
The crypto store (`crypto_version`) and the state store (`mx_version`) keep their own versions
in the same database.
"""

from __future__ import annotations

import logging

from mautrix.util.async_db import UpgradeTable

upgrade_table = UpgradeTable(
    version_table_name="chaperone_version",
    database_name="Chaperone",
    log=logging.getLogger("chaperone.db.upgrade"),
)

# Imported explicitly and in order: registration order is the version number.
from . import v01_initial, v02_consent, v03_retention, v04_admin  # noqa: E402, I001
from . import v05_keyed_audit  # noqa: E402, I001
from . import v06_outbox  # noqa: E402, I001
from . import v07_verification  # noqa: E402, I001

__all__ = [
    "upgrade_table",
    "v01_initial",
    "v02_consent",
    "v03_retention",
    "v04_admin",
    "v05_keyed_audit",
    "v06_outbox",
    "v07_verification",
]
