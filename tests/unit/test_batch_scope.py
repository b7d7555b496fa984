"""Reads kept for one batch: made once inside a scope, always outside it, forgotten on write."""

from __future__ import annotations

from bot.batch_scope import batch_scope, forget, once_per_batch


async def test_a_read_is_made_once_per_batch_and_forgotten_on_write() -> None:
    reads: list[str] = []

    async def policy_of(room: str) -> str:
        async def read() -> str:
            reads.append(room)
            return f"policy of {room}"

        return await once_per_batch(("policy", room), read)

    await policy_of("!a")
    await policy_of("!a")
    assert reads == ["!a", "!a"]  # no scope: every read goes to the store

    reads.clear()
    with batch_scope():
        for _ in range(3):
            assert await policy_of("!a") == "policy of !a"
        await policy_of("!b")
        forget("members")  # another kind: kept answers stay
        await policy_of("!a")
        forget("policy")  # a policy was written: read again
        await policy_of("!a")
    await policy_of("!a")  # the scope ended
    assert reads == ["!a", "!b", "!a", "!a"]
