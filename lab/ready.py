"""Waiting for a lab's processes: a server listening on its unix socket, a node whose nsmgr and
forwarder are up and know each other. Every wait is bounded and fails naming the process and its
log as soon as the process has exited."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from api.proto.registry_pb2 import NetworkServiceEndpoint
from lab.observe import registered, wait_for
from lab.processes import Processes
from sdk.errors import FabricError
from sdk.grpcutil import unix_socket_accepts

FORWARDER_SERVICE = "forwarder"  # nsmgr answers finds for this service with its forwarders


class RunningNode(Protocol):
    """A lab node with an nsmgr and a forwarder (:class:`lab.topology.NodePlaces`)."""

    @property
    def name(self) -> str: ...

    @property
    def nsmgr_socket(self) -> Path: ...

    @property
    def forwarder_socket(self) -> Path: ...

    @property
    def nsmgr_process(self) -> str: ...

    @property
    def forwarder_process(self) -> str: ...


async def listening(processes: Processes, process: str, path: Path, timeout: float) -> None:
    """Until ``process`` accepts on unix socket ``path``."""
    async def ready() -> bool:
        if processes.pid_of(process) is None:
            raise FabricError(f"{process} exited: see {processes.log(process)}")
        return unix_socket_accepts(path)

    await wait_for(f"{process} listening on {path}", ready, timeout)


async def node_ready(processes: Processes, node: RunningNode, timeout: float) -> None:
    """Until the node's nsmgr and forwarder listen and the forwarder is registered with its
    nsmgr (the node can take requests)."""
    await listening(processes, node.nsmgr_process, node.nsmgr_socket, timeout)
    await listening(processes, node.forwarder_process, node.forwarder_socket, timeout)

    async def forwarder_registered() -> bool:
        return await registered(f"unix://{node.nsmgr_socket}", NetworkServiceEndpoint(
            name=f"forwarder-{node.name}", network_service_names=[FORWARDER_SERVICE]))

    await wait_for(f"forwarder-{node.name} registered with its nsmgr", forwarder_registered,
                   timeout)
