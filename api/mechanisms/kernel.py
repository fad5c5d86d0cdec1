"""The KERNEL mechanism: a kernel interface in a workload's network namespace.

Parameters (NSM's names): ``inodeURL`` — the namespace, as ``file:///proc/<pid>/ns/net``, a
named namespace path, or ``inode://<dev>/<ino>``; ``name`` — the interface name inside it.
"""

from __future__ import annotations

from dataclasses import dataclass

from api.mechanisms import LOCAL
from api.proto.connection_pb2 import Mechanism

TYPE = "KERNEL"
NETNS_URL = "inodeURL"
INTERFACE_NAME = "name"


@dataclass(frozen=True)
class KernelMechanism:
    """Typed view of a KERNEL mechanism."""

    netns_url: str = ""
    interface: str = ""

    @classmethod
    def parse(cls, mechanism: Mechanism) -> KernelMechanism:
        params = mechanism.parameters
        return cls(params.get(NETNS_URL, ""), params.get(INTERFACE_NAME, ""))

    def to_proto(self) -> Mechanism:
        mechanism = Mechanism(cls=LOCAL, type=TYPE)
        if self.netns_url:
            mechanism.parameters[NETNS_URL] = self.netns_url
        if self.interface:
            mechanism.parameters[INTERFACE_NAME] = self.interface
        return mechanism


def is_kernel(mechanism: Mechanism) -> bool:
    return mechanism.type == TYPE
