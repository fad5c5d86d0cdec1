"""The reference endpoint process.

Chain: :class:`sdk.chains.endpoint.EndpointChain` with ``Ipam → AcceptKernel`` (with an SVID
directory, every request must carry a valid signed path ending with this endpoint's SPIFFE ID,
which it registers in ``path_ids``; with a policy file, only the clients it allows). It serves
``networkservice.NetworkService`` (and monitoring) on its unix socket, registers itself with the
node's nsmgr for its services and labels (refreshed; the nsmgr rewrites the URL so other nodes
reach it through the nsmgr), registers each service it provides if the registry does not know it
yet (never overwriting a service an operator applied), and optionally runs a command while
serving. Its kernel answers pings on the addresses it hands out.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import socket
from pathlib import Path

import grpc
import structlog

from api.proto.connectioncontext_pb2 import DNSConfig
from api.proto.registry_pb2 import NetworkService, NetworkServiceEndpoint, NetworkServiceLabels
from nse.kernel import AcceptKernel
from nse.settings import NseSettings
from sdk.chains.endpoint import EndpointChain
from sdk.chains.server import ServerOptions, add_chain_services
from sdk.channels import ChannelPool
from sdk.errors import InvalidArgument
from sdk.grpcutil import parse_address, serve, stop
from sdk.ipam import PointToPointIpam
from sdk.limits import new_server
from sdk.networkservice.ipam import Ipam
from sdk.registry.client import RemoteRegistry
from sdk.registry.core import Query, RegistryChain
from sdk.registry.keepalive import KeepRegistered
from sdk.registry.kinds import ENDPOINT, SERVICE
from sdk.security.policy import load_policy
from sdk.security.source import FileSvidSource

_log = structlog.get_logger("nse")


def parse_labels(items: list[str]) -> dict[str, str]:
    """``["app=db", "tier=gold"]`` → a dict; InvalidArgument naming a malformed item."""
    labels = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidArgument("labels", f"{item!r}: use key=value")
        labels[key] = value
    return labels


class Endpoint:
    """One reference endpoint: build with settings, ``start()``, ``stop()``."""

    def __init__(self, config: NseSettings) -> None:
        if not config.services:
            raise InvalidArgument("services", "name at least one network service to provide")
        self.config = config
        self.name = config.name or f"nse-{socket.gethostname()}"
        self.labels = parse_labels(config.labels)
        self.listen = parse_address(
            config.listen or f"unix:///var/run/vwire/{self.name}.sock", "listen"
        )
        self.netns = config.netns or f"/proc/{os.getpid()}/ns/net"
        self.pool = ChannelPool()
        self.ipam = PointToPointIpam(config.cidr)
        dns = (
            [DNSConfig(dns_server_ips=config.dns_servers, search_domains=config.dns_search)]
            if config.dns_servers
            else []
        )
        self.svids = FileSvidSource(Path(config.svid_dir)) if config.svid_dir else None
        self.endpoint = EndpointChain(
            ServerOptions(self.name, "endpoint", self.svids),
            config.services,
            [Ipam(self.ipam, config.routes, dns), AcceptKernel(self.netns)],
            load_policy(config.policy or None),
        )
        self.chain = self.endpoint.chain
        self.monitor = self.endpoint.monitor
        nsmgr = self.pool.get(config.nsmgr)
        self.services: RegistryChain[NetworkService] = RegistryChain(
            [RemoteRegistry(SERVICE, nsmgr, self.svids)]
        )
        self.registration = KeepRegistered(
            RegistryChain([RemoteRegistry(ENDPOINT, nsmgr, self.svids)]), self.record,
            config.register_interval,
        )
        self._server: grpc.aio.Server | None = None
        self._command: asyncio.subprocess.Process | None = None

    def record(self) -> NetworkServiceEndpoint:
        """This endpoint's registration (without expiration: the registry's default applies)."""
        nse = NetworkServiceEndpoint(
            name=self.name, network_service_names=self.config.services, url=self.listen.url
        )
        for service in self.config.services:
            nse.network_service_labels[service].CopyFrom(NetworkServiceLabels(labels=self.labels))
        if self.svids is not None:
            nse.path_ids.append(str(self.svids.current().spiffe_id))
        return nse

    async def _ensure_services(self) -> None:
        for service in self.config.services:
            known = [e async for e in self.services.find(Query(NetworkService(name=service)))]
            if not known:
                await self.services.register(NetworkService(name=service, payload="IP"))

    async def start(self) -> None:
        server = new_server()
        await add_chain_services(server, self.chain, self.monitor)
        await serve(server, [self.listen], insecure_tcp=False)
        self._server = server
        try:
            await self._ensure_services()
            await self.registration.start()
        except BaseException:
            await self.stop()
            raise
        if self.config.command:
            self._command = await asyncio.create_subprocess_exec(*shlex.split(self.config.command))
        _log.info("endpoint serving", name=self.name, services=self.config.services,
                  labels=self.labels, prefixes=self.ipam.prefixes, url=self.listen.url)

    async def stop(self) -> None:
        await self.registration.stop()
        if self._command is not None and self._command.returncode is None:
            self._command.terminate()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._command.wait(), 3)
            if self._command.returncode is None:
                self._command.kill()
                await self._command.wait()
        self.monitor.end_all()
        await self.endpoint.timeout.stop()
        if self._server is not None:
            await stop(self._server, [self.listen], 1.0)
            self._server = None
        await self.pool.close()
        _log.info("endpoint stopped", name=self.name)

