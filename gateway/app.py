"""The gateway process: assembles a domain's gateway chains and serves them.

A domain's one exposed address (NSM's nsmgr-proxy and registry proxy in one). Chains:
:class:`sdk.chains.gateway.GatewayChain` (its docstring shows the elements): the request relay
(``networkservice.NetworkService`` and ``connection.MonitorConnection``) and the registry proxy
(NSM's two registry services). Other domains' gateways are found in ``--domains-file`` first,
then by DNS SRV (``_vwire-gateway._tcp.<domain>``, :mod:`sdk.domains`). With an SVID directory
(an SVID of kind ``gateway``: ``nsmctl ca issue ... gateway/NAME``) every TCP call is mTLS and
requests must carry a signed path; this gateway signs its own segment for the next hop. Other
domains may be other trust domains: their bundles are federated into the SVID directory
(``nsmctl ca federate``), a caller is checked against its own trust domain's roots
(:class:`sdk.security.peertrust.PeerTrust`) and another domain's gateway against the trust
domain the domains file names for it.

Settings (:class:`gateway.settings.GatewaySettings`, ``VWIRE_GATEWAY_*``): ``domain`` (default
``local``), ``listen`` (default ``tcp://0.0.0.0:5005``), ``advertise`` (the URL other domains
use; default the first TCP listener), ``local_url`` (the URL this domain's nsmgrs use; default
``advertise``), ``registry`` (this domain's registry), ``domains_file``, ``dns_server``
(``off`` = the domains file only), ``floating`` (a domain of registrations only: other domains'
gateways publish endpoints here), ``svid_dir``/``insecure``, ``token_lifetime``,
``request_timeout``. This domain's registry and nsmgrs are pointed at it with their
``--domain`` and ``--gateway``; docs/interdomain.md runs two domains and a floating one.
"""

from __future__ import annotations

from pathlib import Path

import grpc
import structlog

from gateway.settings import GatewaySettings
from sdk.chains.gateway import GatewayChain, GatewayParts
from sdk.chains.server import ServerOptions, add_chain_services
from sdk.channels import ChannelPool, insecure_factory
from sdk.domains import Domain, DomainResolver, Domains, SrvDomains, StaticDomains
from sdk.errors import InvalidArgument
from sdk.grpcutil import ListenAddress, parse_address, serve, stop
from sdk.limits import InFlightLimit, limited_server
from sdk.registry.client import RemoteRegistry
from sdk.registry.kinds import ENDPOINT, SERVICE
from sdk.registry.server import add_registry
from sdk.registry.validate import check_name
from sdk.security.peertrust import PeerTrust
from sdk.security.source import FileSvidSource
from sdk.security.tls import SecureChannelFactory

_log = structlog.get_logger("gateway")


def resolver(config: GatewaySettings) -> Domains:
    """The domains file (when given), then DNS SRV (unless ``dns_server`` is ``off``)."""
    static = StaticDomains(config.domains_file) if config.domains_file else None
    srv = None if config.dns_server == "off" else SrvDomains(config.dns_server)
    return Domains(static, srv)


class TrustDomains:
    """A resolver that remembers the trust domain of each gateway it resolved, so the channel
    to that gateway checks the server against that trust domain's roots (the domains file's
    ``trust_domain``; none: the local trust domain)."""

    def __init__(self, resolver: DomainResolver) -> None:
        self.resolver = resolver
        self._by_url: dict[str, str] = {}

    async def resolve(self, domain: str) -> Domain:
        found = await self.resolver.resolve(domain)
        if found.trust_domain:
            self._by_url[found.gateway] = found.trust_domain
        return found

    def learn(self, url: str, trust_domain: str) -> None:
        """A found record leads to ``url`` of ``trust_domain`` (a floating domain's records
        lead to the publishing domain's gateway); the domains file's word stays."""
        self._by_url.setdefault(url, trust_domain)

    def of(self, address: ListenAddress) -> str | None:
        return self._by_url.get(address.url)


def _unspecified(url: str) -> bool:
    address = parse_address(url)
    return address.scheme == "tcp" and address.host in ("0.0.0.0", "::", "")


class Gateway:
    """One gateway: build with settings, ``start()``, ``stop()``."""

    def __init__(self, config: GatewaySettings) -> None:
        check_name("domain", config.domain)
        if config.max_in_flight_per_peer < 1:
            raise InvalidArgument("max_in_flight_per_peer", "must be at least 1")
        self.config = config
        self.name = config.name or f"gateway-{config.domain}"
        self.addresses = [parse_address(url, "listen") for url in config.listen]
        if not self.addresses:
            raise InvalidArgument("listen", "give tcp://host:port (and/or unix:///path.sock)")
        if config.advertise:
            parse_address(config.advertise, "advertise")
        if config.local_url:
            parse_address(config.local_url, "local_url")
        self.svids = FileSvidSource(Path(config.svid_dir)) if config.svid_dir else None
        self.domains = TrustDomains(resolver(config))
        self.pool = ChannelPool(
            SecureChannelFactory(self.svids, trust_domain_of=self.domains.of)
            if self.svids else insecure_factory
        )
        if self.svids is not None:
            self.svids.subscribe(lambda _material: self.pool.renew())
        registry = self.pool.get(config.registry)
        self.gateway = GatewayChain(
            ServerOptions(self.name, "gateway", self.svids, config.request_timeout,
                          trace=config.trace),
            GatewayParts(
                domain=config.domain, pool=self.pool, resolver=self.domains,
                registry_services=RemoteRegistry(SERVICE, registry),
                registry_endpoints=RemoteRegistry(ENDPOINT, registry),
                token_lifetime=config.token_lifetime, floating=config.floating,
                learn_trust=self.domains.learn,
            ),
        )
        self.chain = self.gateway.chain
        self.limit: InFlightLimit | None = None
        self.bound: list[ListenAddress] = []
        self.advertise = config.advertise
        self._server: grpc.aio.Server | None = None

    async def start(self) -> None:
        # Callers of federated trust domains (other domains' gateways) are checked against
        # their own trust domain's roots.
        peers = PeerTrust(self.svids) if self.svids else None
        server, self.limit = limited_server(
            self.config.max_in_flight_per_peer, interceptors=[peers] if peers else []
        )
        await add_chain_services(server, self.chain, self.gateway.monitor)
        add_registry(server, self.gateway.services, self.gateway.endpoints)
        credentials = peers.credentials() if peers else None
        self.bound = await serve(server, self.addresses, self.config.insecure, credentials)
        self._server = server
        if not self.advertise:
            tcp = [f"tcp://{a.target}" for a in self.bound if a.scheme == "tcp"]
            self.advertise = tcp[0] if tcp else self.bound[0].url
        self.local_url = self.config.local_url or self.advertise
        if _unspecified(self.advertise):
            _log.warning(
                "the gateway advertises an unspecified address, which no other domain can "
                "reach: set --advertise tcp://PUBLIC-HOST:PORT (and --local-url for this "
                "domain's nsmgrs)", advertise=self.advertise)
        self.gateway.set_urls(self.advertise, self.local_url)
        _log.info("gateway serving", name=self.name, domain=self.config.domain,
                  advertise=self.advertise, local_url=self.local_url,
                  listen=[a.url for a in self.bound], registry=self.config.registry)

    async def stop(self, grace: float = 1.0) -> None:
        assert self.gateway.monitor is not None
        self.gateway.monitor.end_all()
        await self.gateway.losses.close()
        await self.gateway.timeout.stop()
        if self._server is not None:
            await stop(self._server, self.bound, grace)
            self._server = None
        await self.pool.close()
        _log.info("gateway stopped", name=self.name)
