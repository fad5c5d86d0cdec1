"""``VWireClient``: one connection to a network service, kept alive until closed.

Contract:

* :meth:`connect` requests the service through the node's nsmgr with a KERNEL mechanism for the
  given namespace and interface name, and returns the connection (addresses, MTU, path). A
  failure raises the fabric error (e.g. ``NotFound`` naming an unknown service) and leaves nothing.
* :meth:`run` keeps it: it **refreshes** before this client's path segment expires (at a third of
  its lifetime); it **heals** — on control-plane loss (a refresh fails, or nsmgr's monitor stream
  says the connection is DOWN or deleted, or the stream breaks) it re-requests the same
  connection with bounded exponential back-off; on data-plane loss (``probe_failures`` liveness
  pings in a row to the endpoint's address fail) it asks for ``RESELECT_REQUESTED``, so nsmgr picks
  another endpoint or forwarder. A heal rejected as invalid (e.g. the client's namespace is gone)
  ends :meth:`run` with that error. ``on_change`` is called with every new version.
* :meth:`close` closes it (idempotent); cancelling :meth:`run` stops refreshing but does not close.
* With ``svids`` (this workload's SVID source) it signs its path segment for ``nsmgr_id`` (the
  SPIFFE ID of the node's nsmgr, required then): what an nsmgr with an SVID insists on. The
  segment then expires with the token (at the latest with the SVID), which drives the refresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable, Mapping

import grpc
import structlog

from api.mechanisms.kernel import KernelMechanism
from api.proto import connection_pb2_grpc
from api.proto.connection_pb2 import (
    DELETE,
    DOWN,
    RESELECT_REQUESTED,
    UP,
    Connection,
    MonitorScopeSelector,
    PathSegment,
)
from api.proto.networkservice_pb2 import NetworkServiceRequest
from nsc.probe import Pinger
from sdk.chain import CallContext
from sdk.channels import ChannelPool
from sdk.errors import FabricError, InvalidArgument
from sdk.networkservice.client import Connect
from sdk.networkservice.core import NetworkServiceChain
from sdk.networkservice.expiry import SetExpiry
from sdk.networkservice.token import SignPathSegment
from sdk.networkservice.updatepath import UpdatePath
from sdk.security.source import SvidSource
from sdk.select.backoff import delays

_log = structlog.get_logger("nsc")


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
        probe_interval: float = 0.2,
        probe_failures: int = 3,
        on_change: Callable[[Connection], None] | None = None,
        svids: SvidSource | None = None,
        nsmgr_id: str = "",
    ) -> None:
        if svids is not None and not nsmgr_id:
            raise InvalidArgument(
                "nsmgr_id", "signing path tokens needs the SPIFFE ID of the node's nsmgr "
                "(e.g. spiffe://<trust-domain>/nsmgr/<node>)"
            )
        self.name = name
        self.nsmgr = nsmgr
        self.pool = pool
        self.mechanism = KernelMechanism(netns_url, interface)
        self.network_service = network_service
        self.labels = dict(labels or {})
        self.lifetime = lifetime
        self.request_timeout = request_timeout
        self.probe_interval = probe_interval
        self.probe_failures = probe_failures
        self.on_change = on_change
        sign = [SignPathSegment(svids, nsmgr_id, lifetime)] if svids is not None else []
        self.chain = NetworkServiceChain(
            [UpdatePath(name), SetExpiry(lifetime), *sign, Connect(pool, nsmgr)]
        )
        self.connection: Connection | None = None
        self.heals = 0
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._reselect = False
        self._pinger = Pinger(netns_url)

    def _request(self, state: int = UP) -> NetworkServiceRequest:
        request = NetworkServiceRequest()
        if self.connection is not None:
            request.connection.CopyFrom(self.connection)
        else:
            request.connection.id = str(uuid.uuid4())
            request.connection.network_service = self.network_service
            request.connection.labels.update(self.labels)
        request.connection.state = state  # type: ignore[assignment]
        request.mechanism_preferences.append(self.mechanism.to_proto())
        return request

    async def _send(self, state: int = UP, heal: bool = False) -> Connection:
        async with self._lock:
            ctx = CallContext.with_timeout(self.request_timeout)
            conn = await self.chain.run_request(self._request(state), ctx)
            self.connection = conn
            self.heals += heal  # counted before on_change sees the healed version
        if self.on_change:
            self.on_change(conn)
        return conn

    async def connect(self) -> Connection:
        """Request the service (see the module docstring)."""
        return await self._send()

    def _own_segment(self) -> PathSegment | None:
        if self.connection is None or not self.connection.path.path_segments:
            return None
        return self.connection.path.path_segments[0]

    def _refresh_in(self) -> float:
        segment = self._own_segment()
        if segment is None or not segment.HasField("expires"):
            return self.lifetime / 3
        left = segment.expires.ToNanoseconds() / 1e9 - time.time()
        return max(0.0, left / 3)

    def heal_now(self, reselect: bool = False) -> None:
        """Ask :meth:`run` to re-request at once (optionally choosing another endpoint)."""
        self._reselect = self._reselect or reselect
        self._wake.set()

    async def _heal(self, reason: str) -> None:
        reselect, self._reselect = self._reselect, False
        _log.warning("healing", reason=reason, reselect=reselect)
        start = time.monotonic()
        for attempt, pause in enumerate(delays(1_000_000, 0.05, 0.4)):
            try:
                # DOWN asks nsmgr to rebuild the path (same endpoint if it still works);
                # RESELECT_REQUESTED also asks for another endpoint.
                await self._send(RESELECT_REQUESTED if reselect and attempt == 0 else DOWN,
                                 heal=True)
            except InvalidArgument:
                raise  # e.g. the namespace is gone: retrying cannot help, give up
            except FabricError as exc:
                _log.info("heal attempt failed", attempt=attempt + 1, error=str(exc))
                await asyncio.sleep(pause)  # back-off between attempts
                continue
            self._reselect, self._wake = False, asyncio.Event()  # losses seen meanwhile are healed
            _log.info("healed", seconds=round(time.monotonic() - start, 3))
            return

    async def _refresh_or_heal(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._refresh_in())
            woken, self._wake = self._wake.is_set(), asyncio.Event()
            if woken:
                await self._heal("control or data plane loss")
                continue
            try:
                await self._send()
            except FabricError as exc:
                _log.warning("refresh failed", error=str(exc))
                await self._heal("refresh failed")

    async def _watch_monitor(self) -> None:
        stub = connection_pb2_grpc.MonitorConnectionStub(self.pool.get(self.nsmgr))
        while True:
            segment = self._own_segment()
            selector = MonitorScopeSelector()
            if segment is not None:
                selector.path_segments.add(id=segment.id, name=segment.name)
            try:
                async for event in stub.MonitorConnections(selector):
                    if self.connection is None:
                        continue
                    mine = [c for c in event.connections.values()
                            if any(s.id == self.connection.id for s in c.path.path_segments)]
                    if any(c.state == DOWN for c in mine) or (event.type == DELETE and mine):
                        self.heal_now()
            except grpc.aio.AioRpcError as exc:
                _log.info("monitor stream ended", code=exc.code().name)
                self.heal_now()
            await asyncio.sleep(0.2)  # pause before subscribing again

    async def _probe(self) -> None:
        failures, heals = 0, self.heals
        while True:
            await asyncio.sleep(self.probe_interval)  # the probe period
            target = self._probe_target()
            if target is None or self._lock.locked():
                continue  # not connected, or a request is under way
            if heals != self.heals:
                failures, heals = 0, self.heals  # count only failures since the last heal
            if await self._pinger.ping(target, wait=self.probe_interval):
                failures = 0
                continue
            failures += 1
            if failures >= self.probe_failures:
                failures = 0
                self.heal_now(reselect=True)

    def _probe_target(self) -> str | None:
        if self.connection is None:
            return None
        for cidr in self.connection.context.ip_context.dst_ip_addrs:
            return cidr.split("/")[0]
        return None

    async def run(self, probe: bool = True) -> None:
        """Refresh and heal until cancelled (see the module docstring)."""
        tasks = [asyncio.create_task(self._refresh_or_heal()),
                 asyncio.create_task(self._watch_monitor())]
        if probe:
            tasks.append(asyncio.create_task(self._probe()))
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def close(self) -> None:
        """Close the connection (idempotent)."""
        self._pinger.close()
        async with self._lock:
            conn, self.connection = self.connection, None
            if conn is None:
                return
            await self.chain.run_close(conn, CallContext.with_timeout(self.request_timeout))
