"""forwarder.kernel.worker: jobs run in the namespace's thread; ``now=True`` jobs without its
event loop.

A kernel change makes only blocking calls, so the forwarder submits it with ``now=True``: its
coroutine runs to its end at once in the worker thread, with no event loop started for it. A
job that waits anyway fails clearly, and the worker goes on serving. Jobs in the process's own
namespace (``fd=None``) need no privileges.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator

import pytest

from forwarder.kernel.worker import NamespaceWorkers
from sdk.errors import DataplaneError, NotFound


@pytest.fixture
async def workers() -> AsyncIterator[NamespaceWorkers[list[str]]]:
    pool: NamespaceWorkers[list[str]] = NamespaceWorkers(list, lambda _state: None)
    yield pool
    pool.close()


async def test_a_job_run_now_runs_in_the_worker_without_an_event_loop(
    workers: NamespaceWorkers[list[str]],
) -> None:
    async def job(state: list[str]) -> tuple[int, bool]:
        state.append("changed")
        return threading.get_ident(), asyncio._get_running_loop() is None

    thread, no_loop = await workers.run(None, job, now=True)
    assert thread != threading.get_ident() and no_loop

    async def on_the_loop(state: list[str]) -> tuple[int, list[str]]:
        await asyncio.sleep(0)  # a real wait: the worker's own loop runs it
        return threading.get_ident(), list(state)

    assert await workers.run(None, on_the_loop) == (thread, ["changed"]), "same thread, state"


async def test_a_job_run_now_raises_its_own_error(workers: NamespaceWorkers[list[str]]) -> None:
    async def job(state: list[str]) -> None:
        raise NotFound("interface nsm0 does not exist")

    with pytest.raises(NotFound, match="nsm0"):
        await workers.run(None, job, now=True)


async def test_a_job_run_now_that_waits_fails_naming_it_and_the_worker_goes_on(
    workers: NamespaceWorkers[list[str]],
) -> None:
    finished = []

    async def waits(state: list[str]) -> None:
        try:
            await asyncio.sleep(0)
            finished.append("after the wait")
        finally:
            state.append("closed")

    with pytest.raises(DataplaneError,
                       match=r"<locals>\.waits waited for its event loop \(in sleep\)"):
        await workers.run(None, waits, now=True)
    assert not finished, "the job was closed at its first wait, never resumed"

    async def read(state: list[str]) -> list[str]:
        return list(state)

    assert await workers.run(None, read, now=True) == ["closed"]
