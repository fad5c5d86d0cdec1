"""Bring the lab up, report on it, take it down.

:func:`up` is safe to run twice: a lab whose processes all run is reported as it is; anything
partial is taken down first. It waits (bounded) until the client's vWire passes traffic.
:func:`down` removes every process, namespace and file the lab made. :func:`status` reads the
connections from every node's nsmgr (its monitor stream's initial state).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from api.proto import connection_pb2_grpc
from api.proto.connection_pb2 import MonitorScopeSelector
from lab import network, processes
from lab.topology import REGISTRY_SOCKET, STATE_DIR, Node, nodes
from nsc.probe import Pinger
from sdk.errors import FailedPrecondition, InvalidArgument, Unavailable
from sdk.grpcutil import channel

CONFIG = STATE_DIR / "lab.json"
CLIENT_STATE = STATE_DIR / "nsc.json"
FAILED_LOGS = Path("/tmp/vwire-lab-logs")
IPV4_PREFIX = "10.60.0.0/16"
IPV6_PREFIX = "fd00:60::/64"

Progress = Callable[[str], None]


@dataclass
class LabConfig:
    nodes: int = 2
    services: list[str] = field(default_factory=lambda: ["secure-db"])


def _wait(what: str, ready: Callable[[], bool], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not ready():
        if time.monotonic() > deadline:
            raise Unavailable(f"the lab's {what} did not become ready within {seconds:g} s: "
                              f"see the logs in {STATE_DIR}")
        time.sleep(0.05)  # polling a bounded readiness check


def _process_names(config: LabConfig) -> list[str]:
    names = ["registry"]
    for node in nodes(config.nodes):
        names += [f"{node.name}-nsmgr", f"{node.name}-forwarder"]
    names += [f"nse-{service}" for service in config.services] + ["nsc"]
    return names


def running(config: LabConfig) -> bool:
    return all(processes.pid_of(name) is not None for name in _process_names(config))


def load_config() -> LabConfig | None:
    try:
        return LabConfig(**json.loads(CONFIG.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def up(config: LabConfig, progress: Progress = lambda _m: None) -> None:
    """Build the lab (see the module docstring)."""
    if config.nodes < 1 or config.nodes > 16:
        raise InvalidArgument("nodes", f"must be 1-16 (got {config.nodes})")
    if not config.services:
        raise InvalidArgument("services", "give at least one network service")
    for tool in ("ip", "wireguard-go"):
        if shutil.which(tool) is None:
            raise FailedPrecondition(f"{tool} is missing: run scripts/setup.sh first")
    current = load_config()
    if current == config and running(config):
        progress("the lab is already up")
        return
    down(progress)
    node_list = nodes(config.nodes)
    first, last = node_list[0], node_list[-1]
    progress(f"creating {config.nodes} node namespaces joined by an underlay bridge")
    network.build(node_list, [(first, "nsc"), *[(last, f"nse{i}") for i, _ in
                                                 enumerate(config.services)]])
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    CONFIG.write_text(json.dumps(asdict(config)))
    try:
        _start_processes(config, node_list, progress)
    except BaseException as exc:
        shutil.rmtree(FAILED_LOGS, ignore_errors=True)
        shutil.copytree(STATE_DIR, FAILED_LOGS, ignore=shutil.ignore_patterns("*.sock"))
        exc.add_note(f"the lab's logs are kept in {FAILED_LOGS}")
        down(progress)
        raise


def _start_processes(config: LabConfig, node_list: list[Node], progress: Progress) -> None:
    first, last = node_list[0], node_list[-1]
    progress("starting the registry")
    processes.start("registry", ["registry", "--listen", f"unix://{REGISTRY_SOCKET}",
                                 "--store", "memory://"])
    _wait("registry", REGISTRY_SOCKET.exists, 15)
    for node in node_list:
        progress(f"starting nsmgr and forwarder on {node.name} ({node.underlay_ip})")
        node.dir.mkdir(parents=True, exist_ok=True)
        processes.start(f"{node.name}-nsmgr", [
            "nsmgr", "--name", f"nsmgr-{node.name}",
            "--listen", f"unix://{node.nsmgr_socket}", "--listen", node.nsmgr_tcp,
            "--insecure", "--registry", f"unix://{REGISTRY_SOCKET}",
        ], netns=node.netns)
        processes.start(f"{node.name}-forwarder", [
            "forwarder", "--name", f"forwarder-{node.name}",
            "--listen", f"unix://{node.forwarder_socket}", "--nsmgr", f"unix://{node.nsmgr_socket}",
            "--underlay-interface", "ul0",
        ], netns=node.netns)
    for node in node_list:
        _wait(f"{node.name} nsmgr", node.nsmgr_socket.exists, 20)
        _wait(f"{node.name} forwarder", node.forwarder_socket.exists, 20)
    for i, service in enumerate(config.services):
        progress(f"starting endpoint for {service} on {last.name}")
        processes.start(f"nse-{service}", [
            "nse", "--name", f"nse-{service}-{last.name}", "--service", service,
            "--label", "lab=vwire", "--listen", f"unix://{last.dir / f'nse-{service}.sock'}",
            "--nsmgr", f"unix://{last.nsmgr_socket}",
            "--netns", f"/var/run/netns/{last.workload_netns(f'nse{i}')}",
            "--cidr", IPV4_PREFIX, "--cidr", IPV6_PREFIX,
        ], netns=last.workload_netns(f"nse{i}"))
        _wait(f"endpoint {service}", (last.dir / f"nse-{service}.sock").exists, 20)
    progress(f"connecting a client on {first.name} to {', '.join(config.services)}")
    urls = [f"kernel://{service}/nsm{i}" for i, service in enumerate(config.services)]
    processes.start("nsc", [
        "nsc", *urls, "--name", f"nsc-{first.name}", "--nsmgr", f"unix://{first.nsmgr_socket}",
        "--netns", f"/var/run/netns/{first.workload_netns('nsc')}",
        "--state-file", str(CLIENT_STATE),
    ], netns=first.workload_netns("nsc"))
    _wait("client", lambda: len(client_connections()) == len(config.services), 60)
    progress("checking that the vWires pass traffic")
    client_netns = first.workload_netns("nsc")
    for conn in client_connections():
        target = endpoint_address(conn)

        def passes(address: str = target) -> bool:
            return ping(client_netns, address)

        _wait(f"vWire to {conn.get('network_service')}", passes, 15)


def client_connections() -> list[dict[str, Any]]:
    """The client's connections as it last reported them (JSON dicts), or []."""
    try:
        connections: list[dict[str, Any]] = json.loads(CLIENT_STATE.read_text())["connections"]
    except (OSError, ValueError, KeyError):
        return []
    return connections


