"""Names and addresses of everything a fabric makes, derived from a :class:`Topology`.

A topology is a name prefix (every namespace it makes starts with it) and a state directory
(sockets, logs, pid files, client state). Two topologies with different prefixes and state
directories never clash, so tests and benchmarks build their own fabrics next to a user's lab.

The user's lab (``nsmctl lab``) uses :data:`DEFAULT`: prefix ``vwl-`` and ``/var/run/vwire-lab``,
overridable with ``VWIRE_LAB_PREFIX`` and ``VWIRE_LAB_STATE_DIR`` (the e2e test of the CLI does).
Inside a fabric everything else (underlay subnet, ports) lives in the fabric's own namespaces, so
it may be the same in every fabric.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from sdk.errors import InvalidArgument

UNDERLAY_BRIDGE = "br0"
UNDERLAY_NET = "10.250.0"
NSMGR_PORT = 5001
_PREFIX_RE = re.compile(r"^[a-z][a-z0-9-]{1,30}-$")


@dataclass(frozen=True)
class Topology:
    """Where one fabric's namespaces and files live (see the module docstring)."""

    prefix: str = "vwl-"
    state_dir: Path = Path("/var/run/vwire-lab")

    def __post_init__(self) -> None:
        if not _PREFIX_RE.match(self.prefix):
            raise InvalidArgument(
                "prefix", f"{self.prefix!r}: use 2-31 lower-case letters, digits or '-', "
                "ending with '-' (e.g. 'vwl-')"
            )
        if not self.state_dir.is_absolute():
            raise InvalidArgument("state_dir", f"{self.state_dir}: use an absolute path")

    @classmethod
    def from_env(cls) -> Topology:
        """The user's lab topology, with ``VWIRE_LAB_PREFIX``/``VWIRE_LAB_STATE_DIR`` applied."""
        return cls(
            prefix=os.environ.get("VWIRE_LAB_PREFIX", cls.prefix),
            state_dir=Path(os.environ.get("VWIRE_LAB_STATE_DIR", str(cls.state_dir))),
        )

    @property
    def underlay_netns(self) -> str:
        return f"{self.prefix}ul"

    @property
    def registry_socket(self) -> Path:
        return self.state_dir / "registry.sock"

    def node(self, index: int) -> Node:
        return Node(self, index)

    def nodes(self, count: int) -> list[Node]:
        return [Node(self, i) for i in range(1, count + 1)]


class _Located(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def dir(self) -> Path: ...


class NodePlaces:
    """Where a simulated node's nsmgr and forwarder live: their sockets in the node's directory
    and their names among the lab's processes. Mixed into every kind of lab node (which gives
    ``name`` and ``dir``)."""

    @property
    def nsmgr_socket(self: _Located) -> Path:
        return self.dir / "nsmgr.sock"

    @property
    def forwarder_socket(self: _Located) -> Path:
        return self.dir / "forwarder.sock"

    @property
    def nsmgr_process(self: _Located) -> str:
        return f"{self.name}-nsmgr"

    @property
    def forwarder_process(self: _Located) -> str:
        return f"{self.name}-forwarder"


@dataclass(frozen=True)
class Node(NodePlaces):
    """One simulated node of a topology."""

    topology: Topology
    index: int

    @property
    def name(self) -> str:
        return f"n{self.index}"

    @property
    def netns(self) -> str:
        return f"{self.topology.prefix}{self.name}"

    @property
    def underlay_ip(self) -> str:
        return f"{UNDERLAY_NET}.{self.index}"

    @property
    def dir(self) -> Path:
        return self.topology.state_dir / self.name

    @property
    def nsmgr_tcp(self) -> str:
        return f"tcp://{self.underlay_ip}:{NSMGR_PORT}"

    def workload_netns(self, role: str) -> str:
        return f"{self.topology.prefix}{self.name}-{role}"


def netns_path(name: str) -> str:
    """The file of a named network namespace."""
    return f"/var/run/netns/{name}"


DEFAULT = Topology.from_env()
