"""Alerts about removals name the real cause: a 429 is the homeserver's rate limit (the fix is
an exemption), not a missing power level; only a refusal (403) asks for the power to redact."""

from __future__ import annotations

import pytest
from mautrix.errors import MForbidden, MLimitExceeded, MNotFound

from bot.matrix.ratelimit import RateLimited
from bot.service.alerts import (
    FORBIDDEN,
    RATE_LIMITED,
    removal_failure_cause,
    removal_problem_text,
)


@pytest.mark.parametrize(
    ("exc", "cause"),
    [
        (RateLimited(429, "Too Many Requests", 2000), RATE_LIMITED),
        (MLimitExceeded(429, "Too Many Requests"), RATE_LIMITED),
        (MForbidden(403, "You don't have permission"), FORBIDDEN),
        (MNotFound(404, "Event not found"), "MNotFound"),
        (TimeoutError(), "TimeoutError"),
    ],
)
def test_the_cause_of_a_failed_removal(exc: BaseException, cause: str) -> None:
    assert removal_failure_cause(exc) == cause


@pytest.mark.parametrize("exempt_configured", [False, True])
def test_a_429_alert_names_the_rate_limit_not_power(exempt_configured: bool) -> None:
    text = removal_problem_text(
        "!room:clinic.test", RATE_LIMITED, exempt_configured=exempt_configured
    )
    assert "rate limit (429)" in text and "!room:clinic.test" in text
    assert "override_ratelimit" in text
    assert "power" not in text and "level 50" not in text
    assert ("homeserver.admin_token" in text) is not exempt_configured
    assert "\n" not in text


def test_a_refusal_alert_asks_for_the_power_to_redact() -> None:
    text = removal_problem_text("!room:clinic.test", FORBIDDEN, exempt_configured=False)
    assert "power to redact" in text and "429" not in text and "rate" not in text


def test_any_other_failure_names_its_type_only() -> None:
    text = removal_problem_text("!room:clinic.test", "TimeoutError", exempt_configured=False)
    assert "TimeoutError" in text and "power" not in text and "rate limit" not in text
