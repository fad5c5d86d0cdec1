"""An in-process fabric of the sdk's chains, for testing chains and elements the way they run.

:class:`Sandbox` serves, on real ``grpc.aio`` servers over unix sockets in a temporary directory:
one domain registry (``Validate → Watch → Persist`` over a memory store, per record kind);
per node a node manager (:class:`sdk.chains.nsmgr.NodeManagerChain`) and a forwarder stand-in
(:class:`sdk.chains.server.ServerChain` with ``FollowRoute``, :class:`CrossConnect`, which
negotiates mechanisms as a forwarder does but touches no kernel, and ``FilterMechanisms``);
endpoints (:class:`sdk.chains.endpoint.EndpointChain` with the real point-to-point IPAM and
:class:`AcceptMechanism`, plus any elements of the test's own); and clients
(:class:`sdk.chains.client.ClientChain`). Nothing runs as root, nothing touches the kernel, no
process is started: a new chain (a gateway, an injected client) is tested by putting it between
these parts. Everything is stopped and removed on exit.

Each node's manager knows its forwarder and its endpoints through the sandbox (what the nsmgr
process learns from registrations); an endpoint is registered in the domain registry with its
node manager's URL, as the nsmgr process registers it. No SVIDs: paths are not signed.

Domains: a sandbox is one domain (``domain``, default :data:`sdk.domains.DEFAULT_DOMAIN`). Given
``gateway`` (the URL a gateway of this domain serves at, e.g. ``gateway/`` run in-process on a
socket under another sandbox's or the test's directory), its registry asks that gateway for
names of other domains, as the registry process does with ``--gateway``; two sandboxes with a
gateway each are two domains.
"""

from __future__ import annotations

import itertools
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

import grpc

from api.mechanisms import LOCAL, REMOTE, of_class
from api.proto.connection_pb2 import Connection, Mechanism
from api.proto.networkservice_pb2 import NetworkServiceRequest
from api.proto.registry_pb2 import NetworkService, NetworkServiceEndpoint
from sdk.chains.client import ClientChain, ClientOptions
from sdk.chains.endpoint import EndpointChain
from sdk.chains.nsmgr import NodeManagerChain, NodeManagerParts
from sdk.chains.server import ServerChain, ServerOptions, add_chain_services
from sdk.channels import ChannelPool
from sdk.domains import DEFAULT_DOMAIN
from sdk.errors import InvalidArgument, NotFound
from sdk.grpcutil import parse_address, serve, stop
from sdk.ipam import PointToPointIpam
from sdk.networkservice.client import Connect
from sdk.networkservice.clientbegin import ChangeFn
from sdk.networkservice.core import NetworkServiceElement, NSCursor
from sdk.networkservice.expiry import SetExpiry
from sdk.networkservice.ipam import Ipam
from sdk.networkservice.mechanisms import FilterMechanisms
from sdk.networkservice.route import FollowRoute
from sdk.registry.client import RemoteRegistry
from sdk.registry.core import RegistryChain
from sdk.registry.kinds import ENDPOINT, SERVICE
from sdk.registry.memory import MemoryStore
from sdk.registry.persist import Persist
from sdk.registry.server import add_registry
from sdk.registry.togateway import ToGateway
from sdk.registry.validate import Validate
from sdk.registry.watch import Watch
from sdk.security.policy import ALLOW_ALL, StaticPolicy

#: The mechanism a sandbox client asks for and a sandbox endpoint accepts.
KERNEL = Mechanism(cls=LOCAL, type="KERNEL", parameters={"inodeURL": "sandbox", "name": "nsm0"})
TUNNEL = Mechanism(cls=REMOTE, type="WIREGUARD")


class CrossConnect(NetworkServiceElement):
    """A forwarder's mechanism negotiation without a data plane: a request with a LOCAL
    preference (from a client) goes on offering LOCAL and REMOTE (``FilterMechanisms`` behind
    it keeps the one that fits where the route goes); one with only REMOTE preferences (from
    another node) goes on offering LOCAL to the endpoint. The reply carries the mechanism the
    caller offered."""

    async def request(self, request: NetworkServiceRequest, next: NSCursor) -> Connection:
        offered = list(request.mechanism_preferences)
        local = of_class(offered, LOCAL)
        remote = of_class(offered, REMOTE)
        if not local and not remote:
            raise InvalidArgument("mechanism_preferences", "offer LOCAL or REMOTE mechanisms")
        del request.mechanism_preferences[:]
        request.mechanism_preferences.extend([KERNEL, TUNNEL] if local else [KERNEL])
        reply = await next.request(request)
        reply.mechanism.CopyFrom(local[0] if local else remote[0])
        return reply


