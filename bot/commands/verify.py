"""`verify @user [device=ID]` (admin): the bot asks someone to verify with it (SPEC 7)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Protocol

from bot.commands.registry import (
    USER_ID_EXPECTED,
    Arg,
    CommandContext,
    CommandSpec,
    CommandUsageError,
    user_id_arg,
)
from bot.policy.roles import Role
from bot.service.verification import VerificationService

DEVICE_RE = re.compile(r"^[A-Za-z0-9_\-+/=.]{1,64}$")


def device_id_arg(value: str) -> str:
    if not DEVICE_RE.match(value):
        raise ValueError("not a device ID")
    return value


class VerifyServices(Protocol):
    verification: VerificationService


async def verify(ctx: CommandContext, args: Mapping[str, Any]) -> str:
    services: VerifyServices = ctx.services
    user = args["user"]
    if user == services.verification.config.bot.user_id:
        raise CommandUsageError("user: that is the bot itself; expected a person")
    device = args.get("device")
    room = None if device else ctx.room_id
    return await services.verification.begin(user, device, room, actor=ctx.sender)


def specs() -> list[CommandSpec]:
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
        )
    ]
