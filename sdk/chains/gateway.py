"""A domain's gateway: its request relay (NetworkService) and its registry proxy chains.

The relay chain is the server prefix (:mod:`sdk.chains.server`, with the monitor) followed by::

    MarkDomain → SetExpiry → Switch(
        inbound, for an endpoint of this domain (``nse@own``, or published here), or from
        another gateway (signed paths: the previous segment's verified signer):
            RequireChosenEndpoint → EnterDomain → RouteToEndpoint(domain registry) → RefuseLoop
        outbound, for an endpoint of another domain (``nse@other``):
            RequireChosenEndpoint → RouteToEndpoint(that domain's gateway) → RefuseLoop
    ) → [SignPathSegment] → ForgetUnreachable → Connect

A request for another domain comes from an nsmgr of this domain (its forwarder handed it back and
the endpoint's registration, as this gateway answered it, carries this gateway's URL); it goes to
the gateway of the endpoint's domain, found by :mod:`sdk.domains` and addressed with the ID that
gateway put last in the record's ``path_ids``. A request for this domain (or for an endpoint this
gateway published in a floating domain; or any request from another gateway, known with signed
paths by the previous segment's verified signer) comes from another domain's gateway; it loses
the suffix and goes to the nsmgr the endpoint registered through. The endpoint is always chosen
already (by the client's nsmgr): the gateway relays, it does not choose. Mechanisms pass
unchanged, so the WireGuard tunnel runs node to node between the domains.

Registry chains, per record kind: ``ExportDomain → ImportDomain → ToDomains`` — a find for this
domain is answered from the domain registry with ``name@own`` names and this gateway's public URL;
a find for another domain is asked of that domain's gateway and answered with this gateway's URL
for its own domain; other domains may not write here, except in a floating domain (``floating``:
a domain of registrations only). A local endpoint registered as ``name@F`` is published in
floating domain F with this gateway's public URL, and requests for ``name@F`` from other domains
are then served here like requests for this domain (the inbound branch).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from api.proto.connection_pb2 import Connection
from api.proto.registry_pb2 import NetworkService, NetworkServiceEndpoint
from sdk.chains.server import ServerChain, ServerOptions
from sdk.channels import ChannelPool
from sdk.domains import DomainResolver, split
from sdk.networkservice.chosen import RequireChosenEndpoint
from sdk.networkservice.client import Connect
from sdk.networkservice.enterdomain import ANY_DOMAIN, EnterDomain
from sdk.networkservice.expiry import SetExpiry
from sdk.networkservice.forgetdead import ForgetUnreachable
from sdk.networkservice.markdomain import MarkDomain
from sdk.networkservice.monitor import Monitor
from sdk.networkservice.noloop import RefuseLoop
from sdk.networkservice.switch import Case, Switch
from sdk.networkservice.toendpoint import RouteToEndpoint
from sdk.networkservice.token import SignPathSegment
from sdk.registry.core import RegistryChain, RegistryElement
from sdk.registry.exportdomain import ExportDomain, is_gateway
from sdk.registry.importdomain import ImportDomain, Published
from sdk.registry.kinds import ENDPOINT, SERVICE
from sdk.registry.todomains import ToDomains
from sdk.remotelosses import RemoteLossWatch
from sdk.security.token import unverified_subject


@dataclass(frozen=True)
class GatewayParts:
    """What the gateway's chains use from its process."""

    domain: str  #: this gateway's domain
    pool: ChannelPool  #: channels to the domain registry, nsmgrs and other gateways
    resolver: DomainResolver  #: where other domains' gateways are
    registry_services: RegistryElement[NetworkService]  #: the domain registry (terminal)
    registry_endpoints: RegistryElement[NetworkServiceEndpoint]  #: the same, endpoints
    public_url: str = ""  #: where other domains reach this gateway (or :meth:`set_urls`)
    local_url: str = ""  #: where this domain's nsmgrs reach this gateway (or :meth:`set_urls`)
    token_lifetime: float = 60.0  #: seconds this hop's path segment stays valid
    floating: bool = False  #: a floating domain: other domains may register endpoints here
    #: told the trust domain of each gateway a found record leads to (url, trust domain)
    learn_trust: Callable[[str, str], None] | None = None


