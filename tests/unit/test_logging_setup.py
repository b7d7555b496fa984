from __future__ import annotations

import logging

from bot.logging_setup import SecretMaskFilter


def test_secrets_are_masked_in_messages_and_tracebacks() -> None:
    mask = SecretMaskFilter(["hunter2-password", "tok"])
    try:
        raise RuntimeError("login failed for hunter2-password")
    except RuntimeError:
        import sys

        record = logging.LogRecord(
            "x", logging.WARNING, __file__, 1, "token %s used", ("tok",), exc_info=sys.exc_info()
        )
    assert mask.filter(record)
    assert record.getMessage() == "***en *** used"
    assert record.exc_text is not None and "hunter2-password" not in record.exc_text
    assert "***" in record.exc_text


def test_the_cross_signing_warning_is_said_once_per_user() -> None:
    import logging

    from bot.logging_setup import OncePerUserFilter

    once = OncePerUserFilter()

    def record(text: str) -> logging.LogRecord:
        return logging.LogRecord("mau.crypto", logging.WARNING, "", 0, text, None, None)

    passed = [
        once.filter(record(f"Didn't find cross-signing key master of @{user}:x"))
        for user in ("a", "a", "b", "a", "b")
    ]
    assert passed == [True, False, True, False, False]
    assert once.filter(record("Something else entirely")) is True