class AcceptMechanism(NetworkServiceElement):
    """Terminal of a sandbox endpoint: answers with its first mechanism preference."""

    async def request(self, request: NetworkServiceRequest, next: NSCursor) -> Connection:
        conn = Connection()
        conn.CopyFrom(request.connection)
        if request.mechanism_preferences:
            conn.mechanism.CopyFrom(request.mechanism_preferences[0])
        return conn

    async def close(self, conn: Connection, next: NSCursor) -> None:
        return None


@dataclass
class _Served:
    server: grpc.aio.Server
    url: str


@dataclass
class SandboxNode:
    """One node: its manager's URL and chain, its forwarder, its endpoints."""

    name: str
    nsmgr_url: str
    forwarder_url: str
    endpoints: dict[str, str] = field(default_factory=dict)  # name -> url
    manager: NodeManagerChain | None = None

    @property
    def forwarder(self) -> str:
        return f"forwarder-{self.name}"


class _Forwarders:
    """The node's one forwarder, as :class:`sdk.networkservice.forwarder.Forwarders`."""

    def __init__(self, node: SandboxNode) -> None:
        self.node = node

    def url(self, name: str) -> str | None:
        return self.node.forwarder_url if name == self.node.forwarder else None

    def spiffe_id(self, name: str) -> str:
        return ""

    def pick(self) -> tuple[str, str]:
        return self.node.forwarder, self.node.forwarder_url


class _LocalEndpoints:
    """The node's endpoints, as :class:`sdk.networkservice.toendpoint.LocalEndpoints`."""

    def __init__(self, node: SandboxNode) -> None:
        self.node = node

    def url(self, name: str) -> str | None:
        return self.node.endpoints.get(name)

    def spiffe_id(self, name: str) -> str:
        return ""


