"""The nsmgr process: assembles the node manager's chains and serves them on a unix socket and
on TCP.

NetworkService chain: :class:`sdk.chains.nsmgr.NodeManagerChain` (its docstring shows the
elements). With an SVID directory, TCP (other nodes, a remote registry) is mTLS, pooled channels
are renewed when the SVID rotates, and path tokens are required: every request must carry a valid
signed path (clients, forwarders and endpoints need SVIDs too), and this hop signs its own
segment for the next hop it chose. Registry chains (for local endpoints and forwarders, on the
unix socket only): :func:`sdk.registry.workloads.workload_chain` — ``LocalCallersOnly →
VerifyRegistrant → Validate → RecordPathIds(first hop) → [ReservedService(forwarder)] →
Ownership → [LocalForwarders] → AuthorizeRegistration → [LocalEndpoints] → RemoteRegistry``.
Also served: ``connection.MonitorConnection`` and gRPC health (``vwire.authorization`` says
whether a policy is enforced).

Liveness: every local forwarder and endpoint is watched through its gRPC connection
(:mod:`nsmgr.watchdog`). A dead forwarder is dropped and its connections are announced DOWN on
the monitor stream (clients heal by re-requesting); a dead endpoint is unregistered and its
connections are closed here, so the data plane they used is removed and clients reselect.
Losses on other nodes are followed through their nsmgrs' monitor streams
(:mod:`sdk.remotelosses`) and announced DOWN here, so clients heal at once.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import TypeVar

import grpc
import structlog
from grpc_health.v1.health_pb2 import HealthCheckResponse

from api.proto.connection_pb2 import Connection
from api.proto.registry_pb2 import NetworkService, NetworkServiceEndpoint
from nsmgr.endpoints import LocalEndpoints
from nsmgr.forwarders import FORWARDER_SERVICE, LocalForwarders
from nsmgr.settings import NsmgrSettings
from nsmgr.watchdog import PeerWatch
from sdk.chains.nsmgr import NodeManagerChain, NodeManagerParts
from sdk.chains.server import ServerOptions, add_chain_services
from sdk.channels import ChannelPool, insecure_factory
from sdk.errors import FabricError, InvalidArgument
from sdk.grpcutil import ListenAddress, parse_address, serve, stop
from sdk.limits import InFlightLimit, limited_server
from sdk.networkservice.monitor import Monitor
from sdk.registry.cache import FindCache
from sdk.registry.client import RemoteRegistry
from sdk.registry.core import RegistryChain, RegistryElement
from sdk.registry.kinds import ENDPOINT, SERVICE, RecordKind
from sdk.registry.replicas import Replicas
from sdk.registry.reserved import ReservedService
from sdk.registry.server import add_registry
from sdk.registry.togateway import ToGateway
from sdk.registry.validate import check_name
from sdk.registry.workloads import workload_chain
from sdk.remotelosses import RemoteLossWatch
from sdk.security.peertrust import PeerTrust
from sdk.security.policy import (
    AUTHORIZATION_HEALTH,
    enforcing,
    load_policy,
)
from sdk.security.source import FileSvidSource
from sdk.security.tls import SecureChannelFactory

_log = structlog.get_logger("nsmgr")
SERVING, NOT_SERVING = HealthCheckResponse.SERVING, HealthCheckResponse.NOT_SERVING


M = TypeVar("M", NetworkService, NetworkServiceEndpoint)


def registry_client(kind: RecordKind[M], channels: list[grpc.aio.Channel]) -> RegistryElement[M]:
    """The registry at one address, or its replicas at several (calls and watches fail over)."""
    if not channels:
        raise InvalidArgument("registry", "give the registry's address (or its replicas')")
    return RemoteRegistry(kind, channels[0]) if len(channels) == 1 else Replicas(kind, channels)


class Nsmgr:
    """One node manager: build with settings, ``start()``, ``stop()``."""

    def __init__(self, config: NsmgrSettings) -> None:
        if config.max_in_flight_per_peer < 1:
            raise InvalidArgument(
                "max_in_flight_per_peer",
                f"must be at least 1 (got {config.max_in_flight_per_peer}): how many calls one "
                "peer may have open at once",
            )
        self.config = config
        self.limit: InFlightLimit | None = None  # the server's, once started
        self.name = config.name or f"nsmgr-{socket.gethostname()}"
        self.addresses = [parse_address(url, "listen") for url in config.listen]
        if not self.addresses:
            raise InvalidArgument("listen", "give a unix:///path.sock and/or tcp://host:port")
        # What other nodes reach this one at: --advertise, else the first TCP listener once
        # bound; a node without either serves only itself (see start()).
        self.advertise = config.advertise
        self.svids = FileSvidSource(Path(config.svid_dir)) if config.svid_dir else None
        self.pool = ChannelPool(
            SecureChannelFactory(self.svids) if self.svids else insecure_factory
        )
        if self.svids is not None:
            self.svids.subscribe(lambda _material: self.pool.renew())
        check_name("domain", config.domain)
        registry_channels = [self.pool.get(a.strip()) for a in config.registry.split(",")
                             if a.strip()]
        gateway = self.pool.get(config.gateway) if config.gateway else None
        # Names of other domains go straight to the gateway, the domain's own lose the suffix.
        self.services_upstream: RegistryChain[NetworkService] = RegistryChain([
            ToGateway(config.domain, RemoteRegistry(SERVICE, gateway) if gateway else None),
            registry_client(SERVICE, registry_channels),
        ])
        self.endpoints_upstream: RegistryChain[NetworkServiceEndpoint] = RegistryChain([
            ToGateway(config.domain, RemoteRegistry(ENDPOINT, gateway) if gateway else None),
            registry_client(ENDPOINT, registry_channels),
        ])
        # What the node manager's chain looks up for each request (Discover, RouteToEndpoint):
        # the own domain's answers come from watches kept per query (sdk.registry.cache).
        self.service_finds, self.endpoint_finds = FindCache(SERVICE), FindCache(ENDPOINT)
        services_found: RegistryChain[NetworkService] = RegistryChain([
            ToGateway(config.domain, RemoteRegistry(SERVICE, gateway) if gateway else None),
            self.service_finds, registry_client(SERVICE, registry_channels),
        ])
        endpoints_found: RegistryChain[NetworkServiceEndpoint] = RegistryChain([
            ToGateway(config.domain, RemoteRegistry(ENDPOINT, gateway) if gateway else None),
            self.endpoint_finds, registry_client(ENDPOINT, registry_channels),
        ])
        self.forwarders = LocalForwarders(on_change=self._forwarder_changed)
        self.local_endpoints = LocalEndpoints(self.advertise, on_change=self._endpoint_changed)
        # One policy file: its requests rules authorize clients, its registrations rules
        # registrants (allow-all without a file, said loudly once).
        self.authorization = load_policy(config.policy or None)
        registrations = self.authorization
        self.services: RegistryChain[NetworkService] = workload_chain(
            SERVICE, registry_client(SERVICE, registry_channels), self.services_upstream,
            self.svids, registrations, trace=config.trace,
        )
        self.endpoints: RegistryChain[NetworkServiceEndpoint] = workload_chain(
            ENDPOINT, registry_client(ENDPOINT, registry_channels), self.endpoints_upstream,
            self.svids, registrations, trace=config.trace,
            reserved=[ReservedService(FORWARDER_SERVICE, "forwarder", self.svids)],
            kept=[self.forwarders], local=[self.local_endpoints],
        )
        self.monitor = Monitor()
        self.remote_losses = RemoteLossWatch(self.pool, self.monitor)
        self.node_manager = NodeManagerChain(
            ServerOptions(self.name, "nsmgr", self.svids, config.request_timeout,
                          self.monitor, config.trace),
            NodeManagerParts(
                pool=self.pool,
                forwarders=self.forwarders,
                local_endpoints=self.local_endpoints,
                services=services_found,
                endpoints=endpoints_found,
                authorization=self.authorization,
                select_policy=config.select_policy,
                token_lifetime=config.token_lifetime,
                on_remote=self.remote_losses.follow,
                domain=config.domain,
            ),
        )
        self.chain = self.node_manager.chain
        self.breaker = self.node_manager.breaker
        self.watch = PeerWatch(self.pool)
        self._server: grpc.aio.Server | None = None
        self.bound: list[ListenAddress] = []

    def _forwarder_changed(self, name: str, url: str | None) -> None:
        if url is not None:
            self.pool.forget(url)  # a restarted forwarder: no back-off left from its old socket
            self.watch.watch(f"forwarder/{name}", url, self._peer_died)
            return
        self.watch.unwatch(f"forwarder/{name}")  # unregistered or dead: its vWires are gone
        down = self.monitor.mark_down(lambda c: name in c.path_names)
        _log.warning("forwarder gone", forwarder=name, connections_down=len(down))

    def _endpoint_changed(self, name: str, url: str | None) -> None:
        if url is None:
            self.watch.unwatch(f"endpoint/{name}")
        else:
            self.pool.forget(url)  # as for forwarders: a restarted endpoint is reached at once
            self.watch.watch(f"endpoint/{name}", url, self._peer_died)

    def _peer_died(self, key: str) -> None:
        kind, _, name = key.partition("/")
        if kind == "forwarder":
            self.forwarders.remove(name)  # announces its connections DOWN (_forwarder_changed)
            return
        self.local_endpoints.forget(name)
        self.breaker.record_failure(name)
        affected = [
            kept.restore() for kept in self.monitor.connections.values() if kept.endpoint == name
        ]
        _log.warning("endpoint died", endpoint=name, connections=len(affected))
        for conn in affected:
            asyncio.get_running_loop().create_task(self._close_dead(conn))
        record = NetworkServiceEndpoint(name=name, url=self.advertise)
        asyncio.get_running_loop().create_task(self._unregister_dead(record))

    async def _close_dead(self, conn: Connection) -> None:
        try:
            await self.chain.run_close(conn)
        except FabricError as exc:
            _log.info("closing a connection of a dead endpoint failed", error=str(exc))

    async def _unregister_dead(self, record: NetworkServiceEndpoint) -> None:
        try:
            await self.endpoints_upstream.unregister(record)
        except FabricError as exc:
            _log.info("unregistering a dead endpoint failed", error=str(exc))

    async def start(self) -> None:
        # mTLS peers of federated trust domains are checked against their own trust domain.
        peers = PeerTrust(self.svids) if self.svids else None
        server, self.limit = limited_server(
            self.config.max_in_flight_per_peer, interceptors=[peers] if peers else []
        )
        health = await add_chain_services(server, self.chain, self.monitor)
        await health.set(AUTHORIZATION_HEALTH, SERVING if enforcing(self.authorization)
                         else NOT_SERVING)
        add_registry(server, self.services, self.endpoints)
        credentials = peers.credentials() if peers else None
        self.bound = await serve(server, self.addresses, self.config.insecure, credentials)
        self._server = server
        if not self.advertise:
            self.advertise = self._default_advertise()
        self.local_endpoints.advertise_url = self.advertise
        _log.info("nsmgr serving", name=self.name, advertise=self.advertise,
                  listen=[a.url for a in self.bound], registry=self.config.registry)

    def _default_advertise(self) -> str:
        """The first TCP listener; without one, the first unix socket: a single node, whose
        endpoints other nodes cannot reach (said in the log)."""
        tcp = [f"tcp://{a.target}" for a in self.bound if a.scheme == "tcp"]
        if tcp:
            return tcp[0]
        _log.warning(
            "single node: no TCP listener and no --advertise, so other nodes cannot reach this "
            "nsmgr nor the endpoints registered here; add --listen tcp://HOST:PORT (or "
            "--advertise URL) to join other nodes", name=self.name,
        )
        return self.bound[0].url

    async def stop(self, grace: float = 1.0) -> None:
        self.monitor.end_all()
        await self.watch.close()
        await self.remote_losses.close()
        await self.service_finds.close()
        await self.endpoint_finds.close()
        await self.node_manager.timeout.stop()
        if self._server is not None:
            await stop(self._server, self.bound, grace)
            self._server = None
        await self.pool.close()
        _log.info("nsmgr stopped", name=self.name)
