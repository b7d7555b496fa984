"""One unit of work per sync batch or command: the only way audit rows are written, and with
them every other write of the same transaction, in the one order that cannot deadlock.

The lock order. `AuditLog.append` serializes appenders with a transaction-level advisory lock
(`AUDIT_APPEND_LOCK_ID`), held until the transaction ends. A transaction that took a row lock
first (an UPDATE, an INSERT into a unique index) and then appended would wait for the audit
lock while holding the row, and one that holds the audit lock and then wants that row waits
for it: two writers deadlock. So every transaction that writes audit rows appends them FIRST
and takes row locks after. `UnitOfWork.commit` makes that structural: it appends the unit's
audit rows, then runs its other writes, in one transaction (a savepoint inside the caller's).

Where a write's result would decide the audit rows (was the consent already revoked? was the
user on the staff list?), the decision is made from a read taken under the audit lock instead:
`UnitOfWork.locked` takes the lock first, the block reads and fills the unit, and the unit is
stored when the block ends. Every writer of such rows goes through a unit, so holds the same
lock: the read cannot be overtaken between the decision and the commit. Writes that may meet
their own earlier run (a replayed command) are idempotent, and so is the audit append (per
`(event_id, action)`), so a repeat stores nothing twice.

While a sync batch is handled nothing writes: handlers add their writes to the batch's
outcome (`BatchOutcome.writes`) and the batch's unit stores them after its audit rows; a later
event of the same batch that must see a write's effect reads it from the batch memo
(`bot/batch_scope.keep`, as the bot's own join does for "is this room managed").
Background loops' bookkeeping that records no audit row (a retry counter, a removal in
progress, an effect's attempt) is one statement in a transaction of its own: it never holds
the audit lock, so it cannot take part in the deadlock above.

`tests/unit/test_unit_of_work_guard.py` fails if anything in `bot/` but this module and
`AuditLog` itself calls `audit.append(`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager

from bot.db.audit import AUDIT_APPEND_LOCK_ID, AuditEntry, AuditLog
from bot.db.database import transaction

Write = Callable[[], Awaitable[object]]
"""A write that commits with the unit's audit rows (run after them, in order)."""


class UnitOfWork:
    """Audit rows and the writes that go with them, committed together, audit rows first."""

    def __init__(
        self, audit: AuditLog, entries: Iterable[AuditEntry] = (), writes: Iterable[Write] = ()
    ) -> None:
        self.audit = audit
        self.entries: list[AuditEntry] = list(entries)
        self.writes: list[Write] = list(writes)
        self.seqs: list[int] = []
        """The seqs the commit appended (replays skipped)."""

    def record(self, *entries: AuditEntry) -> UnitOfWork:
        self.entries += entries
        return self

    def then(self, *writes: Write) -> UnitOfWork:
        self.writes += writes
        return self

    async def commit(self) -> list[int]:
        """Store the unit in one transaction (a savepoint when the caller holds one): the audit
        rows (taking the audit lock), then the writes in the order they were added."""
        if not self.writes:  # the append is a transaction of its own (or joins the caller's)
            self.seqs = await self.audit.append(self.entries)
            return self.seqs
        async with transaction(self.audit.db):
            await self._store()
        return self.seqs

    async def _store(self) -> None:
        self.seqs = await self.audit.append(self.entries)
        for write in self.writes:
            await write()

    @staticmethod
    @asynccontextmanager
    async def locked(audit: AuditLog) -> AsyncIterator[UnitOfWork]:
        """A transaction that takes the audit lock first; the block reads what decides the
        audit rows and fills the unit (it must not write itself), and the unit is stored when
        the block ends (nothing is, if it raises)."""
        async with transaction(audit.db) as conn:
            await conn.execute("SELECT pg_advisory_xact_lock($1)", AUDIT_APPEND_LOCK_ID)
            unit = UnitOfWork(audit)
            yield unit
            await unit._store()

    @staticmethod
    @asynccontextmanager
    async def batch(audit: AuditLog) -> AsyncIterator[None]:
        """An outer transaction for several units committed as savepoints (a batch stored
        event by event): the audit lock is taken first, so a unit with writes but no audit
        rows cannot take a row lock ahead of a later unit's append."""
        async with transaction(audit.db) as conn:
            await conn.execute("SELECT pg_advisory_xact_lock($1)", AUDIT_APPEND_LOCK_ID)
            yield


async def record_audit(audit: AuditLog, entries: Iterable[AuditEntry]) -> list[int]:
    """Audit rows with no other write: a unit of their own. Returns the seqs appended."""
    return await UnitOfWork(audit, entries).commit()
