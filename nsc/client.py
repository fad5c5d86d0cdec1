"""``VWireClient``: one connection to a network service, kept alive until closed.

Contract:

* :meth:`connect` requests the service through the node's nsmgr with a KERNEL mechanism for the
  given namespace and interface name, and returns the connection (addresses, MTU, path). A
  failure raises the fabric error (e.g. ``NotFound`` naming an unknown service) and leaves nothing.
* With ``keep`` (the default) the connection is then kept by the client chain's elements
  (:mod:`sdk.chains.client`): **refreshed** before this client's path segment expires (at a third
  of its lifetime) and **healed** — on control-plane loss (a refresh fails, or nsmgr's monitor
  stream says the connection is DOWN or deleted, or the stream breaks) it is re-requested with
  bounded exponential back-off; with ``probe``, on data-plane loss (``probe_failures`` liveness
  pings in a row to the endpoint's address fail) with ``RESELECT_REQUESTED``, so nsmgr picks
  another endpoint or forwarder. :meth:`run` waits until a heal is rejected as invalid (e.g. the
  client's namespace is gone) and raises that error, or until the connection is closed.
  ``on_change`` is called with every new version; ``heals`` counts successful heals.
* :meth:`close` closes it (idempotent) and stops keeping it.
* With ``exclude`` (one :class:`sdk.networkservice.excludedprefixes.ExcludePrefixes` shared by
  the clients of one namespace) its connection gets no address another of them uses.
* With ``resume`` (a connection another client of the same ``name`` made and left open, e.g.
  the pod's init container) :meth:`connect` refreshes that connection (same path and ids)
  instead of making a new one; ``probe_netns`` is where liveness pings are sent from when
  ``netns_url`` is not a path (``inode://``: the process's own namespace, None).
* With ``svids`` (this workload's SVID source) it signs its path segment for ``nsmgr_id`` (the
  SPIFFE ID of the node's nsmgr, required then): what an nsmgr with an SVID insists on.
"""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections.abc import Callable, Mapping

from api.mechanisms.kernel import KernelMechanism
from api.proto.connection_pb2 import Connection
from api.proto.networkservice_pb2 import NetworkServiceRequest
from nsc.probe import Pinger
from sdk.chain import CallContext
from sdk.chains.client import ClientChain, ClientOptions
from sdk.channels import ChannelPool
from sdk.networkservice.clientbegin import ConnectionEvents
from sdk.networkservice.excludedprefixes import ExcludePrefixes
from sdk.security.source import SvidSource


class VWireClient:
    """See the module docstring."""

    def __init__(
        self,
        *,
        name: str,
        nsmgr: str,
        pool: ChannelPool,
        netns_url: str,
        network_service: str,
        interface: str = "",
        labels: Mapping[str, str] | None = None,
        lifetime: float = 60.0,
        request_timeout: float = 15.0,
        keep: bool = True,
        probe: bool = True,
        probe_interval: float = 0.2,
        probe_failures: int = 3,
        on_change: Callable[[Connection], None] | None = None,
        svids: SvidSource | None = None,
        nsmgr_id: str = "",
        exclude: ExcludePrefixes | None = None,
        resume: Connection | None = None,
        probe_netns: str | None = "",
    ) -> None:
        self.name = name
        self.mechanism = KernelMechanism(netns_url, interface)
        self.network_service = network_service
        self.labels = dict(labels or {})
        self.request_timeout = request_timeout
        self.on_change = on_change
        self._pinger = Pinger(netns_url if probe_netns == "" else probe_netns)
        self.client = ClientChain(
            ClientOptions(
                name=name, nsmgr=nsmgr, pool=pool, lifetime=lifetime,
                request_timeout=request_timeout, svids=svids, nsmgr_id=nsmgr_id, keep=keep,
                probe=functools.partial(self._pinger.ping, wait=probe_interval) if probe else None,
                probe_interval=probe_interval, probe_failures=probe_failures, exclude=exclude,
            ),
            on_change=self._changed,
        )
        self.chain = self.client.chain
        self._id = resume.id if resume is not None and resume.id else str(uuid.uuid4())
        self._resume = resume

    def _changed(self, conn: Connection) -> None:
        if self.on_change is not None:
            self.on_change(conn)

    @property
    def _events(self) -> ConnectionEvents | None:
        return self.client.begin.connections.get(self._id)

    @property
    def connection(self) -> Connection | None:
        """The latest version of the connection (None before connect and after close)."""
        events = self._events
        return events.connection if events is not None else None

    @property
    def heals(self) -> int:
        """How many times the connection was healed."""
        events = self._events
        return events.heals if events is not None else 0

    async def connect(self) -> Connection:
        """Request the service (see the module docstring); when connected, refresh it."""
        events = self._events
        if events is not None:
            return await events.request()
        request = NetworkServiceRequest()
        if self._resume is not None:
            request.connection.CopyFrom(self._resume)
            request.connection.path.index = 0
            self._resume = None
        request.connection.id = self._id
        request.connection.network_service = self.network_service
        request.connection.labels.update(self.labels)
        request.mechanism_preferences.append(self.mechanism.to_proto())
        return await self.chain.run_request(
            request, CallContext.with_timeout(self.request_timeout)
        )

    def heal_now(self, reselect: bool = False) -> None:
        """Heal the connection at once (optionally choosing another endpoint)."""
        if self.client.heal is not None:
            self.client.heal.heal_now(self._id, reselect)

    async def passes_traffic(self, wait: float = 0.5) -> bool:
        """Whether every destination address of the connection answers a ping now."""
        conn = self.connection
        if conn is None:
            return False
        addresses = [prefix.split("/")[0] for prefix in conn.context.ip_context.dst_ip_addrs]
        return bool(addresses) and all(
            [await self._pinger.ping(address, wait) for address in addresses]
        )

    async def run(self) -> None:
        """Wait until the connection can no longer be kept (raising why) or is closed."""
        events = self._events
        if events is not None:
            await asyncio.shield(events.ended)  # a cancelled wait must not end the connection

    async def close(self) -> None:
        """Close the connection (idempotent)."""
        self._pinger.close()
        conn = self.connection
        if conn is None:
            return
        await self.chain.run_close(conn, CallContext.with_timeout(self.request_timeout))
