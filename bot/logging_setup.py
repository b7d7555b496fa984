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
        self._secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets:
            return True
        message = record.getMessage()
        masked = self._mask(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = _FORMATTER.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self._mask(record.exc_text)
        if record.stack_info:
            record.stack_info = self._mask(record.stack_info)
        return True

    def _mask(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


_FORMATTER = logging.Formatter()


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


class OncePerUserFilter(logging.Filter):
    """mautrix warns "Didn't find cross-signing key master of @user" for every message it
    decrypts from a user without cross-signing keys: keep the first per user, drop the repeats
    (it says nothing new; the audit row carries the sender's trust)."""

    PREFIX = "Didn't find cross-signing key "
    REMEMBERED = 10_000

    def __init__(self) -> None:
        super().__init__()
        self._seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if not message.startswith(self.PREFIX):
            return True
        user = message.rsplit(" of ", 1)[-1]
        if user in self._seen:
            return False
        if len(self._seen) >= self.REMEMBERED:
            self._seen.clear()
        self._seen.add(user)
        return True


def quiet_repeated_crypto_warnings(logger: logging.Logger) -> None:
    """Install OncePerUserFilter on mautrix's crypto logger, once."""
    if not any(isinstance(f, OncePerUserFilter) for f in logger.filters):
        logger.addFilter(OncePerUserFilter())
