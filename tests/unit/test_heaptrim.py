"""sdk.heaptrim: the heap is trimmed once after calls stop for ``quiet`` seconds, never while a
call is in flight or begins during the wait, not again while nothing ran; with the C library's
real ``malloc_trim`` a process's RSS drops by the free holes a burst left."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest
from prometheus_client import REGISTRY

from sdk.heaptrim import HeapTrim

QUIET = 0.05


class Trims:
    """A fake trim that counts its calls."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


def _counted() -> float:
    return REGISTRY.get_sample_value("vwire_process_heap_trims_total") or 0.0


async def test_trims_once_after_the_last_call_ends_and_the_quiet_passes() -> None:
    trims, before = Trims(), _counted()
    heap = HeapTrim(QUIET, trims)
    heap.begin()
    heap.begin()
    heap.end()  # one still in flight: nothing armed
    await asyncio.sleep(3 * QUIET)
    assert trims.count == 0
    heap.end()
    assert trims.count == 0  # not at once: the next call may be right behind
    await asyncio.sleep(3 * QUIET)
    assert trims.count == 1 and _counted() == before + 1
    await asyncio.sleep(3 * QUIET)
    assert trims.count == 1  # nothing ran since: no second trim


async def test_a_call_during_the_quiet_postpones_the_trim() -> None:
    trims = Trims()
    heap = HeapTrim(QUIET, trims)
    heap.begin()
    heap.end()
    heap.begin()  # before the quiet is over
    await asyncio.sleep(3 * QUIET)
    assert trims.count == 0  # in flight when the first wait ended
    heap.end()
    heap.begin()
    heap.end()  # began and ended within the quiet: the first timer is void
    await asyncio.sleep(3 * QUIET)
    assert trims.count == 1


async def test_a_process_without_calls_is_never_trimmed() -> None:
    trims = Trims()
    HeapTrim(QUIET, trims)
    await asyncio.sleep(3 * QUIET)
    assert trims.count == 0


def test_a_negative_quiet_is_refused() -> None:
    with pytest.raises(ValueError, match="quiet must be 0 seconds or more"):
        HeapTrim(-1.0)


_FRAGMENTED = """
import asyncio, random
from sdk.heaptrim import HeapTrim

def rss_kb():
    return int(open("/proc/self/statm").read().split()[1]) * 4

random.seed(7)
kept, freed = [], []
for i in range(20000):  # ~125 MB in blocks malloc serves from its heap (> 512 bytes)
    (kept if i % 5 == 0 else freed).append(bytes(random.randint(600, 12000)))
freed.clear()  # holes between the kept blocks: free, yet resident
before = rss_kb()

async def main():
    heap = HeapTrim(0.01)  # the C library's malloc_trim
    heap.begin()
    heap.end()
    await asyncio.sleep(0.2)

asyncio.run(main())
print(before, rss_kb(), len(kept))
"""


def test_the_real_trim_gives_a_burst_s_free_holes_back() -> None:
    out = subprocess.run([sys.executable, "-c", _FRAGMENTED], capture_output=True, text=True,
                         timeout=60, check=True).stdout.split()
    before, after = int(out[0]), int(out[1])
    assert before - after > 40_000, (before, after)  # ~100 MB were freed; most comes back
