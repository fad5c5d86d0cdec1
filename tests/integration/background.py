"""An asyncio event loop on a daemon thread, for tests that drive async servers with plain
synchronous calls (hypothesis bodies, CLI subprocesses).

Contract: the loop runs from construction until :meth:`BackgroundLoop.close`; :meth:`run` runs a
coroutine on it and waits (bounded) for its result; ``call_soon`` schedules a plain callback on
it. ``close`` stops the loop, joins the thread and closes the loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class BackgroundLoop:
    """See the module docstring."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=timeout)

    def call_soon(self, callback: Callable[[], object]) -> None:
        self.loop.call_soon_threadsafe(callback)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()
