"""Command handling: parse, gate, run, reply, audit."""

from __future__ import annotations

import logging
from typing import Any

from mautrix.types import RoomID

from bot.commands.registry import (
    ROOM_ID_EXPECTED,
    Arg,
    CommandContext,
    CommandRegistry,
    CommandUsageError,
    Reply,
    parse_value,
    room_id_arg,
)
from bot.commands.services import Services
from bot.config import Config
from bot.db.audit import AuditEntry
from bot.matrix.facts import MessageFact
from bot.policy.command_gate import gate_command
from bot.policy.command_line import CommandSyntaxError, split_command, strip_prefix
from bot.service.access import AccessService
from bot.service.failures import error_reference
from bot.service.observers import BatchOutcome
from bot.service.outbox import queued_notice
from bot.service.ports import RoomReader

log = logging.getLogger("chaperone.commands")

SECRET_OPTION_NAMES = frozenset({"password", "token", "key", "secret"})
ROOM_ARG = Arg("room", room_id_arg, expected=ROOM_ID_EXPECTED)


class CommandService:
    def __init__(
        self,
        config: Config,
        registry: CommandRegistry,
        gateway: RoomReader,
        access: AccessService,
        services: Services,
    ) -> None:
        self.config = config
        self.registry = registry
        self.gateway = gateway
        self.access = access
        self.services = services
        self.prefix = config.bot.command_prefix

    def _help_hint(self) -> str:
        return f"send `{self.prefix} help` for the commands you can use"

    def is_command(self, fact: MessageFact) -> bool:
        """Whether `fact` is meant as a command: a readable text message with the prefix.

        A file, image or sticker whose name starts with the prefix is a message like any other.
        """
        return (
            fact.readable
            and fact.event_type == "m.room.message"
            and fact.msgtype == "m.text"
            and strip_prefix(fact.body, self.prefix) is not None
        )

    async def handle(self, fact: MessageFact, outcome: BatchOutcome) -> list[AuditEntry] | None:
        """Run the command in `fact`; reply in the room; return its audit rows.

        None when `fact` is not a valid command (not one at all, unreadable, unknown, or with
        arguments that do not parse): the caller then judges it by the consent rules like any
        other message. The one-line error reply never repeats the text. A command refused by the
        gate is still a command: it returns its `command.denied` row.
        """
        text = strip_prefix(fact.body, self.prefix) if self.is_command(fact) else None
        if text is None:
            return None
        try:
            line = split_command(text or "help")
        except CommandSyntaxError as e:
            self.reply(fact, outcome, f"⚠️ {e} — {self._help_hint()}")
            return None
        match = self.registry.match(line)
        if match is None:
            self.reply(fact, outcome, f"⚠️ Unknown command — {self._help_hint()}")
            return None
        spec, words = match
        options = dict(line.options)
        in_management_room = (
            bool(self.config.bot.management_room)
            and fact.room_id == self.config.bot.management_room
        )
        try:
            target_room = await self._target_room(fact, options.pop("room", None))
            # Parsed before the gate: otherwise anyone could pass free text as the arguments of
            # a command they may not run, and a refused command is not judged as a message.
            args = spec.parse_args(words, options)
        except CommandUsageError as e:
            self.reply(fact, outcome, f"⚠️ {spec.name}: {e} — {self._help_hint()}")
            return None
        try:
            role = await self.access.role(target_room, fact.sender)
        except Exception:
            ref = error_reference()
            log.warning(
                "Could not tell the role of a command's sender (ref %s)", ref, exc_info=True
            )
            self.reply(
                fact, outcome, f"❌ {spec.name}: could not check your role (reference {ref})."
            )
            return []
        decision = gate_command(
            required=spec.role,
            caller=role,
            room_encrypted=await self.gateway.is_encrypted(fact.room_id),
            event_encrypted=fact.encrypted,
            trust=fact.trust,
            admin_min_trust=self.config.bot.admin_min_trust,
        )
        audit_base: dict[str, Any] = {
            "actor": fact.sender,
            "room_id": fact.room_id,
            "event_id": fact.event_id,
        }
        # Arguments are recorded only for commands that ran: a refused command's may be free
        # text a patient typed, which the audit never keeps (message.sent has its HMAC).
        details: dict[str, Any] = {"command": spec.name, "role": role.label, "trust": fact.trust}
        if target_room != fact.room_id:
            details["target_room"] = target_room
        if not decision.allowed:
            self.reply(fact, outcome, f"⛔ {spec.name}: {decision.reason}.")
            return [
                AuditEntry(
                    action="command.denied",
                    details={**details, "reason": decision.reason},
                    **audit_base,
                )
            ]
        ctx = CommandContext(
            room_id=target_room,
            reply_room_id=fact.room_id,
            sender=fact.sender,
            event_id=fact.event_id,
            role=role,
            trust=fact.trust,
            in_management_room=in_management_room,
            services=self.services,
        )
        reply: str | Reply
        try:
            reply = await spec.run(ctx, args)  # the handler gets its typed args
            result = "ok"
        except CommandUsageError as e:
            reply, result = f"⚠️ {spec.name}: {e} — {self._help_hint()}", "bad-arguments"
        except Exception:
            ref = error_reference()
            log.exception("Command %s failed (ref %s)", spec.name, ref)
            reply = f"❌ {spec.name} failed because of an internal error (reference {ref})."
            result = f"error {ref}"
        self.reply(fact, outcome, reply)
        if result == "ok":
            details["args"] = _masked(words, options, spec.secret_options)
        return [
            AuditEntry(
                action="command.executed", details={**details, "outcome": result}, **audit_base
            )
        ]

    async def _target_room(self, fact: MessageFact, room: str | None) -> RoomID:
        """The room a command is about: where it was sent, or the `room=!id` an admin names in
        the management room; CommandUsageError otherwise."""
        if room is None:
            return fact.room_id
        management = self.config.bot.management_room
        if (
            not management
            or fact.room_id != management
            or fact.sender not in self.config.roles.admins
        ):
            raise CommandUsageError("room= is only accepted from admins in the management room")
        target: RoomID = parse_value(ROOM_ARG, room)
        if not await self.services.rooms.is_managed(target):
            raise CommandUsageError("room: the bot does not manage that room; name one it is in")
        return target

    def reply(self, fact: MessageFact, outcome: BatchOutcome, reply: str | Reply) -> None:
        """Queue the reply: it goes out once the command's batch committed, exactly once.
        A `Reply` with html goes out with it as the `formatted_body` Element renders."""
        text, html = (reply.text, reply.html) if isinstance(reply, Reply) else (reply, None)
        outcome.effects.append(
            queued_notice(fact.room_id, text, cause=f"reply:{fact.event_id}", html=html)
        )


def refused(entries: list[AuditEntry]) -> bool:
    """A command its sender may not run (role, trust, encryption): the pipeline judges the
    message like any other, so a refused command cannot carry words past the consent rules."""
    return any(e.action == "command.denied" for e in entries)


def _masked(
    words: tuple[str, ...], options: dict[str, str], secret: frozenset[str]
) -> dict[str, Any]:
    masked = {
        k: ("***" if k in secret or k in SECRET_OPTION_NAMES else v) for k, v in options.items()
    }
    return {"words": list(words), "options": masked}
