"""Reads that cannot change while one sync batch is handled, made once per batch.

Handling a batch asks the same questions for every event — the room's policy, its members,
whether a sender is listed staff, a sender's device and cross-signing keys — and each answer
is a round trip to Postgres. Inside `batch_scope()` the first answer is kept and reused until
the scope ends; a write that changes one (a policy set, a staff list change, new device keys)
forgets it at once. Outside a scope (commands from the console, background loops) nothing is
kept, so those always read what is stored.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

T = TypeVar("T")

_memo: ContextVar[dict[Hashable, Any] | None] = ContextVar("chaperone_batch_memo", default=None)


@contextmanager
def batch_scope() -> Iterator[None]:
    """Keep read answers until the block ends."""
    token = _memo.set({})
    try:
        yield
    finally:
        _memo.reset(token)


async def once_per_batch(key: Hashable, read: Callable[[], Awaitable[T]]) -> T:
    """`read()`, or the answer it gave earlier in this batch."""
    memo = _memo.get()
    if memo is None:
        return await read()
    if key in memo:
        answer: T = memo[key]
        return answer
    answer = await read()
    memo[key] = answer
    return answer


def kept(key: Hashable) -> Any | None:
    """The answer kept for `key` in this batch, or None."""
    memo = _memo.get()
    return None if memo is None else memo.get(key)


def keep(key: Hashable, answer: Any) -> None:
    """Keep `answer` for `key` until the batch ends (a write that knows the new answer)."""
    memo = _memo.get()
    if memo is not None:
        memo[key] = answer


def in_batch() -> bool:
    return _memo.get() is not None


def take(kind: str) -> list[tuple[Hashable, Any]]:
    """Remove and return every kept (key, answer) of this kind."""
    memo = _memo.get()
    if not memo:
        return []
    keys = [k for k in memo if isinstance(k, tuple) and k and k[0] == kind]
    return [(k, memo.pop(k)) for k in keys]


def forget(kind: str) -> None:
    """Drop every kept answer of this kind (the first part of its key)."""
    memo = _memo.get()
    if memo:
        for key in [k for k in memo if isinstance(k, tuple) and k and k[0] == kind]:
            del memo[key]
