"""Proof that the suite's asyncio task leak check (``tests/conftest.py``) catches leaks, both by
calling the checker directly and by running a leaking test in a nested pytest session."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import cancel_all, leaked_tasks


async def test_checker_reports_a_pending_task() -> None:
    before = set(asyncio.all_tasks())
    task = asyncio.create_task(asyncio.Event().wait(), name="leaked-on-purpose")
    leaked = await leaked_tasks(before, grace=0.05)
    assert leaked == [task]
    await cancel_all(leaked)
    assert task.cancelled()


async def test_checker_ignores_finished_and_finishing_tasks() -> None:
    before = set(asyncio.all_tasks())
    await asyncio.create_task(asyncio.sleep(0))
    event = asyncio.Event()
    finishing = asyncio.create_task(event.wait())
    asyncio.get_running_loop().call_soon(event.set)
    assert await leaked_tasks(before, grace=1.0) == []
    assert finishing.done()


def test_leaking_test_fails_in_a_real_session(pytester: pytest.Pytester) -> None:
    pytester.makeconftest('pytest_plugins = ["tests.conftest"]\n')
    pytester.makepyfile(
        test_inner="""
        import asyncio

        async def test_clean():
            task = asyncio.create_task(asyncio.sleep(0))
            await task

        async def test_leaks():
            asyncio.create_task(asyncio.Event().wait(), name="forgotten")

        def test_sync():
            pass
        """
    )
    result = pytester.runpytest_inprocess(
        "-p", "no:cacheprovider", "-o", "asyncio_mode=auto",
        "-o", "asyncio_default_fixture_loop_scope=function",
    )
    result.assert_outcomes(passed=3, errors=1)
    result.stdout.fnmatch_lines(["*ERROR at teardown of test_leaks*", "*forgotten (Event.wait)*"])
