"""The node manager's NetworkService chain.

A request passes a node's manager once, on its way in (from a client of this node or from another
node); the manager chooses where it goes and hands it, with that route, to one of its forwarders,
which dials the route itself (:mod:`sdk.networkservice.route`). The chain is the server prefix
(:mod:`sdk.chains.server`, with the monitor) followed by::

    SetExpiry → Switch(
        from a client of this node: EnterDomain → Authorize → Reselect → CheckNamedEndpoint
            → RebuildOnHeal → CountLoad → Retry → Discover → SelectEndpoint
        from another node:          Authorize → RequireChosenEndpoint → RebuildOnHeal
            → CountLoad
    ) → RouteToEndpoint → HandRoute → SelectForwarder → [SignPathSegment] → Connect

Only the client's own node manager chooses the endpoint (the client is the previous segment:
with signed paths, ``RequireRelays`` guarantees that every later segment is a relay's, so a
workload cannot pose as another node); a client naming its own domain (``db@own``) is served as
asking for ``db``, another domain's names are found through the gateway (the parts' registry
chains, see ``nsmgr``); every node authorizes the client named by the first
segment of the verified path. The route is the endpoint's own socket when it registered on this
node, else the nsmgr of its node (or the gateway, for another domain); this hop's path token binds
it, so the forwarder goes nowhere else. The parts it needs from the process — the node's
forwarders and endpoints as they registered, the registry, the pool of channels — come in
:class:`NodeManagerParts`; the handles the process needs back (monitor, timeout, load, circuit
breaker) are attributes of :class:`NodeManagerChain`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from api.proto.connection_pb2 import Connection
from api.proto.registry_pb2 import NetworkService, NetworkServiceEndpoint
from sdk.chains.server import ServerChain, ServerOptions
from sdk.channels import ChannelPool
from sdk.domains import DEFAULT_DOMAIN
from sdk.networkservice.authorize import Authorize
from sdk.networkservice.chosen import RequireChosenEndpoint
from sdk.networkservice.client import Connect
from sdk.networkservice.discover import Discover
from sdk.networkservice.enterdomain import EnterDomain
from sdk.networkservice.expiry import SetExpiry
from sdk.networkservice.forwarder import Forwarders, SelectForwarder
from sdk.networkservice.load import CountLoad
from sdk.networkservice.monitor import Monitor
from sdk.networkservice.named import CheckNamedEndpoint
from sdk.networkservice.rebuild import RebuildOnHeal
from sdk.networkservice.reselect import Reselect
from sdk.networkservice.retry import Retry
from sdk.networkservice.route import HandRoute
from sdk.networkservice.select import SelectEndpoint
from sdk.networkservice.switch import Case, Switch
from sdk.networkservice.toendpoint import LocalEndpoints, RouteToEndpoint
from sdk.networkservice.token import SignPathSegment
from sdk.registry.core import RegistryChain
from sdk.security.policy import PolicySource
from sdk.select.breaker import CircuitBreaker
from sdk.select.policy import make_policy


@dataclass(frozen=True)
class NodeManagerParts:
    """What the node manager's chain uses from its process."""

    pool: ChannelPool  #: channels to forwarders, endpoints and other nodes
    forwarders: Forwarders  #: this node's forwarders
    local_endpoints: LocalEndpoints  #: the endpoints registered on this node
    services: RegistryChain[NetworkService]  #: the domain registry's services
    endpoints: RegistryChain[NetworkServiceEndpoint]  #: the domain registry's endpoints
    authorization: PolicySource  #: which clients may request which services
    select_policy: str = "round-robin"  #: one of sdk.select.policy.POLICIES
    token_lifetime: float = 60.0  #: seconds this hop's path segment stays valid
    attempts: int = 3  #: endpoints tried per request
    on_remote: Callable[[str], None] | None = None  #: told of every other node's nsmgr used
    domain: str = DEFAULT_DOMAIN  #: this node's domain: ``name@domain`` is a local name


class NodeManagerChain(ServerChain):
    """See the module docstring."""

    def __init__(self, options: ServerOptions, parts: NodeManagerParts) -> None:
        if options.monitor is None:
            options = replace(options, monitor=Monitor())
        self.breaker = CircuitBreaker()
        self.load = CountLoad()
        policy = make_policy(parts.select_policy, self.load.load, self.breaker)
        authorize = Authorize(parts.authorization)
        from_client = Case(
            _from_client,
            [
                EnterDomain(parts.domain), authorize, Reselect(),
                CheckNamedEndpoint(parts.endpoints), RebuildOnHeal(),
                self.load, Retry(self.breaker, parts.attempts),
                Discover(parts.services, parts.endpoints), SelectEndpoint(policy),
            ],
        )
        from_node = [authorize, RequireChosenEndpoint(), RebuildOnHeal(), self.load]
        sign = (
            [SignPathSegment(options.svids, lifetime=parts.token_lifetime)]
            if options.svids is not None else []
        )
        super().__init__(options, [
            SetExpiry(parts.token_lifetime),
            Switch(from_client, default=from_node),
            RouteToEndpoint(parts.local_endpoints, parts.endpoints, parts.on_remote),
            HandRoute(),
            SelectForwarder(parts.forwarders),
            *sign,
            Connect(parts.pool),
        ])
        assert options.monitor is not None
        self.monitor: Monitor = options.monitor


def _from_client(conn: Connection) -> bool:
    """Whether this hop serves the client directly: its segment is the first or second."""
    return conn.path.index <= 1
