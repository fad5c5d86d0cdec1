"""Settings of the gateway process (environment prefix ``VWIRE_GATEWAY_``)."""

from __future__ import annotations

from dataclasses import dataclass

from sdk.domains import DEFAULT_DOMAIN
from sdk.settings import setting

PREFIX = "VWIRE_GATEWAY_"


@dataclass(frozen=True)
class GatewaySettings:
    domain: str = setting(
        DEFAULT_DOMAIN, "this gateway's domain: requests and finds for NAME@DOMAIN are answered "
        "here from the domain registry"
    )
    name: str = setting("", "this gateway's name in connection paths (default: gateway-DOMAIN)")
    listen: list[str] = setting(
        ["tcp://0.0.0.0:5005"],
        "addresses to serve on: tcp://host:port (the domain's one exposed address, for other "
        "domains' gateways and this domain's nsmgrs) and/or unix:///path.sock",
    )
    advertise: str = setting(
        "", "URL other domains' gateways reach this one at (what its SRV record or their "
        "domains file says); default: the first TCP listener"
    )
    local_url: str = setting(
        "", "URL this domain's nsmgrs reach this gateway at (default: advertise)"
    )
    registry: str = setting("unix:///var/run/vwire/registry.sock", "this domain's registry")
    domains_file: str = setting(
        "", "YAML/JSON file mapping other domains to their gateways ('domains: {NAME: "
        "tcp://host:port}'), looked in before DNS"
    )
    dns_server: str = setting(
        "", "nameserver host[:port] for the SRV records _vwire-gateway._tcp.DOMAIN (default: the "
        "system's resolvers; 'off': the domains file only)"
    )
    floating: bool = setting(
        False, "a floating domain (registrations only, no nodes): other domains' gateways may "
        "register endpoints NAME@DOMAIN here, and requests for them go to those gateways"
    )
    insecure: bool = setting(False, "allow plain-text TCP (development only)")
    svid_dir: str = setting(
        "", "directory with svid.crt, svid.key and bundle.pem (nsmctl ca issue ... gateway/NAME): "
        "mTLS and path tokens"
    )
    token_lifetime: float = setting(60.0, "seconds this hop's path segment stays valid")
    request_timeout: float = setting(15.0, "deadline for a request that carries none, seconds")
    max_in_flight_per_peer: int = setting(
        256, "unary calls one peer may have open at once; more get RESOURCE_EXHAUSTED"
    )
    grace: float = setting(1.0, "seconds open calls get to finish on shutdown")
    metrics_listen: str = setting(
        "", "serve Prometheus metrics on host:port (/metrics); off when empty"
    )
    log_level: str = setting("info", "debug, info, warning or error")
    trace: bool = setting(False, "log every chain element's entry and exit (debug level)")
