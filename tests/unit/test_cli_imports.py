"""The audit and archive commands start without the Matrix layer: importing mautrix's client
(aiohttp) and crypto (pycryptodome) costs a third of a second, more than verifying 30,000 rows."""

from __future__ import annotations

import subprocess
import sys


def test_the_audit_commands_import_neither_mautrixs_client_nor_its_crypto() -> None:
    probe = (
        "import sys, bot.config, bot.service.audit_cli, bot.service.archive; "
        "print(sorted(m for m in sys.modules if m.startswith(('mautrix.client', "
        "'mautrix.crypto', 'aiohttp', 'bot.matrix'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
