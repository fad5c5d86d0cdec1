"""IdleDevices: what a backend keeps of closed vWires, how many, for how long, and how it ends."""

from __future__ import annotations

import asyncio

from forwarder.wireguard.recycle import IdleDevices


class Stops:
    """The items handed to ``stop``, in order; ``fail`` ones raise."""

    def __init__(self, fail: tuple[str, ...] = ()) -> None:
        self.stopped: list[str] = []
        self.fail = fail

    async def __call__(self, item: str) -> None:
        await asyncio.sleep(0)
        self.stopped.append(item)
        if item in self.fail:
            raise RuntimeError(f"cannot stop {item}")


async def test_take_prefers_the_picked_one_else_the_last_put_of_its_key() -> None:
    stops = Stops()
    idle = IdleDevices[str](4, 60.0, stops)
    for key, item in (("ns1", "a"), ("ns2", "b"), ("ns1", "c"), ("ns1", "d")):
        idle.put(key, item)
    assert idle.take("ns1") == "d"
    assert idle.take("ns1", lambda item: item == "a") == "a"
    assert idle.take("ns1", lambda item: item == "zz") == "c"  # none picked: the last put
    assert idle.take("ns1") is None
    assert idle.items() == ["b"] and len(idle) == 1
    await idle.close()
    assert stops.stopped == ["b"]


async def test_at_most_keep_are_kept_the_longest_kept_stopped_first() -> None:
    stops = Stops()
    idle = IdleDevices[str](2, 60.0, stops)
    for item in "abc":
        idle.put("ns", item)
    await idle.stopped()
    assert stops.stopped == ["a"] and idle.items() == ["b", "c"]
    b = idle.items()[0]
    assert idle.remove(b) and not idle.remove(b)  # forgotten, not stopped
    await idle.close()
    assert stops.stopped == ["a", "c"]


async def test_each_is_stopped_when_its_time_is_up_and_the_timer_ends_with_the_last() -> None:
    stops = Stops()
    idle = IdleDevices[str](4, 0.1, stops)
    idle.put("ns", "a")
    await asyncio.sleep(0.05)
    idle.put("ns", "b")
    await asyncio.sleep(0.08)  # a's time is up, not b's
    await idle.stopped()
    assert stops.stopped == ["a"] and idle.items() == ["b"]
    await asyncio.sleep(0.1)
    await idle.stopped()
    assert stops.stopped == ["a", "b"] and idle.items() == []
    assert idle._timer is not None and idle._timer.done()
    idle.put("ns", "c")  # a new timer for the next one
    await asyncio.sleep(0.15)
    await idle.stopped()
    assert stops.stopped == ["a", "b", "c"]


async def test_nothing_is_kept_with_keep_0_or_after_close_and_a_failed_stop_is_logged() -> None:
    stops = Stops(fail=("a",))
    off = IdleDevices[str](0, 60.0, stops)
    assert not off.wants()
    off.put("ns", "a")  # handed straight to stop, whose failure does not escape
    await off.stopped()
    assert stops.stopped == ["a"] and off.items() == []

    idle = IdleDevices[str](2, 60.0, stops)
    idle.put("ns", "b")
    await idle.close()
    assert not idle.wants() and stops.stopped == ["a", "b"]
    idle.put("ns", "c")
    await idle.stopped()
    assert stops.stopped == ["a", "b", "c"] and idle.items() == []
