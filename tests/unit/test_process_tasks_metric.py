"""``vwire_process_asyncio_tasks`` counts the tasks of the process's loop when scraped, from the
metrics server's thread as Prometheus does."""

from __future__ import annotations

import asyncio

from prometheus_client import REGISTRY

from sdk.metrics import count_tasks


def scraped() -> float | None:
    return REGISTRY.get_sample_value("vwire_process_asyncio_tasks")


async def test_the_gauge_follows_the_loops_tasks() -> None:
    count_tasks(asyncio.get_running_loop())
    before = await asyncio.to_thread(scraped)
    assert before == len(asyncio.all_tasks())
    gate = asyncio.Event()
    extra = [asyncio.create_task(gate.wait()) for _ in range(5)]
    assert await asyncio.to_thread(scraped) == before + 5
    gate.set()
    await asyncio.gather(*extra)
    assert await asyncio.to_thread(scraped) == before
