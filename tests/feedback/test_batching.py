"""The group commit: callers submitting together share a batch, and nobody is left waiting."""

from __future__ import annotations

import asyncio

from feedback.batching import GroupCommit


def _echo(items: list[int]) -> list[int]:
    return items


async def _echo_async(items: list[int]) -> list[int]:
    await asyncio.sleep(0)
    return items


async def test_a_caller_that_submits_again_at_once_is_served() -> None:
    """A caller woken by its result submits again before the finished drainer's done callbacks ran:
    with one batch in flight its item used to wait forever (the spool writes hung a test run)."""
    for handle in (_echo, _echo_async):
        commit: GroupCommit[int, int] = GroupCommit(handle, in_flight=1)
        async with asyncio.timeout(5):
            for item in range(50):
                assert await commit.submit(item) == item
        await commit.close()


async def test_concurrent_callers_share_batches_and_each_gets_its_own_result() -> None:
    sizes: list[int] = []

    def handle(items: list[int]) -> list[int]:
        sizes.append(len(items))
        return [item * 10 for item in items]

    commit: GroupCommit[int, int] = GroupCommit(handle, in_flight=1)
    async with asyncio.timeout(5):
        results = await asyncio.gather(*(commit.submit(item) for item in range(40)))
    await commit.close()
    assert results == [item * 10 for item in range(40)]
    assert sum(sizes) == 40 and len(sizes) < 40
