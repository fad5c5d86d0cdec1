"""The user's lab (``nsmctl lab up|status|down``), built with :class:`lab.fabric.Fabric`.

:func:`up` is safe to run twice: a lab whose processes all run is reported as it is; anything
partial is taken down first. It builds N nodes, one endpoint per service on the last node and
one client on the first, and waits (bounded) until the client's vWires pass traffic.
:func:`down` removes every process, namespace and file the lab made. :func:`status` reads the
connections from every node's nsmgr (its monitor stream's initial state). The topology is
:data:`lab.topology.DEFAULT` unless one is given.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lab import network, observe
from lab.fabric import CA_AGENT, Client, Fabric, endpoint_cidrs
from lab.observe import endpoint_address, wait_for
from lab.processes import Processes
from lab.topology import DEFAULT, Topology
from sdk.errors import FailedPrecondition, InvalidArgument
from sdk.security.redact import redact_tokens

FAILED_LOGS = Path("/tmp/vwire-lab-logs")
CLIENT = "nsc"

Progress = Callable[[str], None]

__all__ = ["LabConfig", "client_connections", "down", "endpoint_address", "ping", "status", "up"]


@dataclass
class LabConfig:
    nodes: int = 2
    services: list[str] = field(default_factory=lambda: ["secure-db"])


def _config_file(topology: Topology) -> Path:
    return topology.state_dir / "lab.json"


def _process_names(config: LabConfig, fabric: Fabric) -> list[str]:
    names = ["registry", CA_AGENT]
    for node in fabric.nodes:
        names += [node.nsmgr_process, node.forwarder_process]
    return names + [_endpoint_name(s, fabric) for s in config.services] + [CLIENT]


def _endpoint_name(service: str, fabric: Fabric) -> str:
    return f"nse-{service}-{fabric.nodes[-1].name}"


def running(config: LabConfig, topology: Topology = DEFAULT) -> bool:
    fabric = Fabric(topology, config.nodes)
    return all(fabric.processes.pid_of(n) is not None for n in _process_names(config, fabric))


def load_config(topology: Topology = DEFAULT) -> LabConfig | None:
    try:
        return LabConfig(**json.loads(_config_file(topology).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def up(config: LabConfig, progress: Progress = lambda _m: None,
       topology: Topology = DEFAULT) -> None:
    """Build the lab (see the module docstring)."""
    if config.nodes < 1 or config.nodes > 16:
        raise InvalidArgument("nodes", f"must be 1-16 (got {config.nodes})")
    if not config.services:
        raise InvalidArgument("services", "give at least one network service")
    for tool in ("ip", "wireguard-go"):
        if shutil.which(tool) is None:
            raise FailedPrecondition(f"{tool} is missing: run scripts/setup.sh first")
    if load_config(topology) == config and running(config, topology):
        progress("the lab is already up")
        return
    down(progress, topology)
    fabric = Fabric(topology, config.nodes)
    try:
        asyncio.run(_build(fabric, config, progress))
    except BaseException as exc:
        shutil.rmtree(FAILED_LOGS, ignore_errors=True)
        fabric.save_logs(FAILED_LOGS)
        exc.add_note(f"the lab's logs are kept in {FAILED_LOGS}")
        down(progress, topology)
        raise


async def _build(fabric: Fabric, config: LabConfig, progress: Progress) -> None:
    first, last = fabric.nodes[0], fabric.nodes[-1]
    progress(f"creating {config.nodes} node namespaces joined by an underlay bridge; starting "
             "the registry, and nsmgr and forwarder on every node")
    await fabric.up()
    _config_file(fabric.topology).write_text(json.dumps(asdict(config)))
    for index, service in enumerate(config.services):
        progress(f"starting endpoint for {service} on {last.name}")
        await fabric.add_endpoint(_endpoint_name(service, fabric), [service], last.index,
                                  labels={"lab": "vwire"}, cidrs=endpoint_cidrs(index))
    progress(f"connecting a client on {first.name} to {', '.join(config.services)}")
    urls = [f"kernel://{service}/nsm{i}" for i, service in enumerate(config.services)]
    client = await fabric.add_client(CLIENT, first.index, urls)
    progress("checking that the vWires pass traffic")
    for conn in client.connections():
        target = endpoint_address(conn)

        async def passes(address: str = target) -> bool:
            return await observe.ping(client.netns, address)

        await wait_for(f"vWire to {conn.get('network_service')}", passes, 15)


def _client(topology: Topology) -> Client | None:
    config = load_config(topology)
    if config is None:
        return None
    fabric = Fabric(topology, config.nodes)
    first = fabric.nodes[0]
    return Client(CLIENT, f"{CLIENT}-{first.name}", first, first.workload_netns(CLIENT), (),
                  topology.state_dir / f"{CLIENT}.json", fabric.processes.out(CLIENT))


def client_connections(topology: Topology = DEFAULT) -> list[dict[str, Any]]:
    """The client's connections as it last reported them (JSON dicts), or []."""
    client = _client(topology)
    return client.connections() if client else []


def ping(netns: str, address: str) -> bool:
    """One ICMP echo from inside ``netns`` to ``address``, answered within 1 s (sync)."""
    return asyncio.run(observe.ping(netns, address))


def down(progress: Progress = lambda _m: None, topology: Topology = DEFAULT) -> None:
    """Remove everything the lab made (idempotent)."""
    if Processes(topology).recorded() or network.namespaces(topology):
        progress("stopping the lab's processes")
    removed = Fabric(topology).down()
    if removed:
        progress(f"removed {len(removed)} namespaces")


def status(topology: Topology = DEFAULT) -> dict[str, Any]:
    """Nodes (namespaces, sockets, process states) and the connections each nsmgr knows."""
    config = load_config(topology)
    if config is None:
        return {"up": False, "nodes": [], "connections": []}
    fabric = Fabric(topology, config.nodes)

    async def gather() -> list[list[dict[str, Any]]]:
        results = []
        for node in fabric.nodes:
            try:
                results.append(await observe.monitor_connections(node.nsmgr_socket))
            except Exception:
                results.append([])
        return results

    per_node = asyncio.run(gather())
    pid_of = fabric.processes.pid_of
    return {
        "up": running(config, topology),
        "nodes": [
            {
                "name": node.name,
                "netns": node.netns,
                "underlay_ip": node.underlay_ip,
                "nsmgr_socket": str(node.nsmgr_socket),
                "forwarder_socket": str(node.forwarder_socket),
                "nsmgr": pid_of(node.nsmgr_process) is not None,
                "forwarder": pid_of(node.forwarder_process) is not None,
            }
            for node in fabric.nodes
        ],
        "connections": redact_tokens([
            {"node": node.name, **conn}
            for node, conns in zip(fabric.nodes, per_node, strict=True)
            for conn in conns
        ]),
        "client": client_connections(topology),
        "client_netns": fabric.nodes[0].workload_netns(CLIENT),
    }
