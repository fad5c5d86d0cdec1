"""Small asyncio helpers shared by long-lived processes.

``cancel_all(tasks)`` cancels every task and returns once all have ended, whatever each ended
with (a task's own error is not raised again: the caller is tearing it down). The task running
the call is never cancelled by it, so an element may close what it owns from inside one of its
own tasks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any


async def cancel_all(tasks: Iterable[asyncio.Future[Any]]) -> None:
    """See the module docstring."""
    current = asyncio.current_task()
    ending = [task for task in tasks if task is not current]
    for task in ending:
        task.cancel()
    await asyncio.gather(*ending, return_exceptions=True)