class _NoLocalEndpoints:
    """A gateway hosts no endpoints."""

    def url(self, name: str) -> str | None:
        return None

    def spiffe_id(self, name: str) -> str:
        return ""


class GatewayChain(ServerChain):
    """See the module docstring. ``losses`` follows the hops requests were relayed to (stop it
    with ``await chain.losses.close()``)."""

    def __init__(self, options: ServerOptions, parts: GatewayParts) -> None:
        if options.monitor is None:
            options = replace(options, monitor=Monitor())
        assert options.monitor is not None
        self.monitor: Monitor = options.monitor
        self.losses = RemoteLossWatch(parts.pool, self.monitor)
        own = parts.domain
        local_endpoints = RegistryChain([parts.registry_endpoints])
        other_domains = RegistryChain(
            [ToDomains(ENDPOINT, parts.resolver, parts.pool, parts.learn_trust)])
        nobody = _NoLocalEndpoints()
        self.urls: set[str] = set()  # this gateway's own addresses (set_urls)
        no_loop = RefuseLoop(lambda: self.urls)
        self.published = Published()  # this domain's endpoints published in floating domains
        inbound = Case(
            lambda conn: _endpoint_domain(conn) == own
            or self.published.has(conn.network_service_endpoint_name),
            [RequireChosenEndpoint(), EnterDomain(own, self.published.domains),
             RouteToEndpoint(nobody, local_endpoints, self.losses.follow), no_loop],
        )
        # With signed paths: whatever another gateway sends here is for this domain (a
        # publication this gateway forgot in a restart, too).
        from_gateway = Case(_from_a_gateway, [
            RequireChosenEndpoint(), EnterDomain(own, lambda: ANY_DOMAIN),
            RouteToEndpoint(nobody, local_endpoints, self.losses.follow), no_loop,
        ])
        outbound = [
            RequireChosenEndpoint(),
            RouteToEndpoint(nobody, other_domains, self.losses.follow),
            no_loop,
        ]
        sign = (
            [SignPathSegment(options.svids, lifetime=parts.token_lifetime)]
            if options.svids is not None else []
        )
        super().__init__(options, [
            MarkDomain(own),
            SetExpiry(parts.token_lifetime),
            Switch(inbound, from_gateway, default=outbound),
            *sign,
            ForgetUnreachable(parts.pool),
            Connect(parts.pool),
        ])
        self._exports = (
            ExportDomain(own, RegistryChain([parts.registry_services]), parts.public_url,
                         options.svids, parts.floating),
            ExportDomain(own, RegistryChain([parts.registry_endpoints]), parts.public_url,
                         options.svids, parts.floating),
        )
        self._imports = (
            ImportDomain[NetworkService](parts.local_url, options.svids, self.published,
                                         parts.public_url),
            ImportDomain[NetworkServiceEndpoint](parts.local_url, options.svids, self.published,
                                                 parts.public_url),
        )
        self.services: RegistryChain[NetworkService] = RegistryChain([
            self._exports[0], self._imports[0], ToDomains(SERVICE, parts.resolver, parts.pool),
        ], options.trace)
        self.endpoints: RegistryChain[NetworkServiceEndpoint] = RegistryChain([
            self._exports[1], self._imports[1],
            ToDomains(ENDPOINT, parts.resolver, parts.pool, parts.learn_trust),
        ], options.trace)

    def set_urls(self, public_url: str, local_url: str) -> None:
        """Where other domains and this domain reach the gateway, once its listeners are bound:
        the URLs records handed on carry."""
        for export in self._exports:
            export.public_url = public_url
        for imported in self._imports:
            imported.local_url = local_url
            imported.public_url = public_url
        self.urls = {public_url, local_url}


def _endpoint_domain(conn: Connection) -> str | None:
    return split(conn.network_service_endpoint_name)[1]


def _from_a_gateway(conn: Connection) -> bool:
    """Whether the previous hop (its token verified by ``VerifyPath`` in front) is a gateway: a
    gateway sends another domain's gateway requests for that domain only."""
    path = conn.path
    if not 0 < path.index < len(path.path_segments):
        return False
    subject = unverified_subject(path.path_segments[path.index - 1].token)
    return bool(subject) and is_gateway(subject)
