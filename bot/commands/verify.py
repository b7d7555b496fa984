"""`verify @user [device=ID]` (admin): the bot asks someone to verify with it."""

from __future__ import annotations

import re
from dataclasses import dataclass

from mautrix.types import UserID

from bot.commands.registry import (
    USER_ID_EXPECTED,
    Arg,
    CommandContext,
    CommandSpec,
    CommandUsageError,
    user_id_arg,
)
from bot.policy.roles import Role

DEVICE_RE = re.compile(r"^[A-Za-z0-9_\-+/=.]{1,64}$")


def device_id_arg(value: str) -> str:
    if not DEVICE_RE.match(value):
        raise ValueError("not a device ID")
    return value


@dataclass(frozen=True, kw_only=True)
class VerifyArgs:
    user: UserID
    device: str | None = None


async def verify(ctx: CommandContext, args: VerifyArgs) -> str:
    verification = ctx.services.verification
    if args.user == verification.config.bot.user_id:
        raise CommandUsageError("user: that is the bot itself; expected a person")
    room = None if args.device else ctx.room_id
    return await verification.begin(args.user, args.device, room, actor=ctx.sender)


def specs() -> list[CommandSpec[VerifyArgs]]:
    return [
        CommandSpec(
            "verify",
            Role.ADMIN,
            "ask someone to verify with the bot (emoji; the operator confirms on the console)",
            verify,
            (Arg("user", user_id_arg, help="a Matrix user ID", expected=USER_ID_EXPECTED),),
            (
                Arg(
                    "device",
                    device_id_arg,
                    required=False,
                    help="one of their device IDs (to-device; default: in this room)",
                    expected="expected a device ID like ABCDEFGHIJ",
                ),
            ),
            args=VerifyArgs,
        )
    ]
