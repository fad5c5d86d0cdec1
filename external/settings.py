"""Settings of the external-host router (environment prefix ``VWIRE_EXTERNAL_``)."""

from __future__ import annotations

from dataclasses import dataclass

from sdk.settings import setting

PREFIX = "VWIRE_EXTERNAL_"


@dataclass(frozen=True)
class ExternalSettings:
    listen: str = setting(
        "unix:///var/run/vwire/external.sock",
        "unix socket serving gRPC health: SERVING once the registry's requests are followed",
    )
    public_address: str = setting(
        "", "the IP address external hosts dial (this node's public or NAT address); required"
    )
    public_netns: str = setting(
        "", "network namespace file whose addresses external hosts reach (default: our own)"
    )
    ports: str = setting("51900-51999", "UDP ports for external hosts' WireGuard: FIRST-LAST")
    public_mtu: int = setting(1500, "MTU of the path external hosts come in on")
    host_cidrs: list[str] = setting(
        ["100.66.0.0/16", "fd00:66::/64"], "stable addresses of reaching hosts and their service "
        "(a /30 per host, NATed onto the vWire's): one IPv4 and/or one IPv6 prefix, comma-separated"
    )
    serve_cidr: str = setting(
        "100.65.0.0/16", "addresses of the vWires to served hosts (external servers): one prefix"
    )
    registry: str = setting("unix:///var/run/vwire/registry.sock",
                            "the domain's registry: where external hosts are requested")
    nsmgr: str = setting("unix:///var/run/vwire/nsmgr.sock", "this node's nsmgr")
    name: str = setting("", "client name in the vWires' paths (default: external-<hostname>)")
    netns_prefix: str = setting("vwx-", "name prefix of the router namespaces (one per host)")
    state_dir: str = setting(
        "/var/lib/vwire/external", "where the fabric side's WireGuard keys and ports are kept"
    )
    svid_dir: str = setting(
        "", "directory with svid.crt, svid.key and bundle.pem: sign the vWires' requests"
    )
    nsmgr_id: str = setting("", "SPIFFE ID of this node's nsmgr (needed with --svid-dir)")
    lifetime: float = setting(60.0, "seconds a vWire's path segment stays valid (refreshed)")
    request_timeout: float = setting(15.0, "deadline of each vWire request, seconds")
    metrics_listen: str = setting(
        "", "serve Prometheus metrics on host:port (/metrics); off when empty"
    )
    log_level: str = setting("info", "debug, info, warning or error")
