"""Give the C heap's free pages back to the system once a process's calls have stopped.

glibc's malloc keeps what a process frees for its next allocations and gives back on its own only
the free top of a heap. A burst of concurrent calls leaves free holes between what lives on
(connections kept, caches), and they stay resident: after 50 concurrent setups an nsmgr's main
heap held 13.6 MB, 8.8 MB of it in use (``malloc_stats``). ``malloc_trim(0)`` gives back the free
pages of every arena, holes included; called after such a burst it took n1's nsmgr and forwarder
from 147 to 140-141 MB together (measured with ``bench.connect``). It walks the free lists, ~1 ms
for heaps of this size, so it must not run between the calls of a busy spell.

Contract: :class:`HeapTrim` counts the calls in flight (:meth:`HeapTrim.begin` /
:meth:`HeapTrim.end`, from the event loop's thread). When the count falls to zero it waits
``quiet`` seconds; if no call began meanwhile and none is in flight it trims once, counted in
``vwire_process_heap_trims_total``. A steady stream of calls never trims (the memory is in use
again at once), and a quiet process trims once after its last busy spell, not again. Where the C
library has no ``malloc_trim`` (musl), nothing is trimmed. :data:`PROCESS` is the one every gRPC
server of the process reports to (:func:`sdk.limits.inflight.limited_server`).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable

from sdk.metrics import HEAP_TRIMS

#: Seconds without calls in flight before the heap is trimmed.
QUIET = 1.0


@functools.cache
def _libc_trim() -> Callable[[], object] | None:
    """``malloc_trim(0)`` of this process's C library, or None where it has none. Looked up at
    the first trim: a process that never trims (a CLI run) does not load ctypes (~0.4 MB)."""
    import ctypes

    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: trim(0)


class HeapTrim:
    """See the module docstring. ``trim`` defaults to the C library's ``malloc_trim(0)``."""

    def __init__(self, quiet: float = QUIET, trim: Callable[[], object] | None = None) -> None:
        if quiet < 0:
            raise ValueError(f"quiet must be 0 seconds or more (got {quiet})")
        self.quiet = quiet
        self._trim = trim
        self.in_flight = 0
        # Calls begun so far: a timer trims only if none began since it was set. So a quiet
        # process is trimmed once: no call ends, no timer is set again.
        self._began = 0

    def begin(self) -> None:
        """A call started."""
        self.in_flight += 1
        self._began += 1

    def end(self) -> None:
        """A call ended; the last one in flight arms the trim."""
        self.in_flight -= 1
        if self.in_flight == 0:
            asyncio.get_running_loop().call_later(self.quiet, self._due, self._began)

    def _due(self, began: int) -> None:
        if self.in_flight or began != self._began:
            return
        trim = self._trim or _libc_trim()
        if trim is None:  # no malloc_trim in this C library
            return
        trim()
        HEAP_TRIMS.inc()


#: The trim every gRPC server of this process reports its calls to.
PROCESS = HeapTrim()
