"""The multi-cloud lab's network: a simulated internet, one router and underlay per domain, NAT.

Namespaces (``P`` = the topology's prefix; ``_`` never appears in node names, so nothing
clashes): ``P_inet`` (the internet: routes between the domains' uplinks, MTU :attr:`wan_mtu`),
``P_rt_<domain>`` (the domain's router: bridge ``br0`` with the domain's MTU, uplink ``up0`` to
the internet, nftables table ``ip vwire_nat``) and ``P<node>`` (a node: ``ul0`` on the bridge,
default route via the router). Addresses, for domain number ``d`` and node number ``i``:

* node ``172.16.d.(10+i)/24``, router ``172.16.d.1`` (inside the domain);
* router uplink ``100.64.d.1/24`` (the domain's NAT address), internet side ``100.64.d.254``;
* a ``one-to-one`` node's public address ``100.64.d.(10+i)`` (on the uplink; DNAT in, SNAT out);
* a ``none`` node is routed by the internet at its own address (no NAT);
* a ``masquerade`` node goes out as ``100.64.d.1`` with random ports (``fully-random``: a
  symmetric cloud NAT) and cannot be reached from outside;
* the domain's gateway listens on the router's public address (:func:`gateway_url`): the one
  address a domain exposes for the control plane; nodes are reached from outside only on their
  WireGuard ports (1:1 and ``none`` nodes).

Guests: a VM (:func:`add_vm`, namespace ``P_vm_<name>``) sits on its domain's bridge at
``172.16.d.(100+k)`` with no NAT of its own (traffic to other domains is masqueraded as the
domain's address); an external host (:func:`add_host`, ``P_host_<name>``) sits on the internet
at ``100.64.200.(10+k)``.

Traffic from inside the domain to the domain's own public addresses is hairpinned by the router
(masqueraded towards the bridge). Everything lives in the topology's namespaces: removing them
(:func:`lab.network.teardown`) removes the nft tables too.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass

from lab.clouds import CloudNode, Domain, MultiCloud
from lab.network import add_netns, ip
from lab.topology import Topology
from sdk.errors import FailedPrecondition

NSMGR_PORT = 5001
GATEWAY_PORT = 5105
NFT_TABLE = "vwire_nat"


def internet_netns(topology: Topology) -> str:
    return f"{topology.prefix}_inet"


def router_netns(topology: Topology, domain: Domain) -> str:
    return f"{topology.prefix}_rt_{domain.name}"


def node_netns(topology: Topology, node: CloudNode) -> str:
    return f"{topology.prefix}{node.name}"


@dataclass(frozen=True)
class Addresses:
    """Where one node is, inside its domain and as seen from other domains."""

    private: str  # on ul0
    public: str  # what a 1:1 NAT maps to it ('' unless one-to-one)


def addresses(domain: Domain, node: CloudNode) -> Addresses:
    private = f"172.16.{domain.index}.{10 + node.index}"
    public = f"100.64.{domain.index}.{10 + node.index}" if node.nat == "one-to-one" else ""
    return Addresses(private, public)


def gateway_url(domain: Domain) -> str:
    """Where the domain's gateway listens: its router's public address."""
    return f"tcp://{_nat_ip(domain)}:{GATEWAY_PORT}"


def _nat_ip(domain: Domain) -> str:
    return f"100.64.{domain.index}.1"


def _sysctl(netns: str, key: str, value: str) -> None:
    _run(["ip", "netns", "exec", netns, "sysctl", "-qw", f"{key}={value}"])


def _run(cmd: list[str], stdin: str | None = None) -> None:
    done = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise FailedPrecondition(f"`{' '.join(cmd)}` failed: {done.stderr.strip()}")


def vm_netns(topology: Topology, name: str) -> str:
    return f"{topology.prefix}_vm_{name}"


def vm_address(domain: Domain, index: int) -> str:
    return f"172.16.{domain.index}.{100 + index}"


def host_netns(topology: Topology, name: str) -> str:
    return f"{topology.prefix}_host_{name}"


def host_address(index: int) -> str:
    return f"100.64.200.{10 + index}"


def nat_rules(domain: Domain) -> str:
    """The router's nftables ruleset (see the module docstring)."""
    inside = f"172.16.{domain.index}.0/24"
    pre, post = [], [f'ip saddr {inside} oifname "br0" ct status dnat masquerade']
    for node in domain.nodes:
        where = addresses(domain, node)
        if node.nat == "one-to-one":
            pre.append(f"ip daddr {where.public} dnat to {where.private}")
            post.append(f'oifname "up0" ip saddr {where.private} snat to {where.public}')
        elif node.nat == "masquerade":
            post.append(f'oifname "up0" ip saddr {where.private} masquerade fully-random')
        else:
            post.append(f'oifname "up0" ip saddr {where.private} accept')
    post.append(f'oifname "up0" ip saddr {inside} masquerade fully-random')  # VMs
    body = "\n".join([
        f"table ip {NFT_TABLE} {{",
        "  chain prerouting {",
        "    type nat hook prerouting priority dstnat; policy accept;",
        *(f"    {rule}" for rule in pre),
        "  }",
        "  chain postrouting {",
        "    type nat hook postrouting priority srcnat; policy accept;",
        *(f"    {rule}" for rule in post),
        "  }",
        "}",
    ])
    return body + "\n"


