"""The external-host router: serves every external host the domain's registry asks for.

Contract of :class:`ExternalRouter`:

* :meth:`start` checks the settings (``public_address`` an IP, ``ports`` a range, the state
  directory usable), then watches the registry's NetworkService records and keeps one
  :class:`external.host.ServedHost` (a host reaching a service) or
  :class:`external.serve.ServedServer` (a host serving one) per valid request record
  (:mod:`sdk.external`): a new request
  is set up and its status record registered (``ready`` with the endpoint, key, addresses, MTU
  and DNS; or ``failed`` with the error's class, everything built undone); a deleted request is
  torn down (traffic stops), its key and port forgotten, and its status record removed last, so
  ``nsmctl external remove`` returns once the host is cut off. A request that does not parse is
  logged and ignored. Work on one host is serialised; hosts do not wait for each other.
* When the watch breaks (the registry restarted) it reconnects with back-off and reconciles:
  hosts whose request is gone are removed.
* It serves gRPC health on ``listen`` (a unix socket): SERVING while it follows the registry,
  NOT_SERVING before the first listing and while reconnecting.
* At start it deletes every namespace with its prefix (what a killed router left); hosts whose
  request was removed while it was down lose their key and port, and their status record, at the
  first listing.
* :meth:`stop` stops watching and tears every host down (their namespaces, vWires and status
  records) but keeps their keys and ports: a restarted router serves them again with the same
  configuration.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import socket
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from api.proto.registry_pb2 import NetworkService
from external.host import ServedHost, Serving
from external.router import Router
from external.serve import ServedServer
from external.settings import ExternalSettings
from external.state import HostState, parse_ports
from sdk.aio import cancel_all
from sdk.chain import CallContext
from sdk.channels import ChannelPool
from sdk.errors import FabricError, InvalidArgument
from sdk.external import (
    STATUS_PREFIX,
    ExternalHost,
    ExternalStatus,
    is_request,
    is_status,
    parse_request,
    status_name,
    status_record,
)
from sdk.grpcutil import ListenAddress, parse_address, serve
from sdk.grpcutil import stop as stop_server
from sdk.keyedlock import KeyedLock
from sdk.limits import new_server
from sdk.registry.client import RemoteRegistry
from sdk.registry.core import Query, RegistryChain
from sdk.registry.kinds import SERVICE
from sdk.security.source import FileSvidSource, SvidSource
from sdk.security.tls import SecureChannelFactory

log = structlog.get_logger("external")

MAX_BACKOFF = 5.0


def check_settings(config: ExternalSettings) -> None:
    """Raise InvalidArgument naming the first bad setting."""
    try:
        ipaddress.ip_address(config.public_address)
    except ValueError:
        raise InvalidArgument(
            "public_address", f"{config.public_address!r}: give the IP address external hosts "
            "dial (--public-address)") from None
    parse_ports(config.ports)
    if config.public_netns and not os.path.exists(config.public_netns):
        raise InvalidArgument("public_netns", f"{config.public_netns!r} does not exist: give a "
                              "namespace file such as /var/run/netns/NAME")
    if parse_address(config.listen, "listen").scheme != "unix":
        raise InvalidArgument("listen", "must be unix:///path.sock (it serves health only)")
    parse_address(config.registry, "registry")
    parse_address(config.nsmgr, "nsmgr")
    if not 1280 <= config.public_mtu <= 65535:
        raise InvalidArgument("public_mtu", f"must be 1280..65535 (got {config.public_mtu})")
    try:
        ipaddress.ip_network(config.serve_cidr)
    except ValueError:
        raise InvalidArgument("serve_cidr", f"{config.serve_cidr!r}: give one prefix such as "
                              "100.65.0.0/16") from None
    check_host_cidrs(config.host_cidrs, len(parse_ports(config.ports)))
    if config.svid_dir and not config.nsmgr_id:
        raise InvalidArgument("nsmgr_id", "signing requests needs the SPIFFE ID of the node's "
                              "nsmgr (--nsmgr-id spiffe://<trust-domain>/nsmgr/<node>)")


def check_host_cidrs(cidrs: list[str], hosts: int) -> None:
    """At most one prefix per IP version, each with a /30 for every port of the range."""
    versions = set()
    for cidr in cidrs:
        try:
            net = ipaddress.ip_network(cidr)
        except ValueError:
            raise InvalidArgument("host_cidrs", f"{cidr!r} is not a prefix") from None
        if net.version in versions or net.num_addresses < 4 * hosts:
            raise InvalidArgument("host_cidrs", f"{cidr}: give one IPv4 and/or one IPv6 prefix "
                                  f"with room for {hosts} hosts (4 addresses each)")
        versions.add(net.version)
    if not versions:
        raise InvalidArgument("host_cidrs", "give at least one prefix")


class ExternalRouter:
    """See the module docstring."""

    def __init__(self, config: ExternalSettings) -> None:
        check_settings(config)
        self.config = config
        self.state = HostState(Path(config.state_dir), parse_ports(config.ports))
        svids: SvidSource | None = (
            FileSvidSource(Path(config.svid_dir)) if config.svid_dir else None)
        self.pool = ChannelPool(SecureChannelFactory(svids)) if svids else ChannelPool()
        self.serving = Serving(
            public_address=config.public_address, public_mtu=config.public_mtu,
            public_netns=config.public_netns, nsmgr=config.nsmgr, pool=self.pool,
            client_name=config.name or f"external-{socket.gethostname()}",
            netns_prefix=config.netns_prefix, svids=svids, nsmgr_id=config.nsmgr_id,
            lifetime=config.lifetime, request_timeout=config.request_timeout,
            serve_cidr=config.serve_cidr, host_cidrs=tuple(config.host_cidrs),
            first_port=parse_ports(config.ports).start,
            socket_dir=Path(parse_address(config.listen, "listen").path).parent)
        self.hosts: dict[str, ServedHost | ServedServer] = {}
        self.failed: set[str] = set()
        self._locks = KeyedLock()
        self._watch: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._health = health.aio.HealthServicer()
        self._server: grpc.aio.Server | None = None
        self._bound: list[ListenAddress] = []

    @property
    def _registry(self) -> RegistryChain[NetworkService]:
        return RegistryChain([RemoteRegistry(SERVICE, self.pool.get(self.config.registry))])

    async def start(self) -> None:
        os.makedirs(self.config.state_dir, mode=0o700, exist_ok=True)
        await Router.sweep(self.config.netns_prefix)
        await self._health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        self._server = new_server()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        self._bound = await serve(self._server, [parse_address(self.config.listen)], False)
        self._watch = asyncio.create_task(self._watch_forever(), name="external-watch")
        log.info("external_router_started", registry=self.config.registry,
                 public_address=self.config.public_address, ports=self.config.ports)

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        await cancel_all(list(self._tasks))
        for name in list(self.hosts):
            await self._remove(name, forget=False)
        for name in list(self.failed):
            await self._unpublish(name)
        await self.pool.close()
        if self._server is not None:
            await stop_server(self._server, self._bound, 1.0)

    async def _watch_forever(self) -> None:
        backoff = 0.1
        while True:
            try:
                await self._follow()
            except (FabricError, grpc.aio.AioRpcError) as exc:
                log.warning("external_watch_broken", error=str(exc))
            await self._health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
            await asyncio.sleep(backoff)  # back-off before reconnecting to the registry
            backoff = min(backoff * 2, MAX_BACKOFF)

    async def _follow(self) -> None:
        listed = [event.record async for event in self._registry.find(
            Query(NetworkService()), CallContext.with_timeout(10.0))]
        wanted = {host.name for host in map(self._parse, filter(is_request, listed)) if host}
        for gone in (set(self.hosts) | self.failed) - wanted:  # removed while not watching
            await self._remove(gone, forget=True)
        for gone in self.state.names() - wanted - set(self.hosts):  # removed while we were down
            self.state.forget(gone)
        for record in filter(is_status, listed):  # statuses a killed router left behind
            name = record.name.removeprefix(STATUS_PREFIX)
            if name not in wanted and name not in self.hosts:
                with contextlib.suppress(InvalidArgument):
                    await self._unpublish(name)
        await self._health.set("", health_pb2.HealthCheckResponse.SERVING)
        async for event in self._registry.find(Query(NetworkService(), watch=True)):
            if not is_request(event.record):
                continue
            host = self._parse(event.record)
            if host is None:
                continue
            # One task per change: hosts do not wait for each other; the per-host lock (FIFO)
            # keeps one host's changes in order.
            self._spawn(self._remove(host.name, forget=True) if event.deleted
                        else self._serve(host))

    @staticmethod
    def _parse(record: NetworkService) -> ExternalHost | None:
        try:
            return parse_request(record)
        except InvalidArgument as exc:
            log.warning("external_request_ignored", record=record.name[:80], error=str(exc))
            return None

    async def _serve(self, host: ExternalHost) -> None:
        async with self._locks(host.name):
            current = self.hosts.get(host.name)
            if current is not None and current.host == host:
                return
            if current is not None:
                await self._remove_locked(host.name, forget=False)
            try:
                keys = self.state.load_or_create(host.name)
                served: ServedHost | ServedServer = (
                    ServedServer(host, keys, self.serving) if host.serve
                    else ServedHost(host, keys, self.serving, self._publish_later))
                status = await served.up()
            except Exception as exc:  # whatever it was, everything built was undone
                log.error("external_host_failed", name=host.name, service=host.service,
                          error=str(exc), exc_info=not isinstance(exc, FabricError))
                self.failed.add(host.name)
                code = type(exc).__name__ if isinstance(exc, FabricError) else "Internal"
                await self._publish(ExternalStatus(host.name, "failed", error=code))
                return
            self.failed.discard(host.name)
            self.hosts[host.name] = served
            await self._publish(status)

    async def _remove(self, name: str, *, forget: bool) -> None:
        async with self._locks(name):
            await self._remove_locked(name, forget=forget)

    async def _remove_locked(self, name: str, *, forget: bool) -> None:
        served = self.hosts.pop(name, None)
        if served is not None:
            await served.down()
        if forget:
            self.state.forget(name)
        self.failed.discard(name)
        await self._unpublish(name)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _publish_later(self, status: ExternalStatus) -> None:
        self._spawn(self._republish(status))

    async def _republish(self, status: ExternalStatus) -> None:
        """A served host's new status (after a heal), unless it was removed meanwhile."""
        async with self._locks(status.name):
            if status.name in self.hosts:
                await self._publish(status)

    async def _publish(self, status: ExternalStatus) -> None:
        try:
            await self._registry.register(status_record(status), CallContext.with_timeout(5.0))
        except FabricError as exc:
            log.error("external_status_not_published", name=status.name, error=str(exc))

    async def _unpublish(self, name: str) -> None:
        try:
            await self._registry.unregister(NetworkService(name=status_name(name)),
                                            CallContext.with_timeout(5.0))
        except FabricError as exc:
            log.info("external_status_not_removed", name=name, error=str(exc))