class Sandbox:
    """See the module docstring. Use as ``async with Sandbox() as sandbox:``."""

    def __init__(self, lifetime: float = 30.0, request_timeout: float = 5.0,
                 domain: str = DEFAULT_DOMAIN, gateway: str = "") -> None:
        self.domain = domain
        self.lifetime = lifetime
        self.request_timeout = request_timeout
        self.pool = ChannelPool()
        self.nodes: list[SandboxNode] = []
        self._dir = tempfile.TemporaryDirectory(prefix="vws-")
        self.root = Path(self._dir.name)
        self._served: list[_Served] = []
        self._clients: list[ClientChain] = []
        self._counter = itertools.count(1)
        to_gateway = self.pool.get(gateway) if gateway else None
        self.services: RegistryChain[NetworkService] = RegistryChain([
            ToGateway(domain, RemoteRegistry(SERVICE, to_gateway) if to_gateway else None),
            Validate(SERVICE), Watch(SERVICE), Persist(SERVICE, MemoryStore())])
        self.endpoints: RegistryChain[NetworkServiceEndpoint] = RegistryChain([
            ToGateway(domain, RemoteRegistry(ENDPOINT, to_gateway) if to_gateway else None),
            Validate(ENDPOINT), Watch(ENDPOINT), Persist(ENDPOINT, MemoryStore())])
        self.registry_url = f"unix://{self.root}/registry.sock"

    async def __aenter__(self) -> Self:
        server = grpc.aio.server()
        add_registry(server, self.services, self.endpoints)
        await self._serve(server, self.registry_url)
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        for client in self._clients:
            await client.stop()
        for node in self.nodes:
            if node.manager is not None:
                await node.manager.timeout.stop()
        for served in reversed(self._served):
            await stop(served.server, [parse_address(served.url)], 0.5)
        await self.pool.close()
        self._dir.cleanup()

    async def _serve(self, server: grpc.aio.Server, url: str) -> None:
        await serve(server, [parse_address(url)], insecure_tcp=False)
        self._served.append(_Served(server, url))

    async def node(self) -> SandboxNode:
        """A new node: its manager and its forwarder stand-in, serving."""
        name = f"n{len(self.nodes) + 1}"
        if self.domain != DEFAULT_DOMAIN:
            name = f"{self.domain}-{name}"  # distinct from other domains' nodes in paths
        node = SandboxNode(name, f"unix://{self.root}/nsmgr-{name}.sock",
                           f"unix://{self.root}/forwarder-{name}.sock")
        registry = self.pool.get(self.registry_url)
        node.manager = manager = NodeManagerChain(
            ServerOptions(f"nsmgr-{name}", "nsmgr", request_timeout=self.request_timeout),
            NodeManagerParts(
                pool=self.pool, forwarders=_Forwarders(node),
                local_endpoints=_LocalEndpoints(node),
                services=RegistryChain([RemoteRegistry(SERVICE, registry)]),
                endpoints=RegistryChain([RemoteRegistry(ENDPOINT, registry)]),
                authorization=StaticPolicy(ALLOW_ALL), token_lifetime=self.lifetime,
                domain=self.domain,
            ),
        )
        server = grpc.aio.server()
        await add_chain_services(server, manager.chain, manager.monitor)
        await self._serve(server, node.nsmgr_url)
        forwarder = ServerChain(ServerOptions(f"forwarder-{name}", "forwarder"), [
            SetExpiry(self.lifetime), FollowRoute(lambda: ""), CrossConnect(),
            FilterMechanisms(), Connect(self.pool),
        ])
        server = grpc.aio.server()
        await add_chain_services(server, forwarder.chain)
        await self._serve(server, node.forwarder_url)
        self.nodes.append(node)
        return node

    async def endpoint(
        self, node: SandboxNode, name: str, services: Sequence[str] = ("sandbox",),
        elements: Sequence[NetworkServiceElement] = (), cidr: Sequence[str] = ("10.80.0.0/16",),
    ) -> EndpointChain:
        """An endpoint on ``node`` providing ``services``: ``elements`` (the test's own) run
        after IPAM, in front of :class:`AcceptMechanism`. Registered with its node manager's
        URL, as the nsmgr process registers it."""
        endpoint = EndpointChain(ServerOptions(name, "endpoint"), services, [
            Ipam(PointToPointIpam(list(cidr)), [], []), *elements, AcceptMechanism(),
        ], StaticPolicy(ALLOW_ALL))
        url = f"unix://{self.root}/{name}.sock"
        server = grpc.aio.server()
        await add_chain_services(server, endpoint.chain, endpoint.monitor)
        await self._serve(server, url)
        node.endpoints[name] = url
        await self.endpoints.register(NetworkServiceEndpoint(
            name=name, network_service_names=list(services), url=node.nsmgr_url))
        return endpoint

    async def remove_endpoint(self, node: SandboxNode, name: str) -> None:
        """Stop serving endpoint ``name`` and unregister it (as when it dies)."""
        url = node.endpoints.pop(name, None)
        if url is None:
            raise NotFound(f"no endpoint {name!r} on {node.name}")
        served = next(s for s in self._served if s.url == url)
        self._served.remove(served)
        await stop(served.server, [parse_address(url)], 0.1)
        await self.endpoints.unregister(NetworkServiceEndpoint(name=name, url=node.nsmgr_url))

    def client(self, node: SandboxNode, name: str = "", keep: bool = False,
               on_change: ChangeFn | None = None) -> ClientChain:
        """A client chain of ``node`` (with ``keep``: refreshed and healed, no probe);
        ``on_change`` sees every new version of its connections."""
        client = ClientChain(ClientOptions(
            name=name or f"client-{next(self._counter)}", nsmgr=node.nsmgr_url, pool=self.pool,
            lifetime=self.lifetime, request_timeout=self.request_timeout, keep=keep,
        ), on_change)
        self._clients.append(client)
        return client


def request_for(service: str, conn_id: str) -> NetworkServiceRequest:
    """A client's first request for ``service`` with the sandbox's KERNEL mechanism."""
    request = NetworkServiceRequest()
    request.connection.id = conn_id
    request.connection.network_service = service
    request.mechanism_preferences.append(KERNEL)
    return request
