"""Replies Element renders: a plain body that reads on its own and an HTML
formatted_body with lists, a table, bold for what needs action, pills — and every piece of
user-supplied text escaped."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from mautrix.types import RoomID, UserID

from bot.commands import formatting as fmt
from bot.commands.audit import tail_reply
from bot.commands.builtin import help_reply
from bot.commands.registry import Reply
from bot.commands.room import created_reply
from bot.db.outbox import WaitingEffect
from bot.policy.audit_chain import AuditRecord
from bot.policy.posture import FixPlan, RoomState, patient_power_finding
from bot.service.outbox import EffectsOutbox, queued_notice
from bot.service.posture import PostureReport, report_lines
from bot.service.room_new import CreatedRoom

EVIL = '<script>alert("x")</script> & co'
EVIL_USER = UserID("@<script>&:x")
THERAPIST = UserID("@t:x")
ROOM_A = RoomID("!a:x")


def no_raw_evil(html: str) -> None:
    assert "<script>" not in html and "& co" not in html
    assert "&lt;script&gt;" in html


def test_help_is_a_list_of_commands_as_code() -> None:
    reply = help_reply("staff", "!chaperone", [("help", "list"), ("status", EVIL)])
    assert reply.text == (
        "Commands you can use here (your role: staff):\n"
        "• !chaperone help — list\n"
        f"• !chaperone status — {EVIL}"
    )
    assert reply.html is not None
    assert reply.html.startswith("<p>Commands you can use here (your role: staff):</p><ul>")
    assert "<li><code>!chaperone help</code> — list</li>" in reply.html
    no_raw_evil(reply.html)


def test_listing_bolds_what_needs_action_and_escapes_everything() -> None:
    reply = fmt.listing(
        [
            "Consent in this room (terms version 1):",
            f"• {EVIL_USER}: no consent yet",
            "• @ok:x: valid until 2027-01-01",
            f"⚠️ guest_access: {EVIL}",
        ]
    )
    assert reply.text.splitlines()[1] == f"• {EVIL_USER}: no consent yet"  # plain as it was
    assert reply.html == (
        "<p>Consent in this room (terms version 1):</p><ul>"
        "<li><strong>@&lt;script&gt;&amp;:x: no consent yet</strong></li>"
        "<li>@ok:x: valid until 2027-01-01</li>"
        "<li><strong>⚠️ guest_access: &lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; "
        "&amp; co</strong></li></ul>"
    )


def test_a_title_alone_has_no_empty_list() -> None:
    assert fmt.listing(["Posture of !r: ✅ all checks pass."]).html == (
        "<p>Posture of !r: ✅ all checks pass.</p>"
    )
    assert fmt.listing([]) == Reply("")


def test_posture_report_names_a_hostile_user_id_escaped() -> None:
    state = RoomState(power_levels={"users": {EVIL_USER: 100}}, members={EVIL_USER: "join"})
    finding = patient_power_finding(state, {EVIL_USER: 100})
    assert finding is not None
    report = PostureReport(RoomID("!room:x"), [FixPlan(finding, False, 100, "use `room new`")], 0)
    reply = fmt.listing(report_lines(report))
    assert EVIL_USER in reply.text
    assert reply.html is not None
    assert "@&lt;script&gt;&amp;:x (power 100)" in reply.html
    assert "<strong>⚠️ patient_power:" in reply.html


def record(seq: int, actor: str, subject: str | None, room: str | None) -> AuditRecord:
    return AuditRecord(
        seq=seq,
        ts=datetime(2026, 11, 29, 9, 30, tzinfo=UTC),
        actor=actor,
        action="command.executed",
        room_id=room,
        event_id=None,
        subject=subject,
        details={},
        prev_hash="",
        hash="",
    )


def test_audit_tail_is_a_table() -> None:
    rows = [record(7, EVIL_USER, EVIL, "!a:x"), record(8, "@b:x", None, "!b:x")]
    reply = tail_reply(rows, ROOM_A)
    assert reply.text == (
        "Last 2 audit row(s) in !a:x:\n"
        f"#7 2026-11-29 09:30:00Z command.executed by {EVIL_USER} → {EVIL}\n"
        "#8 2026-11-29 09:30:00Z command.executed by @b:x"
    )
    assert reply.html is not None
    assert reply.html.startswith(
        "<p>Last 2 audit row(s) in !a:x:</p><table><thead><tr><th>#</th><th>time (UTC)</th>"
        "<th>action</th><th>by</th><th>about</th></tr></thead><tbody>"
    )
    assert "<td>@&lt;script&gt;&amp;:x</td>" in reply.html
    no_raw_evil(reply.html)
    everywhere = tail_reply(rows, None)
    assert everywhere.html is not None and "<th>room</th>" in everywhere.html
    assert "<td>!b:x</td></tr>" in everywhere.html
    assert tail_reply([], ROOM_A) == Reply("No audit rows in !a:x yet.")


def test_room_new_reply_has_pills_a_list_and_the_link() -> None:
    created = CreatedRoom(
        room_id=RoomID("!new"),
        link="https://matrix.to/#/!new?via=x",
        patient=EVIL_USER,
        staff=(THERAPIST,),
        name=EVIL,
        room_version="12",
        encrypted_with_acl=True,
    )
    reply = created_reply(created)
    assert f"“{EVIL}” for {EVIL_USER} is ready (!new, room version 12)" in reply.text
    assert "Open it: https://matrix.to/#/!new?via=x" in reply.text
    assert "• end-to-end encrypted" in reply.text and "server ACL" in reply.text
    assert reply.html is not None
    no_raw_evil(reply.html)
    assert '<a href="https://matrix.to/#/@&lt;script&gt;&amp;:x">' in reply.html
    assert '<a href="https://matrix.to/#/@t:x">@t:x</a> (staff)' in reply.html
    assert '<strong>Open it: <a href="https://matrix.to/#/!new?via=x">' in reply.html
    dry = created_reply(CreatedRoom(None, None, UserID("@p:x"), (THERAPIST,), None, "12", False))
    assert dry.text == "🧪 dry-run: would create a room for @p:x; nothing was created."


def test_pill_escapes_attribute_and_text() -> None:
    assert (
        fmt.pill(UserID('@a"b:x')) == '<a href="https://matrix.to/#/@a&quot;b:x">@a&quot;b:x</a>'
    )


def test_queued_notice_keeps_the_html_in_its_payload() -> None:
    plain = queued_notice(RoomID("!r"), "text", cause="c")
    assert "html" not in plain.payload
    rich = queued_notice(RoomID("!r"), "text", cause="c", html="<p>text</p>")
    assert rich.payload["html"] == "<p>text</p>" and rich.txn_id == plain.txn_id


class FakeEffects:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    async def notice(self, room_id: str, text: str, **kwargs: Any) -> str:
        self.calls.append({"room_id": room_id, "text": text, **kwargs})
        return "$sent"


async def test_the_outbox_sends_the_html_as_formatted_body() -> None:
    effects = FakeEffects()
    outbox = EffectsOutbox(None, effects, None, None, None)  # type: ignore[arg-type]
    for payload, html in [
        ({"text": "t", "mentions": [], "html": "<p>t</p>"}, "<p>t</p>"),
        ({"text": "t", "mentions": []}, None),  # stored before html existed
        ({"text": "t", "mentions": [], "html": ["not", "text"]}, None),  # never trusted
    ]:
        effect = WaitingEffect(room_id=RoomID("!r"), txn_id="x", kind="notice", payload=payload)
        assert await outbox._perform(effect) == "$sent"
        assert effects.calls[-1]["html"] == html
