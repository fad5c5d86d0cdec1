"""Settings of the forwarder process (environment prefix ``VWIRE_FORWARDER_``)."""

from __future__ import annotations

from dataclasses import dataclass

from sdk.settings import setting

PREFIX = "VWIRE_FORWARDER_"
WIREGUARD_DEVICES = ("per-vwire", "shared")  #: values of ``wireguard_device``


@dataclass(frozen=True)
class ForwarderSettings:
    name: str = setting("", "this forwarder's name (default: forwarder-<hostname>)")
    listen: str = setting("unix:///var/run/vwire/forwarder.sock", "where nsmgr reaches it")
    nsmgr: str = setting("unix:///var/run/vwire/nsmgr.sock", "this node's nsmgr")
    underlay_interface: str = setting(
        "", "interface carrying tunnels to other nodes (default: the default route's interface)"
    )
    underlay_ip: str = setting("", "this node's tunnel address (default: that interface's first)")
    site: str = setting(
        "", "this node's site (domain/cloud, e.g. aws-eu): nodes of one site reach each other "
        "directly with their underlay MTU; empty: the default site"
    )
    nat: str = setting(
        "none", "how other sites reach this node: none (its underlay address), one-to-one "
        "(--external-address, a cloud public IP) or masquerade (they cannot: it dials them, "
        "keepalive 25 s)", choices=("none", "one-to-one", "masquerade"),
    )
    external_address: str = setting(
        "", "this node's public address behind 1:1 NAT, advertised for tunnels from other sites"
    )
    wan_mtu: int = setting(
        1500, "underlay MTU of paths that leave this node's site (the internet: 1500)"
    )
    port_range: str = setting("51820-52819", "UDP ports for WireGuard tunnels, first-last")
    wireguard: str = setting(
        "auto", "WireGuard backend: auto, kernel or wireguard-go",
        choices=("auto", "kernel", "wireguard-go"),
    )
    wireguard_pool: int = setting(
        0, "wireguard-go daemons kept started ahead (per underlay, at the last vWire's MTU), so "
        "a vWire does not wait for one to start; 0: start each on demand"
    )
    wireguard_pool_endpoints: int = setting(
        0, "endpoint namespaces (the most recently used) in which wireguard_pool daemons each are "
        "also kept ready, their tunnel moved in at the path MTU, so the endpoint side's tunnel "
        "needs no move; each idle daemon holds ~5 MB RSS (~2 MB PSS); 0: none"
    )
    wireguard_reuse: int = setting(
        4, "wireguard-go daemons of closed endpoint-side vWires kept, wiped (no key, port or "
        "peer) with their tunnel down and renamed vwp... in the endpoint's namespace, for up "
        "to 30 s, so the endpoint's next vWire starts none; each holds ~5 MB RSS; 0: each "
        "stops with its vWire"
    )
    wireguard_device: str = setting(
        "per-vwire", "per-vwire: a WireGuard device for each remote vWire (isolated by "
        "construction, spreads over the cores); shared: one per other node (and overlapping "
        "address space) for all the vWires to it, told apart by policy routing: far less "
        "memory and faster setup where there is no kernel WireGuard; used when both "
        "forwarders share", choices=WIREGUARD_DEVICES,
    )
    wireguard_device_linger: float = setting(
        30.0, "seconds a shared device keeps running after its last vWire closed, so vWires "
        "made one after another do not each start a daemon; 0: it stops with the last"
    )
    prepare_ahead: bool = setting(
        True, "make a remote vWire's tunnel (wireguard-go, key, port, MTU; on the client side "
        "moved into the client's namespace) while the request is still downstream, so only "
        "the peer, addresses and routes are left when the answer comes; off: all after it"
    )
    svid_dir: str = setting(
        "", "directory with svid.crt, svid.key and bundle.pem: sign and verify path tokens"
    )
    allow_host_netns: bool = setting(
        False,
        "accept the forwarder's own and the host's network namespace as a workload namespace "
        "(KERNEL inodeURL); off: such requests get PERMISSION_DENIED",
    )
    token_lifetime: float = setting(60.0, "seconds this hop's path segment stays valid")
    register_interval: float = setting(2.0, "seconds between registrations with nsmgr")
    metrics_listen: str = setting(
        "", "serve Prometheus metrics on host:port (/metrics); off when empty"
    )
    log_level: str = setting("info", "debug, info, warning or error")
    trace: bool = setting(False, "log every chain element's entry and exit (debug level)")
