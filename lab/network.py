"""The lab's namespaces and underlay, made and removed with iproute2.

:func:`build` creates the underlay namespace with a bridge, one namespace per node joined to the
bridge by a veth (``ul0`` inside the node, with the node's underlay address), and the workload
namespaces. :func:`teardown` removes every ``vwl-`` namespace. Both are idempotent.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

from lab.topology import PREFIX, UNDERLAY_BRIDGE, UNDERLAY_NET, UNDERLAY_NS, Node
from sdk.errors import FailedPrecondition


def ip(*args: str, netns: str | None = None, check: bool = True) -> str:
    """Run ``ip`` (inside ``netns`` when given); raise FailedPrecondition with its message."""
    cmd = ["ip", *(["-n", netns] if netns else []), *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise FailedPrecondition(f"`{' '.join(cmd)}` failed: {done.stderr.strip()}")
    return done.stdout


def namespaces() -> list[str]:
    """The lab's namespaces that exist now."""
    return [
        line.split()[0]
        for line in ip("netns", "list").splitlines()
        if line.split() and line.split()[0].startswith(PREFIX)
    ]


def _add_netns(name: str) -> None:
    ip("netns", "add", name)
    ip("link", "set", "lo", "up", netns=name)


def build(node_list: Sequence[Node], workloads: Sequence[tuple[Node, str]]) -> None:
    """Create the underlay, the nodes and the workload namespaces (see the module docstring)."""
    _add_netns(UNDERLAY_NS)
    ip("link", "add", UNDERLAY_BRIDGE, "type", "bridge", netns=UNDERLAY_NS)
    ip("link", "set", UNDERLAY_BRIDGE, "up", netns=UNDERLAY_NS)
    for node in node_list:
        _add_netns(node.netns)
        ip("link", "add", "ul0", "netns", node.netns, "type", "veth", "peer", "name", node.name,
           "netns", UNDERLAY_NS)
        ip("link", "set", node.name, "master", UNDERLAY_BRIDGE, "up", netns=UNDERLAY_NS)
        ip("addr", "add", f"{node.underlay_ip}/24", "dev", "ul0", netns=node.netns)
        ip("link", "set", "ul0", "up", netns=node.netns)
    for node, role in workloads:
        _add_netns(node.workload_netns(role))


def teardown() -> list[str]:
    """Delete every lab namespace; returns their names."""
    removed = namespaces()
    for name in removed:
        ip("netns", "del", name, check=False)
    return removed


__all__ = ["UNDERLAY_NET", "build", "ip", "namespaces", "teardown"]
