"""Logging set-up: one format, mautrix's TRACE never on, and configured secrets masked."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable

import mautrix.util.logging  # noqa: F401  (TraceLogger must exist before mau.* loggers)


class SecretMaskFilter(logging.Filter):
    """Replace any configured secret that slips into a log line with ***."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self._secrets = [s for s in secrets if len(s) >= 6]

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets:
            return True
        message = record.getMessage()
        masked = message
        for secret in self._secrets:
            masked = masked.replace(secret, "***")
        if masked != message:
            record.msg, record.args = masked, None
        return True


def setup_logging(level: str, secrets: Iterable[str] = ()) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(SecretMaskFilter(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # mautrix logs decrypted events at TRACE and request bodies at DEBUG: keep both off.
    for name in ("mau", "aiohttp"):
        logging.getLogger(name).setLevel(max(logging.INFO, logging.getLevelName(level)))
