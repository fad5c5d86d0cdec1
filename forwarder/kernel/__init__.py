"""The forwarder's kernel layer: a typed port (:class:`KernelPort`) and its implementations.

Use :func:`real_kernel` in the forwarder process and :class:`FakeKernel` in unit tests; the rest
of the data plane only sees :class:`KernelPort`.
"""

from __future__ import annotations

from .fake import FakeKernel
from .port import (
    MAIN_TABLE,
    Address,
    Entry,
    KernelPort,
    Link,
    LinkStats,
    Neighbour,
    Netns,
    Route,
    Rule,
)

__all__ = [
    "MAIN_TABLE",
    "Address",
    "Entry",
    "FakeKernel",
    "KernelPort",
    "Link",
    "LinkStats",
    "Neighbour",
    "Netns",
    "Route",
    "Rule",
    "real_kernel",
]


def real_kernel() -> KernelPort:
    """The kernel port over rtnetlink (imports pyroute2 on first use)."""
    from .netlink import NetlinkKernel

    return NetlinkKernel()
