"""The nsmgr process: assembles its chains and serves them on a unix socket and on TCP.

NetworkService chain: ``DefaultDeadline → [VerifyPath] → UpdatePath → Begin → Metadata → Timeout
→ Monitor → When(first hop, Authorize) → SetExpiry → Route → [SignPathSegment] → Connect``.
With an SVID directory, TCP (other nodes, a remote registry) is mTLS, pooled channels are renewed
when the SVID rotates, and path tokens are required: every request must carry a valid signed
path (clients, forwarders and endpoints need SVIDs too), and this hop signs its own segment for
the next hop Route chose. Registry chains (for local endpoints, forwarders and NSM clients):
``Validate → RecordPathIds → LocalForwarders → LocalEndpoints → RemoteRegistry`` for endpoints
(``RecordPathIds`` appends this nsmgr's SPIFFE ID, so registrants and other nodes learn it),
``Validate → RemoteRegistry`` for services. Also served: ``connection.MonitorConnection`` and
gRPC health.

Liveness: every local forwarder and endpoint is watched through its gRPC connection
(:mod:`nsmgr.watchdog`). A dead forwarder is dropped and its connections are announced DOWN on
the monitor stream (clients heal by re-requesting); a dead endpoint is unregistered and its
connections are closed here, so the data plane they used is removed and clients reselect.
Losses on other nodes are followed through their nsmgrs' monitor streams
(:mod:`nsmgr.upstream`) and announced DOWN here, so clients heal at once.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from api.proto.connection_pb2 import Connection
from api.proto.registry_pb2 import NetworkService, NetworkServiceEndpoint
from nsmgr.discover import EndpointChooser, make_policy
from nsmgr.endpoints import LocalEndpoints
from nsmgr.forwarders import LocalForwarders
from nsmgr.route import Route
from nsmgr.settings import NsmgrSettings
from nsmgr.upstream import RemoteLossWatch
from nsmgr.watchdog import PeerWatch
from sdk.channels import ChannelPool, insecure_factory
from sdk.errors import FabricError, InvalidArgument
from sdk.grpcutil import ListenAddress, parse_address, serve, stop
from sdk.limits import InFlightLimit, limited_server
from sdk.networkservice.authorize import Authorize
from sdk.networkservice.begin import Begin
from sdk.networkservice.client import Connect
from sdk.networkservice.core import NetworkServiceChain
from sdk.networkservice.deadline import DefaultDeadline
from sdk.networkservice.expiry import SetExpiry
from sdk.networkservice.metadata import Metadata
from sdk.networkservice.monitor import Monitor, add_monitor
from sdk.networkservice.server import add_network_service
from sdk.networkservice.timeout import Timeout
from sdk.networkservice.token import SignPathSegment, VerifyPath
from sdk.networkservice.updatepath import UpdatePath
from sdk.networkservice.when import When, first_hop
from sdk.registry.client import RemoteRegistry
from sdk.registry.core import RegistryChain
from sdk.registry.kinds import ENDPOINT, SERVICE
from sdk.registry.pathids import RecordPathIds
from sdk.registry.server import add_registry
from sdk.registry.validate import Validate
from sdk.security.policy import load_policy
from sdk.security.source import FileSvidSource
from sdk.security.tls import SecureChannelFactory, server_credentials
from sdk.select.breaker import CircuitBreaker

_log = structlog.get_logger("nsmgr")


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
        if not config.advertise and not any(a.scheme == "tcp" for a in self.addresses):
            raise InvalidArgument(
                "advertise", "give a TCP listener or an advertised URL for other nodes to use"
            )
        self.advertise = config.advertise  # else the first TCP listener, once bound
        self.svids = FileSvidSource(Path(config.svid_dir)) if config.svid_dir else None
        self.pool = ChannelPool(
            SecureChannelFactory(self.svids) if self.svids else insecure_factory
        )
        if self.svids is not None:
            self.svids.subscribe(lambda _material: self.pool.renew())
        registry_channel = self.pool.get(config.registry)
        self.services_upstream: RegistryChain[NetworkService] = RegistryChain(
            [RemoteRegistry(SERVICE, registry_channel)]
        )
        self.endpoints_upstream: RegistryChain[NetworkServiceEndpoint] = RegistryChain(
            [RemoteRegistry(ENDPOINT, registry_channel)]
        )
        self.forwarders = LocalForwarders()
        self.local_endpoints = LocalEndpoints(self.advertise)
        self.services: RegistryChain[NetworkService] = RegistryChain(
            [Validate(SERVICE), RemoteRegistry(SERVICE, registry_channel)], config.trace
        )
        self.endpoints: RegistryChain[NetworkServiceEndpoint] = RegistryChain(
            [
                Validate(ENDPOINT),
                RecordPathIds(self.svids),
                self.forwarders,
                self.local_endpoints,
                RemoteRegistry(ENDPOINT, registry_channel),
            ],
            config.trace,
        )
        self.breaker = CircuitBreaker()
        self.route = Route(
            EndpointChooser(
                self.services_upstream,
                self.endpoints_upstream,
                make_policy(config.select_policy, lambda n: self.route.load.get(n, 0),
                            self.breaker),
                self.breaker,
            ),
            self.endpoints_upstream,
            self.local_endpoints,
            self.forwarders,
        )
        self.monitor = Monitor()
        self.timeout = Timeout()
        verify = [VerifyPath(self.svids)] if self.svids else []
        sign = [SignPathSegment(self.svids, lifetime=config.token_lifetime)] if self.svids else []
        self.chain = NetworkServiceChain(
            [
                DefaultDeadline(config.request_timeout),
                *verify,
                UpdatePath(self.name),
                Begin(),
                Metadata(),
                self.timeout,
                self.monitor,
                When(first_hop, Authorize(load_policy(config.policy or None))),
                SetExpiry(config.token_lifetime),
                self.route,
                *sign,
                Connect(self.pool),
            ],
            trace=config.trace,
        )
        self.timeout.bind(self.chain.run_close)
        self.watch = PeerWatch(self.pool)
        self.remote_losses = RemoteLossWatch(self.pool, self.monitor)
        self.route.on_remote = self.remote_losses.follow
        self.forwarders.on_change = self._forwarder_changed
        self.local_endpoints.on_change = self._endpoint_changed
        self._server: grpc.aio.Server | None = None
        self.bound: list[ListenAddress] = []

    def _forwarder_changed(self, name: str, url: str | None) -> None:
        if url is not None:
            self.pool.forget(url)  # a restarted forwarder: no back-off left from its old socket
            self.watch.watch(f"forwarder/{name}", url, self._peer_died)
            return
        self.watch.unwatch(f"forwarder/{name}")  # unregistered or dead: its vWires are gone
        down = self.monitor.mark_down(lambda c: any(s.name == name for s in c.path.path_segments))
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
            c for c in self.monitor.connections.values()
            if c.network_service_endpoint_name == name
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
        server, self.limit = limited_server(self.config.max_in_flight_per_peer)
        add_network_service(server, self.chain)
        add_monitor(server, self.monitor)
        add_registry(server, self.services, self.endpoints)
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        credentials = server_credentials(self.svids) if self.svids else None
        self.bound = await serve(server, self.addresses, self.config.insecure, credentials)
        self._server = server
        if not self.advertise:
            self.advertise = next(f"tcp://{a.target}" for a in self.bound if a.scheme == "tcp")
        self.local_endpoints.advertise_url = self.advertise
        _log.info("nsmgr serving", name=self.name, advertise=self.advertise,
                  listen=[a.url for a in self.bound], registry=self.config.registry)

    async def stop(self, grace: float = 1.0) -> None:
        self.monitor.end_all()
        await self.watch.close()
        await self.remote_losses.close()
        await self.timeout.stop()
        if self._server is not None:
            await stop(self._server, self.bound, grace)
            self._server = None
        await self.pool.close()
        _log.info("nsmgr stopped", name=self.name)
