"""Long-lived threads, one per network namespace, that do the kernel calls of that namespace.

Why: a netlink request is processed by the kernel inside ``sendmsg`` of the caller, often under
its global RTNL lock (moving a link into another namespace takes ~20 ms), so an asyncio loop
that sends it stalls every other connection for that long; and a socket plus a thread per call
(``setns`` is per thread) cost more than the call. A :class:`NamespaceWorkers` runs each
namespace's calls in its own thread, which joined that namespace once and keeps per-namespace
state (a netlink socket, cached interface indexes) between calls; the event loop only awaits.

Contract:

- :meth:`NamespaceWorkers.run` runs ``job(state)`` — a coroutine function — in the worker
  thread of the namespace open at ``fd`` (``None``: the process's own namespace), on that
  thread's own event loop, and returns its result or raises its exception in the caller's loop.
  With ``now=True`` the job must finish without waiting for anything (it makes only blocking
  calls, as the kernel changes do): its coroutine is run to its end at once, without starting
  the thread's event loop for it (that start and stop cost more than a change itself); a job
  that does wait is closed and fails with ``DataplaneError`` (a programming error).
  Jobs of one namespace run one at a time, in submission order; jobs of different namespaces run
  in parallel. The caller keeps and closes ``fd``; a worker takes its own reference.
- Workers are keyed by namespace identity (device, inode of the nsfs file), so two paths of one
  namespace share a worker and a path that now names another namespace gets another one.
- ``state`` is made by ``setup()`` in the thread once it joined the namespace, and released by
  ``teardown(state)`` when the worker ends. A worker ends after ``idle`` seconds without a job
  (``own_idle`` for the process's own namespace): a thread in a namespace, and its sockets, keep
  that namespace alive, so a workload namespace deleted by its owner outlives its last kernel
  call by at most ``idle`` seconds. No job is lost to a worker that is ending: submission and
  retirement take the same lock, and a retired worker is replaced.
- A worker that cannot join its namespace fails its jobs with ``DataplaneError``.
- :meth:`NamespaceWorkers.close` ends every worker (pending jobs still run first).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import CoroutineType
from typing import Any, Generic, TypeVar

from sdk.errors import DataplaneError
from sdk.netns import netns_identity, setns

S = TypeVar("S")
T = TypeVar("T")
Job = Callable[[S], Awaitable[Any]]
NsKey = tuple[int, int] | None


@dataclass(eq=False)
class _Pending:
    job: Callable[[Any], Awaitable[Any]]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    now: bool = False


def _finished_now(job: Callable[[Any], Awaitable[Any]], state: Any) -> Any:
    """Run ``job(state)``'s coroutine to its end without an event loop (module docstring)."""
    coroutine = job(state)
    if not isinstance(coroutine, CoroutineType):
        raise DataplaneError(f"kernel job {job.__qualname__} is not a coroutine function")
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    waiting = coroutine  # name the innermost coroutine that waited: where the fix goes
    while isinstance(waiting.cr_await, CoroutineType):
        waiting = waiting.cr_await
    where = waiting.cr_code.co_qualname
    coroutine.close()
    raise DataplaneError(
        f"kernel job {job.__qualname__} waited for its event loop (in {where}): submit it "
        "without now=True"
    )


def _deliver(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # the caller was cancelled; the kernel call happened anyway
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class _Worker(Generic[S]):
    def __init__(self, owner: NamespaceWorkers[S], key: NsKey, fd: int | None, idle: float) -> None:
        self.owner, self.key, self.idle = owner, key, idle
        self.jobs: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self.retired = False
        self._fd = None if fd is None else os.dup(fd)
        where = "own" if key is None else f"{key[0]}:{key[1]}"
        self.thread = threading.Thread(target=self._main, name=f"netns-{where}", daemon=True)
        self.thread.start()

    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        try:
            state, failure = self._join()
            while (pending := self._next()) is not None:
                if failure is not None:
                    self._answer(pending, None, failure)
                    continue
                try:
                    if pending.now:
                        result = _finished_now(pending.job, state)
                    else:
                        result = loop.run_until_complete(pending.job(state))
                except BaseException as exc:  # handed to the caller
                    self._answer(pending, None, exc)
                else:
                    self._answer(pending, result, None)
            if failure is None:
                self.owner.teardown(state)
        finally:
            loop.close()

    def _join(self) -> tuple[Any, BaseException | None]:
        try:
            if self._fd is not None:
                setns(self._fd)  # this thread only, for its whole life
            return self.owner.setup(), None
        except OSError as err:
            return None, DataplaneError(f"cannot enter network namespace {self.key}: {err}")
        finally:
            if self._fd is not None:
                os.close(self._fd)

    def _next(self) -> _Pending | None:
        while True:
            try:
                return self.jobs.get(timeout=self.idle)
            except queue.Empty:
                if self.owner.retire(self):
                    return None

    @staticmethod
    def _answer(pending: _Pending, result: Any, error: BaseException | None) -> None:
        with contextlib.suppress(RuntimeError):  # the caller's loop is closed: nobody waits
            pending.loop.call_soon_threadsafe(_deliver, pending.future, result, error)


class NamespaceWorkers(Generic[S]):
    """See the module docstring."""

    def __init__(
        self,
        setup: Callable[[], S],
        teardown: Callable[[S], None],
        *,
        idle: float = 1.0,
        own_idle: float = 30.0,
    ) -> None:
        self.setup = setup
        self.teardown = teardown
        self.idle, self.own_idle = idle, own_idle
        self._lock = threading.Lock()
        self._workers: dict[NsKey, _Worker[S]] = {}

    async def run(self, fd: int | None, job: Callable[[S], Awaitable[T]], *,
                  now: bool = False) -> T:
        """Run ``job(state)`` in the worker of the namespace at ``fd`` (module docstring)."""
        key = None if fd is None else netns_identity(fd)
        loop = asyncio.get_running_loop()
        pending = _Pending(job, loop, loop.create_future(), now)
        with self._lock:
            worker = self._workers.get(key)
            if worker is None:
                idle = self.own_idle if key is None else self.idle
                worker = self._workers[key] = _Worker(self, key, fd, idle)
            worker.jobs.put(pending)
        result: T = await pending.future
        return result

    def retire(self, worker: _Worker[S]) -> bool:
        """Called by an idle worker: True (and forgotten) when no job is waiting for it."""
        with self._lock:
            if not worker.jobs.empty():
                return False
            worker.retired = True
            if self._workers.get(worker.key) is worker:
                del self._workers[worker.key]
            return True

    def live(self) -> int:
        """How many workers (threads) run now."""
        with self._lock:
            return len(self._workers)

    def close(self) -> None:
        """End every worker once its pending jobs ran (does not wait for the threads)."""
        with self._lock:
            workers, self._workers = list(self._workers.values()), {}
        for worker in workers:
            worker.retired = True
            worker.jobs.put(None)
