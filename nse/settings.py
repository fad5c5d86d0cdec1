"""Settings of the reference endpoint (environment prefix ``VWIRE_NSE_``)."""

from __future__ import annotations

from dataclasses import dataclass

from sdk.settings import setting

PREFIX = "VWIRE_NSE_"


@dataclass(frozen=True)
class NseSettings:
    name: str = setting("", "the endpoint's name in the registry (default: nse-<hostname>)")
    services: list[str] = setting(
        [], "network services it provides, comma-separated", flag="service"
    )
    labels: list[str] = setting(
        [], "labels for every service it provides: key=value,...", flag="label"
    )
    listen: str = setting("", "its unix socket (default: /var/run/vwire/<name>.sock)")
    nsmgr: str = setting("unix:///var/run/vwire/nsmgr.sock", "the node's nsmgr")
    netns: str = setting("", "its network namespace (default: the process's own)")
    cidr: list[str] = setting(
        ["169.254.0.0/16"], "prefixes to hand out, at most one IPv4 and one IPv6, comma-separated"
    )
    routes: list[str] = setting([], "extra prefixes clients route to this endpoint", flag="route")
    dns_servers: list[str] = setting([], "DNS servers given to clients", flag="dns-server")
    dns_search: list[str] = setting([], "DNS search domains given to clients")
    command: str = setting("", "a command to run while serving (e.g. 'iperf3 -s')")
    svid_dir: str = setting(
        "", "directory with svid.crt, svid.key and bundle.pem: requests must carry signed paths"
    )
    policy: str = setting(
        "", "authorization policy file: which clients may use its services (default: all)"
    )
    register_interval: float = setting(10.0, "seconds between registration refreshes")
    metrics_listen: str = setting(
        "", "serve Prometheus metrics on host:port (/metrics); off when empty"
    )
    log_level: str = setting("info", "debug, info, warning or error")
