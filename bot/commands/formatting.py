"""HTML for replies Element renders: lists, small tables, bold for what needs action,
pills for users. Every piece of text is escaped here; callers pass plain text, never HTML."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from html import escape

from mautrix.types import UserID

from bot.commands.registry import Reply

MATRIX_TO = "https://matrix.to/#/"


def esc(text: object) -> str:
    """Plain text as HTML (quotes too, so it is safe in attributes)."""
    return escape(str(text), quote=True)


def pill(user_id: UserID) -> str:
    """A user mention Element renders as a pill."""
    return f'<a href="{MATRIX_TO}{esc(user_id)}">{esc(user_id)}</a>'


def link(url: str, text: str) -> str:
    return f'<a href="{esc(url)}">{esc(text)}</a>'


def bold(html: str) -> str:
    return f"<strong>{html}</strong>"


def code(text: str) -> str:
    return f"<code>{esc(text)}</code>"


def items(html_items: Iterable[str]) -> str:
    """A bulleted list of HTML items (each already escaped)."""
    return "<ul>" + "".join(f"<li>{item}</li>" for item in html_items) + "</ul>"


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A table of plain-text cells."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def paragraph(html: str) -> str:
    return f"<p>{html}</p>"


def plain_list(lines: Iterable[str]) -> str:
    """The plain-text twin of `items`: one bullet a line."""
    return "\n".join(f"• {line}" for line in lines)


ATTENTION_MARKS = ("⚠️", "❌", "⛔", "🚨")
ATTENTION_WORDS = ("no consent yet", "expired", "withdrawn", "revoked", "WARNING")


def needs_action(line: str) -> bool:
    """A line someone has to act on: shown in bold."""
    return line.startswith(ATTENTION_MARKS) or any(w in line for w in ATTENTION_WORDS)


def listing_html(title: str, lines: Sequence[str]) -> str:
    """A title and a bulleted list of plain-text lines (a leading "• " dropped), the lines that
    need action in bold."""
    cells = []
    for line in lines:
        text = line[2:] if line.startswith("• ") else line
        cells.append(bold(esc(text)) if needs_action(text) else esc(text))
    html = paragraph(bold(esc(title)) if needs_action(title) else esc(title))
    return html + (items(cells) if cells else "")


def listing(lines: Sequence[str]) -> Reply:
    """A reply whose first line is its title and the rest a list: the plain body as the lines
    read, the HTML as a list Element renders."""
    if not lines:
        return Reply("")
    return Reply("\n".join(lines), listing_html(lines[0], lines[1:]))
