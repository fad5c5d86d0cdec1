"""Names and addresses of everything the lab makes, derived from the node count alone.

Everything the lab creates starts with ``vwl-`` (namespaces) or lives under :data:`STATE_DIR`
(sockets, logs, pid files), so ``lab down`` finds all of it even after a crash.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PREFIX = "vwl-"
STATE_DIR = Path("/var/run/vwire-lab")
UNDERLAY_NS = f"{PREFIX}ul"
UNDERLAY_BRIDGE = "br0"
UNDERLAY_NET = "10.250.0"
NSMGR_PORT = 5001
REGISTRY_SOCKET = STATE_DIR / "registry.sock"


@dataclass(frozen=True)
class Node:
    """One simulated node."""

    index: int

    @property
    def name(self) -> str:
        return f"n{self.index}"

    @property
    def netns(self) -> str:
        return f"{PREFIX}{self.name}"

    @property
    def underlay_ip(self) -> str:
        return f"{UNDERLAY_NET}.{self.index}"

    @property
    def dir(self) -> Path:
        return STATE_DIR / self.name

    @property
    def nsmgr_socket(self) -> Path:
        return self.dir / "nsmgr.sock"

    @property
    def forwarder_socket(self) -> Path:
        return self.dir / "forwarder.sock"

    @property
    def nsmgr_tcp(self) -> str:
        return f"tcp://{self.underlay_ip}:{NSMGR_PORT}"

    def workload_netns(self, role: str) -> str:
        return f"{PREFIX}{self.name}-{role}"


def nodes(count: int) -> list[Node]:
    return [Node(i) for i in range(1, count + 1)]