def build(topology: Topology, model: MultiCloud) -> None:
    """Create the internet, every domain's router and underlay, and the nodes' namespaces."""
    inet = internet_netns(topology)
    add_netns(inet)
    _sysctl(inet, "net.ipv4.ip_forward", "1")
    for domain in model.domains:
        _build_domain(topology, model, domain)


def add_vm(topology: Topology, domain: Domain, name: str, index: int) -> str:
    """A VM's namespace on ``domain``'s bridge (``eth0``, default route via the router)."""
    router, netns = router_netns(topology, domain), vm_netns(topology, name)
    add_netns(netns)
    ip("link", "add", "eth0", "netns", netns, "mtu", str(domain.mtu), "type", "veth",
       "peer", "name", f"vm-{name}"[:15], "netns", router, "mtu", str(domain.mtu))
    ip("link", "set", f"vm-{name}"[:15], "master", "br0", "up", netns=router)
    ip("addr", "add", f"{vm_address(domain, index)}/24", "dev", "eth0", netns=netns)
    ip("link", "set", "eth0", "up", netns=netns)
    ip("route", "add", "default", "via", f"172.16.{domain.index}.1", netns=netns)
    return netns


def add_host(topology: Topology, name: str, index: int, mtu: int) -> str:
    """An external host's namespace on the internet (``eth0``, default route via it)."""
    inet, netns = internet_netns(topology), host_netns(topology, name)
    add_netns(netns)
    peer = f"h-{name}"[:15]
    ip("link", "add", "eth0", "netns", netns, "mtu", str(mtu), "type", "veth",
       "peer", "name", peer, "netns", inet, "mtu", str(mtu))
    ip("addr", "add", f"{host_address(index)}/32", "dev", "eth0", netns=netns)
    ip("link", "set", "eth0", "up", netns=netns)
    ip("link", "set", peer, "up", netns=inet)
    ip("route", "add", "100.64.200.254", "dev", "eth0", netns=netns)
    ip("route", "add", "default", "via", "100.64.200.254", "dev", "eth0", netns=netns)
    ip("addr", "add", "100.64.200.254/32", "dev", peer, netns=inet)
    ip("route", "add", f"{host_address(index)}/32", "dev", peer, netns=inet)
    return netns


def _build_domain(topology: Topology, model: MultiCloud, domain: Domain) -> None:
    inet, router = internet_netns(topology), router_netns(topology, domain)
    d = domain.index
    add_netns(router)
    _sysctl(router, "net.ipv4.ip_forward", "1")
    uplink = f"to-{domain.name}"
    ip("link", "add", "up0", "netns", router, "mtu", str(model.wan_mtu), "type", "veth",
       "peer", "name", uplink, "netns", inet, "mtu", str(model.wan_mtu))
    ip("addr", "add", f"100.64.{d}.254/24", "dev", uplink, netns=inet)
    ip("link", "set", uplink, "up", netns=inet)
    ip("addr", "add", f"{_nat_ip(domain)}/24", "dev", "up0", netns=router)
    ip("link", "set", "up0", "up", netns=router)
    ip("route", "add", "default", "via", f"100.64.{d}.254", netns=router)
    ip("link", "add", "br0", "mtu", str(domain.mtu), "type", "bridge", netns=router)
    ip("addr", "add", f"172.16.{d}.1/24", "dev", "br0", netns=router)
    ip("link", "set", "br0", "up", netns=router)
    for node in domain.nodes:
        where = addresses(domain, node)
        netns = node_netns(topology, node)
        add_netns(netns)
        ip("link", "add", "ul0", "netns", netns, "mtu", str(domain.mtu), "type", "veth",
           "peer", "name", node.name, "netns", router, "mtu", str(domain.mtu))
        ip("link", "set", node.name, "master", "br0", "up", netns=router)
        ip("addr", "add", f"{where.private}/24", "dev", "ul0", netns=netns)
        ip("link", "set", "ul0", "up", netns=netns)
        ip("route", "add", "default", "via", f"172.16.{d}.1", netns=netns)
        if where.public:
            ip("addr", "add", f"{where.public}/32", "dev", "up0", netns=router)
        elif node.nat == "none":
            ip("route", "add", f"{where.private}/32", "via", _nat_ip(domain), netns=inet)
    _run(["ip", "netns", "exec", router, "nft", "-f", "-"], stdin=nat_rules(domain))
