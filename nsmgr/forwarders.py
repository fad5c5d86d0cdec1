"""The forwarders of this node, as they registered themselves with nsmgr.

Forwarders register through nsmgr's endpoint registry API as endpoints of the reserved service
``forwarder`` (their labels for it describe their data plane: WireGuard kind and version,
underlay); :class:`LocalForwarders` (a registry element) keeps those registrations here and
does not pass them on to the domain registry. Contract: a forwarder is usable from its
registration until it unregisters, its registration expires, or it is marked dead; ``pick``
rotates over usable forwarders and skips excluded ones; ``spiffe_id`` is the identity a
forwarder registered with (``path_ids`` entry before this nsmgr's own).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator, Callable

from api.proto.registry_pb2 import NetworkServiceEndpoint
from sdk.errors import NotFound
from sdk.registry.core import Event, Query, RegistryCursor, RegistryElement
from sdk.registry.pathids import registrant_id

FORWARDER_SERVICE = "forwarder"


def is_forwarder(record: NetworkServiceEndpoint) -> bool:
    return list(record.network_service_names) == [FORWARDER_SERVICE]


class LocalForwarders(RegistryElement[NetworkServiceEndpoint]):
    """See the module docstring."""

    def __init__(
        self, ttl: float = 60.0, clock: Callable[[], float] = time.time,
        on_change: Callable[[str, str | None], None] | None = None,
    ) -> None:
        self.ttl = ttl
        self.clock = clock
        self._urls: dict[str, str] = {}
        self._records: dict[str, NetworkServiceEndpoint] = {}
        self._expires: dict[str, float] = {}
        self._turn = itertools.count()
        self.on_change = on_change  #: told (name, url) of every new URL, (name, None) of a loss

    def _live(self) -> list[str]:
        now = self.clock()
        return sorted(name for name, until in self._expires.items() if until > now)

    def url(self, name: str) -> str | None:
        """The URL of a usable forwarder, or None."""
        return self._urls.get(name) if name in self._live() else None

    def spiffe_id(self, name: str) -> str:
        """The SPIFFE ID the forwarder registered with ('' when it has none)."""
        record = self._records.get(name)
        return registrant_id(record) if record is not None else ""

    def names(self) -> set[str]:
        """Names of every forwarder that ever registered and was not removed."""
        return set(self._urls)

    def pick(self, exclude: set[str] | frozenset[str] = frozenset()) -> tuple[str, str]:
        """A usable forwarder (name, url), rotating; NotFound when there is none."""
        live = [name for name in self._live() if name not in exclude]
        if not live:
            raise NotFound(
                "no forwarder is registered on this node: is the forwarder running?"
            )
        name = live[next(self._turn) % len(live)]
        return name, self._urls[name]

    def remove(self, name: str) -> None:
        """Forget a forwarder (unregistered or found dead)."""
        self._urls.pop(name, None)
        self._records.pop(name, None)
        self._expires.pop(name, None)
        if self.on_change:
            self.on_change(name, None)

    async def register(
        self, record: NetworkServiceEndpoint, next: RegistryCursor[NetworkServiceEndpoint]
    ) -> NetworkServiceEndpoint:
        if not is_forwarder(record):
            return await next.register(record)
        known = self._urls.get(record.name)
        self._urls[record.name] = record.url
        self._records[record.name] = record
        self._expires[record.name] = self.clock() + self.ttl
        if self.on_change and known != record.url:
            self.on_change(record.name, record.url)
        return record

    async def unregister(
        self, record: NetworkServiceEndpoint, next: RegistryCursor[NetworkServiceEndpoint]
    ) -> None:
        if record.name in self._urls:
            self.remove(record.name)
            return
        await next.unregister(record)

    async def find(
        self,
        query: Query[NetworkServiceEndpoint],
        next: RegistryCursor[NetworkServiceEndpoint],
    ) -> AsyncIterator[Event[NetworkServiceEndpoint]]:
        if FORWARDER_SERVICE in query.template.network_service_names:
            for name in self._live():
                yield Event(self._records[name])
            return
        async for event in next.find(query):
            yield event
