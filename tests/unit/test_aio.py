"""``sdk.aio.cancel_all``: every task ends before it returns, the calling task is spared, and a
task that failed on its own does not make the teardown fail."""

from __future__ import annotations

import asyncio

from sdk.aio import cancel_all


async def test_cancels_and_awaits_every_task_but_the_caller() -> None:
    cleaned: list[str] = []

    async def worker(name: str) -> None:
        try:
            await asyncio.sleep(60)
        finally:
            await asyncio.sleep(0)  # cleanup that needs a turn of the loop
            cleaned.append(name)

    async def failing() -> None:
        raise RuntimeError("broke on its own")

    tasks = [asyncio.create_task(worker(n)) for n in ("a", "b")]
    broken = asyncio.create_task(failing())
    await asyncio.sleep(0)

    async def closer() -> None:
        await cancel_all([*tasks, broken, closing])  # closing: the task running this

    closing = asyncio.create_task(closer())
    await closing
    assert sorted(cleaned) == ["a", "b"]
    assert all(t.cancelled() for t in tasks) and not closing.cancelled()
    assert isinstance(broken.exception(), RuntimeError)
