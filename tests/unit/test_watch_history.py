"""The watch history that resumes rest on is bounded in events and in bytes: re-registering big
records cannot make a replica hold more, and a resume older than what is kept is refused."""

from __future__ import annotations

import pytest

from api.proto.registry_pb2 import NetworkServiceEndpoint
from sdk.errors import FailedPrecondition
from sdk.registry.core import Event, Query, RegistryChain
from sdk.registry.kinds import ENDPOINT
from sdk.registry.watch import Watch


def big(revision: int, size: int) -> Event[NetworkServiceEndpoint]:
    record = NetworkServiceEndpoint(name="big", url="tcp://10.0.0.1:1" + "0" * size)
    return Event(record, False, revision)


async def resumed(watch: Watch[NetworkServiceEndpoint], revision: int) -> int:
    """The revision of the first event a watch resumed after ``revision`` gets."""
    events = RegistryChain([watch]).find(Query(NetworkServiceEndpoint(), True, revision))
    try:
        return (await anext(events)).revision
    finally:
        await events.aclose()


async def test_history_is_bounded_in_bytes_and_events() -> None:
    watch: Watch[NetworkServiceEndpoint] = Watch(ENDPOINT, max_backlog_bytes=10_000,
                                                 publish_local=False, history=50)
    for revision in range(1, 101):  # a hundred re-registrations of a 1 kB record
        watch.publish(big(revision, 1_000))
    events, size = watch.kept
    assert size <= 10_000 < size + 1_100
    assert events == 9 and watch.floor == 91
    with pytest.raises(FailedPrecondition, match="after revision 91 only"):
        await resumed(watch, 90)
    assert await resumed(watch, 95) == 96
    for revision in range(101, 201):  # small records: the event bound applies
        watch.publish(Event(NetworkServiceEndpoint(name=f"n{revision}"), False, revision))
    assert watch.kept[0] == 50 and watch.floor == 150
