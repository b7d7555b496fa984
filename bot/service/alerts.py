"""Alerts to the management room (`bot.management_room`): short, with references, no content."""

from __future__ import annotations

import logging

from mautrix.errors import MForbidden, MLimitExceeded

from bot.config import Config
from bot.service.ports import Notices

log = logging.getLogger("chaperone.alerts")


class Alerts:
    def __init__(self, config: Config, effects: Notices) -> None:
        self.room_id = config.bot.management_room
        self.effects = effects

    async def send(self, text: str) -> None:
        """Post to the management room when one is configured; never raises."""
        log.info("Alert: %s", text)
        if not self.room_id:
            return
        try:
            await self.effects.notice(self.room_id, f"🚨 {text}")
        except Exception as e:
            # One line: the alert text above is what matters, and an outage that stops it
            # going out (Postgres or the homeserver down) is reported by the failing loop.
            log.warning("Could not post an alert to the management room (%s)", type(e).__name__)
            log.debug("Posting the alert failed", exc_info=True)


RATE_LIMITED = "rate_limited"
FORBIDDEN = "forbidden"


def removal_failure_cause(exc: BaseException) -> str:
    """Why a removal (redaction, purge) did not go through, as an alert names it: a 429 is the
    homeserver's rate limit, not a missing power level; only a refusal (403) is that."""
    if isinstance(exc, MLimitExceeded):  # RateLimited is one too
        return RATE_LIMITED
    if isinstance(exc, MForbidden):
        return FORBIDDEN
    return type(exc).__name__


def removal_problem_text(where: str, cause: str, *, exempt_configured: bool) -> str:
    """The management-room alert for removals in `where` held up by `cause`."""
    if cause == RATE_LIMITED:
        fix = (
            "check that the bot's exemption (override_ratelimit) is in effect"
            if exempt_configured
            else "set homeserver.admin_token so the bot exempts itself from Synapse's rate "
            "limits (override_ratelimit), or raise rc_admin_redaction"
        )
        return (
            f"Removals in {where} are being slowed by the homeserver's rate limit (429): the "
            f"bot waits as long as asked and loses nothing. To lift it, {fix}."
        )
    if cause == FORBIDDEN:
        return (
            f"The homeserver refused removals in {where} (forbidden): give the bot the power "
            "to redact there (moderator, level 50)."
        )
    return f"Removals in {where} failed ({cause}); see the log."
