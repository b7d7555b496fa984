"""`room new @patient [@staff..] [name=".."]` (staff): a room born compliant."""

from __future__ import annotations

from dataclasses import dataclass, field

from mautrix.types import UserID

from bot.commands import formatting as fmt
from bot.commands.registry import (
    USER_ID_EXPECTED,
    Arg,
    CommandContext,
    CommandSpec,
    CommandUsageError,
    Reply,
    user_id_arg,
)
from bot.policy.roles import Role
from bot.policy.room_new import MAX_NAME_CHARS, valid_room_name
from bot.service.room_new import CreatedRoom, RoomRequestError

NAME_EXPECTED = (
    f"expected a room name of 1 to {MAX_NAME_CHARS} characters without control characters,"
    ' quoted if it has spaces: name="Therapy with Sam"'
)
PROMISES = (
    "end-to-end encrypted",
    "invite-only",
    "new members see only what is sent after they join",
    "no guest access",
    "staff moderate (power 50), the patient has no power (0), only the bot changes settings",
)


@dataclass(frozen=True, kw_only=True)
class RoomNewArgs:
    patient: UserID
    staff: list[UserID] = field(default_factory=list)
    name: str | None = None


def room_name_arg(value: str) -> str:
    if not valid_room_name(value):
        raise ValueError("not a valid room name")
    return value


async def room_new(ctx: CommandContext, args: RoomNewArgs) -> Reply:
    try:
        created = await ctx.services.room_creator.create(
            caller=ctx.sender,
            patient=args.patient,
            staff=args.staff,
            name=args.name,
            event_id=ctx.event_id,
        )
    except RoomRequestError as e:
        raise CommandUsageError(str(e)) from None
    return created_reply(created)


def created_reply(created: CreatedRoom) -> Reply:
    """What was made and how to open it, as plain text and as HTML."""
    promises = [*PROMISES]
    if created.encrypted_with_acl:
        promises.append("members only from the allowed servers (server ACL)")
    label = f"“{created.name}”" if created.name else "A room"
    if created.room_id is None:
        head = "🧪 dry-run: would create a room"
        text = f"{head} for {created.patient}; nothing was created."
        html = fmt.paragraph(f"{head} for {fmt.pill(created.patient)}; nothing was created.")
        return Reply(text, html)
    staff_text = ", ".join(created.staff)
    text = "\n".join(
        [
            f"✅ {label} for {created.patient} is ready ({created.room_id}, room version "
            f"{created.room_version}).",
            f"Invited: {created.patient} (patient), {staff_text} (staff).",
            fmt.plain_list(promises),
            f"Open it: {created.link}",
            "The consent terms are posted when the patient joins.",
        ]
    )
    staff_html = ", ".join(fmt.pill(u) for u in created.staff)
    html = "".join(
        [
            fmt.paragraph(
                f"✅ {fmt.esc(label)} for {fmt.pill(created.patient)} is ready "
                f"({fmt.code(created.room_id)}, room version {fmt.esc(created.room_version)})."
            ),
            fmt.paragraph(
                f"Invited: {fmt.pill(created.patient)} (patient), {staff_html} (staff)."
            ),
            fmt.items(fmt.esc(p) for p in promises),
            fmt.paragraph(
                fmt.bold("Open it: " + fmt.link(created.link or "", created.link or ""))
            ),
            fmt.paragraph("The consent terms are posted when the patient joins."),
        ]
    )
    return Reply(text, html)


def specs() -> list[CommandSpec[RoomNewArgs]]:
    return [
        CommandSpec(
            "room new",
            Role.STAFF,
            "create a compliant room for a patient and invite them (and you, and more staff)",
            room_new,
            positional=(Arg("patient", user_id_arg, expected=USER_ID_EXPECTED),),
            rest=Arg("staff", user_id_arg, expected=USER_ID_EXPECTED),
            options=(Arg("name", room_name_arg, required=False, expected=NAME_EXPECTED),),
            args=RoomNewArgs,
        )
    ]
