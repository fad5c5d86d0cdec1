"""One served host (an external server that clients of the domain request): its router
namespace, its proxy endpoint, and its status.

Contract of :class:`ServedServer`:

* :meth:`up` builds the router namespace with the WireGuard device (the server is its only peer;
  the server dials in, as a reaching host does) and a route to the server's tunnel address, then
  serves a **proxy endpoint** for the host's service on a unix socket beside the router's own
  (:class:`sdk.chains.endpoint.EndpointChain` with ``Ipam → AcceptIntoRouter``: each client's
  vWire is a point-to-point link from ``serve_cidr`` ending in the router namespace, and clients
  get a route to the server's address through it), registers the service if the registry does
  not know it, and keeps the endpoint registered through the node's nsmgr. It returns the status
  to publish: the server's address, ``serve_cidr`` as what the server routes back, the endpoint
  to dial. On any failure everything built is undone.
* :meth:`down` withdraws the registration first (no new clients), deletes the namespace (every
  client's traffic stops), then stops the endpoint; idempotent.
* The proxy endpoint authorizes every client the node's nsmgr let through (no policy of its own).
"""

from __future__ import annotations

import ipaddress

import grpc
import structlog

from api.proto.registry_pb2 import NetworkService, NetworkServiceEndpoint
from external.accept import AcceptIntoRouter
from external.host import VWIRE_INTERFACE, WIREGUARD_OVERHEAD, Serving, interface_name
from external.router import Router
from external.state import HostKeys
from sdk.chains.endpoint import EndpointChain
from sdk.chains.server import ServerOptions, add_chain_services
from sdk.external import ExternalHost, ExternalStatus
from sdk.grpcutil import ListenAddress, parse_address, serve, stop
from sdk.ipam import PointToPointIpam
from sdk.limits import new_server
from sdk.networkservice.ipam import Ipam
from sdk.registry.client import RemoteRegistry
from sdk.registry.core import Query, RegistryChain
from sdk.registry.keepalive import KeepRegistered
from sdk.registry.kinds import ENDPOINT, SERVICE
from sdk.security.policy import load_policy

log = structlog.get_logger("external.serve")

REGISTER_INTERVAL = 10.0


class ServedServer:
    """See the module docstring."""

    def __init__(self, host: ExternalHost, keys: HostKeys, serving: Serving) -> None:
        self.host = host
        self.keys = keys
        self.serving = serving
        netns = f"{serving.netns_prefix}{host.name}"
        self.router = Router(netns, interface_name(netns), VWIRE_INTERFACE,
                             public_netns=serving.public_netns)
        self.name = f"external-{host.name}"
        self.listen: ListenAddress = parse_address(
            f"unix://{serving.socket_dir / (self.name + '.sock')}", "listen")
        self.endpoint = EndpointChain(
            ServerOptions(self.name, "endpoint", serving.svids),
            [host.service],
            [Ipam(PointToPointIpam([serving.serve_cidr]), [host.address]),
             AcceptIntoRouter(self.router.netns_path)],
            load_policy(None),
        )
        nsmgr = serving.pool.get(serving.nsmgr)
        self.services: RegistryChain[NetworkService] = RegistryChain(
            [RemoteRegistry(SERVICE, nsmgr, serving.svids)])
        self.registration = KeepRegistered(
            RegistryChain([RemoteRegistry(ENDPOINT, nsmgr, serving.svids)]), self.record,
            REGISTER_INTERVAL)
        self._server: grpc.aio.Server | None = None

    def record(self) -> NetworkServiceEndpoint:
        """The proxy endpoint's registration."""
        nse = NetworkServiceEndpoint(name=self.name, network_service_names=[self.host.service],
                                     url=self.listen.url)
        if self.serving.svids is not None:
            nse.path_ids.append(str(self.serving.svids.current().spiffe_id))
        return nse

    def _mtu(self) -> int:
        version = ipaddress.ip_address(self.serving.public_address).version
        return self.serving.public_mtu - WIREGUARD_OVERHEAD[version]

    async def up(self) -> ExternalStatus:
        try:
            await self.router.create()
            await self.router.wireguard(self.keys.private_key, self.keys.port,
                                        self.host.public_key, self._mtu())
            await self.router.route_server(self.host.address)
            server = new_server()
            await add_chain_services(server, self.endpoint.chain, self.endpoint.monitor)
            await serve(server, [self.listen], insecure_tcp=False)
            self._server = server
            known = [e async for e in self.services.find(
                Query(NetworkService(name=self.host.service)))]
            if not known:
                await self.services.register(NetworkService(name=self.host.service,
                                                            payload="IP"))
            await self.registration.start()
        except BaseException:
            await self.down()
            raise
        log.info("external_server_up", name=self.host.name, service=self.host.service,
                 port=self.keys.port, backend=self.router.backend)
        return ExternalStatus(
            self.host.name, "ready", (self.serving.public_address, self.keys.port),
            self.keys.private_key.public_key(), (self.host.address,),
            (str(ipaddress.ip_network(self.serving.serve_cidr)),), self._mtu())

    async def down(self) -> None:
        await self.registration.stop()
        await self.router.delete()
        self.endpoint.monitor.end_all()
        await self.endpoint.timeout.stop()
        if self._server is not None:
            await stop(self._server, [self.listen], 1.0)
            self._server = None
        log.info("external_server_down", name=self.host.name)
