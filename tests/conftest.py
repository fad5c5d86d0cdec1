"""Suite-wide fixtures: a check that no test leaves asyncio tasks running, and logging to stderr,
restored after every test.

The design forbids leaked asyncio tasks: whatever a test (or its fixtures) starts must be
finished or cancelled and awaited by the time the test is torn down. The autouse fixture
``_no_leaked_tasks`` snapshots ``asyncio.all_tasks()`` when an async test's event loop starts and
compares at teardown, after every other fixture of the test has been torn down. Tasks that are
merely finishing get a short, bounded chance to complete; what is still pending then is cancelled
(so it cannot disturb later tests) and the test fails with the tasks' names and coroutines.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import structlog

pytest_plugins = ["pytester", "tests.etcd_fixture"]

#: Seconds a task created by the test gets to finish on its own after teardown.
LEAK_GRACE = 1.0


def _stderr_of_the_moment(*_args: Any) -> structlog.PrintLogger:
    return structlog.PrintLogger(sys.stderr)


# Logs of in-process servers go to stderr, as the processes' own do: structlog's default is
# stdout, where a log line from a server still running in the background would land in the
# output a test is reading (an nsmctl command's, a CLI table).
structlog.configure(logger_factory=_stderr_of_the_moment, cache_logger_on_first_use=False)


@pytest.fixture(autouse=True)
def _structlog_restored() -> Iterator[None]:
    """A test that runs a process's ``main()`` in-process configures structlog to print to the
    ``sys.stderr`` of that moment, pytest's capture, closed after the test: put the previous
    configuration back, so later tests do not log into a closed file."""
    before = structlog.get_config()
    yield
    structlog.configure(**before)


def describe_task(task: asyncio.Task[object]) -> str:
    """A one-line description of a task for the failure message."""
    coro = task.get_coro()
    where = getattr(coro, "__qualname__", None) or repr(coro)
    return f"{task.get_name()} ({where})"


async def leaked_tasks(
    before: set[asyncio.Task[object]], grace: float = LEAK_GRACE
) -> list[asyncio.Task[object]]:
    """Tasks of the running loop that are not in ``before``, not the caller, and still pending
    after waiting up to ``grace`` seconds for them. The caller decides what to do with them."""
    current = asyncio.current_task()
    new = {t for t in asyncio.all_tasks() if t is not current and t not in before}
    if new:
        await asyncio.wait(new, timeout=grace)
    return sorted((t for t in new if not t.done()), key=lambda t: t.get_name())


async def cancel_all(tasks: list[asyncio.Task[object]]) -> None:
    """Cancel ``tasks`` and wait (bounded) for them to finish."""
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=LEAK_GRACE)


@pytest.fixture
async def _task_leak_check() -> AsyncIterator[None]:
    """Runs inside the test's event loop: snapshot tasks, then check them at teardown."""
    before = set(asyncio.all_tasks())
    yield
    leaked = await leaked_tasks(before)
    if leaked:
        await cancel_all(leaked)
        pytest.fail(
            f"{len(leaked)} asyncio task(s) still pending after the test: "
            + ", ".join(describe_task(t) for t in leaked)
            + " - cancel and await every task a test or fixture starts",
            pytrace=False,
        )


@pytest.fixture(autouse=True)
def _no_leaked_tasks(request: pytest.FixtureRequest) -> Iterator[None]:
    """Enable the task leak check for async tests (sync tests pay nothing)."""
    if request.node.get_closest_marker("asyncio") is not None:
        request.getfixturevalue("_task_leak_check")
    yield
