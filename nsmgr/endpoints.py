"""Endpoints registered through this nsmgr: their real URLs stay here, the registry gets ours.

Contract of :class:`LocalEndpoints` (a registry element in nsmgr's endpoint registry chain): a
registration from a local endpoint is remembered with its own URL (a local unix socket), then
passed on with ``url`` rewritten to this nsmgr's advertised URL, so other nodes reach the
endpoint through this nsmgr. Unregistration forgets it. ``url(name)`` answers whether an
endpoint is local and where it listens, ``spiffe_id(name)`` who it said it is (its entry in
``path_ids``, before this nsmgr's own).
"""

from __future__ import annotations

from collections.abc import Callable

from api.proto.registry_pb2 import NetworkServiceEndpoint
from sdk.registry.core import RegistryCursor, RegistryElement
from sdk.registry.pathids import registrant_id


class LocalEndpoints(RegistryElement[NetworkServiceEndpoint]):
    """See the module docstring."""

    def __init__(
        self, advertise_url: str, on_change: Callable[[str, str | None], None] | None = None
    ) -> None:
        self.advertise_url = advertise_url
        self._urls: dict[str, str] = {}
        self._ids: dict[str, str] = {}
        self.on_change = on_change  #: told (name, url) of every new URL, (name, None) of a loss

    def url(self, name: str) -> str | None:
        """The endpoint's own URL when it registered here, else None."""
        return self._urls.get(name)

    def spiffe_id(self, name: str) -> str:
        """The SPIFFE ID a local endpoint registered with ('' when none)."""
        return self._ids.get(name, "")

    def names(self) -> set[str]:
        return set(self._urls)

    def forget(self, name: str) -> None:
        """Drop a local endpoint (found dead)."""
        self._ids.pop(name, None)
        if self._urls.pop(name, None) is not None and self.on_change:
            self.on_change(name, None)

    async def register(
        self, record: NetworkServiceEndpoint, next: RegistryCursor[NetworkServiceEndpoint]
    ) -> NetworkServiceEndpoint:
        own_url = record.url
        if own_url == self.advertise_url:
            return await next.register(record)  # already rewritten (a refresh through us)
        forwarded = NetworkServiceEndpoint()
        forwarded.CopyFrom(record)
        forwarded.url = self.advertise_url
        stored = await next.register(forwarded)
        known = self._urls.get(record.name)
        self._urls[record.name] = own_url
        self._ids[record.name] = registrant_id(record)
        if self.on_change and known != own_url:
            self.on_change(record.name, own_url)
        reply = NetworkServiceEndpoint()
        reply.CopyFrom(stored)
        reply.url = own_url
        return reply

    async def unregister(
        self, record: NetworkServiceEndpoint, next: RegistryCursor[NetworkServiceEndpoint]
    ) -> None:
        self._urls.pop(record.name, None)
        self._ids.pop(record.name, None)
        forwarded = NetworkServiceEndpoint()
        forwarded.CopyFrom(record)
        forwarded.url = self.advertise_url
        await next.unregister(forwarded)
