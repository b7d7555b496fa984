"""`consent`, `consent agree`, `consent revoke`, `consent list`, `consent record`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from mautrix.types import UserID

from bot.commands import formatting as fmt
from bot.commands.registry import (
    USER_ID_EXPECTED,
    Arg,
    CommandContext,
    CommandSpec,
    CommandUsageError,
    NoArgs,
    Reply,
    user_id_arg,
)
from bot.policy.consent import TOPICS_EXPECTED, ConsentRecord, parse_max_per_day, parse_topics
from bot.policy.hours import EXPECTED as HOURS_EXPECTED
from bot.policy.hours import TIMEZONE_EXPECTED, Hours, parse_hours, parse_timezone
from bot.policy.roles import Role

NOTE_MAX = 500
NOTE_EXPECTED = (
    f"expected a note of up to {NOTE_MAX} characters naming the form, "
    'like note="paper form 2026-11-20"'
)


def note_arg(value: str) -> str:
    note = value.strip()
    if not note:
        raise ValueError(f"no note given; {NOTE_EXPECTED}")
    if len(note) > NOTE_MAX:
        raise ValueError(f"the note is longer than {NOTE_MAX} characters; {NOTE_EXPECTED}")
    return note


CHOICES = (
    Arg(
        "hours",
        parse_hours,
        required=False,
        help="contact hours, e.g. Mon-Fri 09:00-17:00",
        expected=HOURS_EXPECTED,
    ),
    Arg(
        "tz",
        parse_timezone,
        required=False,
        help="IANA time zone, e.g. America/New_York",
        expected=TIMEZONE_EXPECTED,
    ),
    Arg(
        "max_per_day",
        parse_max_per_day,
        required=False,
        help="messages a day, 1-1000",
        expected="expected a whole number from 1 to 1000",
    ),
    Arg(
        "topics",
        parse_topics,
        required=False,
        help="e.g. scheduling,billing",
        expected=TOPICS_EXPECTED,
    ),
)


@dataclass(frozen=True, kw_only=True)
class ChoicesArgs:
    """What a patient may narrow when agreeing (each left out: as in the terms)."""

    hours: Hours | None = None
    tz: ZoneInfo | None = None
    max_per_day: int | None = None
    topics: tuple[str, ...] | None = None


@dataclass(frozen=True, kw_only=True)
class RecordArgs(ChoicesArgs):
    user: UserID
    note: str


def _summary(record: ConsentRecord) -> str:
    topics = ",".join(record.topics) if record.topics else "as in the terms"
    return (
        f"hours {record.hours} ({record.timezone}), at most {record.max_per_day} messages a day, "
        f"topics: {topics}; valid until {record.expires_at:%Y-%m-%d}; "
        f"terms version {record.terms_version} (sha256 {record.terms_sha256[:12]}…)"
    )


async def consent_show(ctx: CommandContext, args: NoArgs) -> str:
    return await ctx.services.consent.show(ctx.room_id, ctx.sender, ctx.role, ctx.event_id)


async def consent_agree(ctx: CommandContext, args: ChoicesArgs) -> str:
    services = ctx.services
    if ctx.role != Role.PATIENT:
        return (
            f"Consent is given by patients; you are {ctx.role.label} here. To record a "
            f"patient's paper form: {services.prefix} consent record @patient:server "
            'note="paper form ..."'
        )
    record = await services.consent_grants.agree(
        ctx.room_id,
        ctx.sender,
        ctx.event_id,
        hours=args.hours,
        tz=args.tz,
        max_per_day=args.max_per_day,
        topics=args.topics,
    )
    return (
        f"✅ Thank you, {ctx.sender}: your consent is recorded — {_summary(record)}. "
        f"To withdraw it: {services.prefix} consent revoke"
    )


async def consent_revoke(ctx: CommandContext, args: NoArgs) -> str:
    services = ctx.services
    if ctx.role != Role.PATIENT:
        return f"Consent is withdrawn by the patient who gave it; you are {ctx.role.label} here."
    record = await services.consent_grants.revoke(ctx.room_id, ctx.sender, ctx.event_id)
    if record is None:
        return "You have no consent here to withdraw."
    return (
        f"Your consent is withdrawn, {ctx.sender}. Staff will not text you here until you "
        f"agree again ({services.prefix} consent agree)."
    )


async def consent_list(ctx: CommandContext, args: NoArgs) -> str | Reply:
    consent = ctx.services.consent
    lines = await consent.list_room(ctx.room_id)
    version = consent.settings.version
    if not lines:
        return f"No patients here and no consent records (terms version {version})."
    return fmt.listing([f"Consent in this room (terms version {version}):", *lines])


async def consent_record(ctx: CommandContext, args: RecordArgs) -> str:
    patient = args.user
    try:
        record = await ctx.services.consent_grants.record_offline(
            ctx.room_id,
            ctx.sender,
            patient,
            ctx.event_id,
            args.note,
            hours=args.hours,
            tz=args.tz,
            max_per_day=args.max_per_day,
            topics=args.topics,
        )
    except ValueError:
        # The service's message names the user; the reply says it without their text.
        raise CommandUsageError(
            "user: not a patient in this room; consent is recorded for patients"
        ) from None
    return (
        f"✅ Offline consent of {patient} recorded by {ctx.sender} — {_summary(record)}; "
        f"note: {record.note}"
    )


def specs() -> list[CommandSpec[Any]]:
    return [
        CommandSpec(
            "consent",
            Role.PATIENT,
            "show the consent terms and your own status",
            consent_show,
            args=NoArgs,
        ),
        CommandSpec(
            "consent agree",
            Role.PATIENT,
            "agree to the consent terms (optionally narrowing hours, time zone, messages a day, "
            "topics)",
            consent_agree,
            options=CHOICES,
            args=ChoicesArgs,
        ),
        CommandSpec(
            "consent revoke", Role.PATIENT, "withdraw your consent", consent_revoke, args=NoArgs
        ),
        CommandSpec(
            "consent list",
            Role.STAFF,
            "show each patient's consent in this room",
            consent_list,
            args=NoArgs,
        ),
        CommandSpec(
            "consent record",
            Role.STAFF,
            "record consent a patient gave on a signed form",
            consent_record,
            positional=(
                Arg(
                    "user",
                    user_id_arg,
                    help="the patient, @name:server",
                    expected=USER_ID_EXPECTED,
                ),
            ),
            options=(
                *CHOICES,
                Arg("note", note_arg, help='e.g. "paper form 2026-11-20"', expected=NOTE_EXPECTED),
            ),
            args=RecordArgs,
        ),
    ]
