"""`audit tail [N]` (staff: this room; admin in the management room: all rooms),
`audit export [..]` and `audit verify` (admin)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC
from typing import Any

from mautrix.types import RoomID

from bot.commands import formatting as fmt
from bot.commands.registry import (
    USER_ID_EXPECTED,
    Arg,
    CommandContext,
    CommandSpec,
    CommandUsageError,
    NoArgs,
    Reply,
    choice_arg,
    positive_int_arg,
    user_id_arg,
)
from bot.policy.audit_chain import AuditRecord
from bot.policy.roles import Role
from bot.service.audit_cli import FilterError, parse_filters
from bot.service.audit_tools import (
    TAIL_DEFAULT,
    TAIL_MAX,
    tail_line,
    verify_summary,
)


def _all_rooms(ctx: CommandContext) -> bool:
    """An admin in the management room, not naming a room: the command covers every room."""
    return ctx.in_management_room and ctx.role >= Role.ADMIN and ctx.room_id == ctx.reply_room_id


TAIL_EXPECTED = f"expected a whole number from 1 to {TAIL_MAX}"
TIME_EXPECTED = "expected e.g. 2026-11-01 or 2026-11-01T09:30:00+00:00 (a date or a time)"


def _tail_count(value: str) -> int:
    n = positive_int_arg(value)
    if n > TAIL_MAX:
        raise ValueError(f"too many; {TAIL_EXPECTED}")
    return n


def _filter_arg(key: str) -> Callable[[str], str]:
    """Checks one filter value with the export's own parser; the value stays text."""

    def parse(value: str) -> str:
        if key == "user":
            user_id_arg(value)
        parse_filters([f"{key}={value}"])  # a FilterError is a ValueError
        return value

    return parse


@dataclass(frozen=True, kw_only=True)
class TailArgs:
    count: int = TAIL_DEFAULT


@dataclass(frozen=True, kw_only=True)
class ExportArgs:
    """The filters, as text (checked while parsing by the export's own parser)."""

    since: str | None = None
    until: str | None = None
    user: str | None = None
    action: str | None = None
    format: str = "jsonl"


async def audit_tail(ctx: CommandContext, args: TailArgs) -> Reply:
    room = None if _all_rooms(ctx) else ctx.room_id
    records = await ctx.services.audit_tools.audit.tail(args.count, room)
    return tail_reply(records, room)


def tail_reply(records: Sequence[AuditRecord], room_id: RoomID | None) -> Reply:
    """The rows as lines (plain) and as a small table (HTML); the room column only when the
    rows are from every room."""
    scope = f"in {room_id}" if room_id else "across all rooms"
    if not records:
        return Reply(f"No audit rows {scope} yet.")
    title = f"Last {len(records)} audit row(s) {scope}:"
    with_room = room_id is None
    lines = [title, *(tail_line(r, with_room=with_room) for r in records)]
    headers = ["#", "time (UTC)", "action", "by", "about", *(["room"] if with_room else [])]
    rows = [
        [
            str(r.seq),
            r.ts.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
            r.action,
            r.actor,
            r.subject or "",
            *([r.room_id or ""] if with_room else []),
        ]
        for r in records
    ]
    return Reply("\n".join(lines), fmt.paragraph(fmt.esc(title)) + fmt.table(headers, rows))


async def audit_export(ctx: CommandContext, args: ExportArgs) -> str:
    services = ctx.services
    given = {"since": args.since, "until": args.until, "user": args.user, "action": args.action}
    words = [f"{k}={v}" for k, v in given.items() if v is not None]
    if not _all_rooms(ctx):
        words.append(f"room={ctx.room_id}")
    try:
        filters = parse_filters(words)
    except FilterError as e:
        raise CommandUsageError(str(e)) from None
    result = await services.audit_tools.export_to_room(
        filters,
        args.format,
        reply_room_id=ctx.reply_room_id,
        actor=ctx.sender,
        event_id=ctx.event_id,
        now=services.clock.now(),
    )
    scope = "all rooms" if filters.room_id is None else filters.room_id
    return (
        f"Exported {result.rows} audit row(s) of {scope} as {result.filename} "
        f"(SHA-256 {result.sha256})."
    )


async def audit_verify(ctx: CommandContext, args: NoArgs) -> str:
    result = await ctx.services.audit_tools.verify(
        actor=ctx.sender, room_id=ctx.reply_room_id, event_id=ctx.event_id, via="chat"
    )
    summary = verify_summary(result)
    summary = summary[0].upper() + summary[1:]
    if result.ok:
        return f"✅ {summary}."
    return f"❌ {summary}. Keep this message and investigate."


def specs() -> list[CommandSpec[Any]]:
    return [
        CommandSpec(
            "audit tail",
            Role.STAFF,
            "show the last N audit rows of this room (all rooms in the management room)",
            audit_tail,
            (Arg("N", _tail_count, required=False, expected=TAIL_EXPECTED, attr="count"),),
            args=TailArgs,
        ),
        CommandSpec(
            "audit export",
            Role.ADMIN,
            "upload the audit log (this room's; all rooms' in the management room) as a file",
            audit_export,
            options=(
                Arg("since", _filter_arg("since"), required=False, expected=TIME_EXPECTED),
                Arg("until", _filter_arg("until"), required=False, expected=TIME_EXPECTED),
                Arg("user", _filter_arg("user"), required=False, expected=USER_ID_EXPECTED),
                Arg(
                    "action",
                    _filter_arg("action"),
                    required=False,
                    expected="expected an action name like message.sent",
                ),
                Arg(
                    "format",
                    choice_arg("jsonl", "csv"),
                    required=False,
                    expected="expected jsonl or csv",
                ),
            ),
            args=ExportArgs,
        ),
        CommandSpec(
            "audit verify",
            Role.ADMIN,
            "check the audit log's hash chain and its published checkpoints",
            audit_verify,
            args=NoArgs,
        ),
    ]
