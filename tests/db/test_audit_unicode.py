"""Property: any text in any audit field appends to real Postgres and verifies."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.db.audit import AuditEntry, AuditLog
from bot.policy.storable import storable

any_text = st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=30)
maybe_text = st.none() | any_text


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    actor=any_text,
    action=any_text,
    room_id=maybe_text,
    event_id=maybe_text,
    subject=maybe_text,
    details=st.dictionaries(any_text, any_text | st.lists(any_text, max_size=3), max_size=3),
)
async def test_any_text_in_every_field_appends_and_verifies(
    audit: AuditLog,
    actor: str,
    action: str,
    room_id: str | None,
    event_id: str | None,
    subject: str | None,
    details: dict[str, object],
) -> None:
    entry = AuditEntry(actor, action, room_id, event_id, subject, {"d": details, **details})
    await audit.append([entry, AuditEntry("system", "after", details={"x": "\x00\ud800"})])
    result = await audit.verify()
    assert result.ok, result


any_number = (
    st.integers(-(2**80), 2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.booleans()
    | st.none()
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    details=st.dictionaries(
        st.text(max_size=5), any_number | st.lists(any_number, max_size=3), max_size=4
    )
)
async def test_any_number_appends_and_verifies(
    audit: AuditLog, details: dict[str, object]
) -> None:
    """Integers beyond 64 bits, tiny and huge floats: each is hashed as verify reads it back."""
    await audit.append([AuditEntry("system", "numbers", details=details)])
    result = await audit.verify()
    assert result.ok, result
    [stored] = await audit.tail(1)
    assert stored.details.keys() == storable(details).keys()
