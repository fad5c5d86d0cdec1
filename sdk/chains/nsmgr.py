"""The node manager's NetworkService chain.

A request passes a node's manager twice: once on its way in (from a client of this node or from
another node) and once coming back from the forwarder it was handed to. The chain is the server
prefix (:mod:`sdk.chains.server`, with the monitor) followed by::

    SetExpiry → Switch(
        from this node's forwarder: CheckHandover → RouteToEndpoint → FilterMechanisms
        from a client of this node: EnterDomain → Authorize → Reselect → CheckNamedEndpoint
            → RebuildOnHeal → CountLoad → Retry → Discover → SelectEndpoint → SelectForwarder
            → HandOver
        from another node:          Authorize → RequireChosenEndpoint → RebuildOnHeal
            → CountLoad → SelectForwarder → HandOver
    ) → [SignPathSegment] → Connect

Only the client's own node manager chooses the endpoint (the client is the previous segment:
with signed paths, ``RequireRelays`` guarantees that every later segment is a relay's, so a
workload cannot pose as another node); a client naming its own domain (``db@own``) is served as
asking for ``db``, another domain's names are found through the gateway (the parts' registry
chains, see ``nsmgr``); every node authorizes the client named by the first
segment of the verified path. The parts it needs from the process — the node's forwarders and
endpoints as they registered, the registry, the pool of channels — come in
:class:`NodeManagerParts`; the handles the process needs back (monitor, timeout, load, handovers,
circuit breaker) are attributes of :class:`NodeManagerChain`.
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
from sdk.networkservice.handover import CheckHandover, HandOver, Handovers
from sdk.networkservice.load import CountLoad
from sdk.networkservice.mechanisms import FilterMechanisms
from sdk.networkservice.monitor import Monitor
from sdk.networkservice.named import CheckNamedEndpoint
from sdk.networkservice.rebuild import RebuildOnHeal
from sdk.networkservice.reselect import Reselect
from sdk.networkservice.retry import Retry
from sdk.networkservice.select import SelectEndpoint
from sdk.networkservice.switch import Case, Switch
from sdk.networkservice.toendpoint import LocalEndpoints, RouteToEndpoint
from sdk.networkservice.token import SignPathSegment
from sdk.networkservice.updatepath import previous_hop
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
        self.handovers = Handovers()
        forwarders = parts.forwarders
        policy = make_policy(parts.select_policy, self.load.load, self.breaker)
        authorize = Authorize(parts.authorization)
        handed_back = Case(
            lambda conn: previous_hop(conn) in forwarders.names(),
            [
                CheckHandover(self.handovers, forwarders),
                RouteToEndpoint(parts.local_endpoints, parts.endpoints, parts.on_remote),
                FilterMechanisms(),
            ],
        )
        from_client = Case(
            _from_client,
            [
                EnterDomain(parts.domain), authorize, Reselect(),
                CheckNamedEndpoint(parts.endpoints), RebuildOnHeal(),
                self.load, Retry(self.breaker, parts.attempts),
                Discover(parts.services, parts.endpoints), SelectEndpoint(policy),
                SelectForwarder(forwarders), HandOver(self.handovers),
            ],
        )
        from_node = [
            authorize, RequireChosenEndpoint(), RebuildOnHeal(), self.load,
            SelectForwarder(forwarders), HandOver(self.handovers),
        ]
        sign = (
            [SignPathSegment(options.svids, lifetime=parts.token_lifetime)]
            if options.svids is not None else []
        )
        super().__init__(options, [
            SetExpiry(parts.token_lifetime),
            Switch(handed_back, from_client, default=from_node),
            *sign,
            Connect(parts.pool),
        ])
        assert options.monitor is not None
        self.monitor: Monitor = options.monitor


def _from_client(conn: Connection) -> bool:
    """Whether this hop serves the client directly: its segment is the first or second."""
    return conn.path.index <= 1