def endpoint_address(conn: dict[str, Any]) -> str:
    """The endpoint's first address of a connection (JSON dict)."""
    addrs = conn.get("context", {}).get("ip_context", {}).get("dst_ip_addrs", [])
    return str(addrs[0]).split("/")[0] if addrs else ""


def ping(netns: str, address: str) -> bool:
    """One ICMP echo from inside ``netns`` (a lab namespace) to ``address``, answered in 1 s."""
    if not address:
        return False

    async def once() -> bool:
        pinger = Pinger(f"/var/run/netns/{netns}")
        try:
            return await pinger.ping(address, wait=1.0)
        finally:
            pinger.close()

    return asyncio.run(once())


def down(progress: Progress = lambda _m: None) -> None:
    """Remove everything the lab made (idempotent)."""
    if processes.recorded() or network.namespaces():
        progress("stopping the lab's processes")
    processes.stop_all()
    removed = network.teardown()
    if removed:
        progress(f"removed {len(removed)} namespaces")
    shutil.rmtree(STATE_DIR, ignore_errors=True)


async def _node_connections(node: Node) -> list[dict[str, Any]]:
    async with channel(f"unix://{node.nsmgr_socket}") as ch:
        stub = connection_pb2_grpc.MonitorConnectionStub(ch)
        stream = stub.MonitorConnections(MonitorScopeSelector(), timeout=5)
        async for event in stream:
            stream.cancel()
            return [
                json_format.MessageToDict(conn, preserving_proto_field_name=True)
                for conn in event.connections.values()
            ]
    return []


def status() -> dict[str, Any]:
    """Nodes (namespaces, sockets, process states) and the connections each nsmgr knows."""
    config = load_config()
    if config is None:
        return {"up": False, "nodes": [], "connections": []}
    node_list = nodes(config.nodes)

    async def gather() -> list[list[dict[str, Any]]]:
        results = []
        for node in node_list:
            try:
                results.append(await _node_connections(node))
            except Exception:
                results.append([])
        return results

    per_node = asyncio.run(gather())
    return {
        "up": running(config),
        "nodes": [
            {
                "name": node.name,
                "netns": node.netns,
                "underlay_ip": node.underlay_ip,
                "nsmgr_socket": str(node.nsmgr_socket),
                "forwarder_socket": str(node.forwarder_socket),
                "nsmgr": processes.pid_of(f"{node.name}-nsmgr") is not None,
                "forwarder": processes.pid_of(f"{node.name}-forwarder") is not None,
            }
            for node in node_list
        ],
        "connections": [
            {"node": node.name, **conn}
            for node, conns in zip(node_list, per_node, strict=True)
            for conn in conns
        ],
        "client": client_connections(),
        "client_netns": node_list[0].workload_netns("nsc"),
    }
