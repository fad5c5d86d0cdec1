"""A fabric's namespaces and underlay, made and removed with iproute2.

:func:`build` creates the underlay namespace with a bridge and one namespace per node joined to
the bridge by a veth (``ul0`` inside the node, with the node's underlay address).
:func:`add_netns` makes a workload namespace. :func:`teardown` removes every namespace of the
topology. All are idempotent where it matters (a namespace that exists is an error only for add).
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

from lab.topology import UNDERLAY_BRIDGE, Node, Topology
from sdk.errors import FailedPrecondition


def ip(*args: str, netns: str | None = None, check: bool = True) -> str:
    """Run ``ip`` (inside ``netns`` when given); raise FailedPrecondition with its message."""
    cmd = ["ip", *(["-n", netns] if netns else []), *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise FailedPrecondition(f"`{' '.join(cmd)}` failed: {done.stderr.strip()}")
    return done.stdout


def namespaces(topology: Topology) -> list[str]:
    """The topology's namespaces that exist now."""
    return [
        line.split()[0]
        for line in ip("netns", "list").splitlines()
        if line.split() and line.split()[0].startswith(topology.prefix)
    ]


def add_netns(name: str) -> None:
    """Create a namespace with its loopback up."""
    ip("netns", "add", name)
    ip("link", "set", "lo", "up", netns=name)


def _no_dad(netns: str) -> None:
    """Interfaces made in ``netns`` from now on skip IPv6 duplicate address detection: their
    link-local address (and its local route) is there as soon as they are up, not a second or
    two later, when a leak check's first snapshot may already have been taken."""
    ip("netns", "exec", netns, "sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0",
       "net.ipv6.conf.all.accept_dad=0")


def build(topology: Topology, node_list: Sequence[Node]) -> None:
    """Create the underlay and the node namespaces (see the module docstring)."""
    underlay = topology.underlay_netns
    add_netns(underlay)
    _no_dad(underlay)
    ip("link", "add", UNDERLAY_BRIDGE, "type", "bridge", netns=underlay)
    ip("link", "set", UNDERLAY_BRIDGE, "up", netns=underlay)
    for node in node_list:
        add_netns(node.netns)
        _no_dad(node.netns)
        ip("link", "add", "ul0", "netns", node.netns, "type", "veth", "peer", "name", node.name,
           "netns", underlay)
        ip("link", "set", node.name, "master", UNDERLAY_BRIDGE, "up", netns=underlay)
        ip("addr", "add", f"{node.underlay_ip}/24", "dev", "ul0", netns=node.netns)
        ip("link", "set", "ul0", "up", netns=node.netns)


def vwire_links(netns: str) -> list[str]:
    """Lines of ``ip -d link`` in ``netns`` for interfaces a vWire owns (alias ``vwire:...``)."""
    return [
        line.strip()
        for line in ip("-o", "-d", "link", "show", netns=netns, check=False).splitlines()
        if "alias vwire:" in line
    ]


def teardown(topology: Topology) -> list[str]:
    """Delete every namespace of the topology; returns their names."""
    removed = namespaces(topology)
    for name in removed:
        ip("netns", "del", name, check=False)
    return removed
