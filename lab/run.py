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

from forwarder.settings import WIREGUARD_DEVICES
from lab import network, observe
from lab.fabric import CA_AGENT, REGISTRY_STORES, Client, Fabric, endpoint_cidrs
from lab.observe import endpoint_address, wait_for
from lab.processes import Processes
from lab.topology import DEFAULT, Topology
from sdk.errors import FailedPrecondition, InvalidArgument
from sdk.registry.validate import MAX_NAME, check_name
from sdk.security.redact import redact_tokens

FAILED_LOGS = Path("/tmp/vwire-lab-logs")  # the default lab's; see failed_logs()
CLIENT = "nsc"
_LONGEST_SERVICE = MAX_NAME - len("nse--n16")

Progress = Callable[[str], None]

__all__ = ["LabConfig", "check", "check_services", "client_connections", "down",
           "endpoint_address", "env", "failed_logs", "ping", "status", "up"]


@dataclass
class LabConfig:
    nodes: int = 2
    services: list[str] = field(default_factory=lambda: ["secure-db"])
    registry_store: str = "memory"  # or "etcd": 3 etcd members, 2 registry replicas
    wireguard_device: str = "per-vwire"  # or "shared": the forwarders' --wireguard-device


def _fabric(topology: Topology, config: LabConfig) -> Fabric:
    device = ["--wireguard-device", config.wireguard_device]
    return Fabric(topology, config.nodes, registry_store=config.registry_store,
                  forwarder_args={i: device for i in range(1, config.nodes + 1)})


def _config_file(topology: Topology) -> Path:
    return topology.state_dir / "lab.json"


def _process_names(config: LabConfig, fabric: Fabric) -> list[str]:
    names = [*fabric.registries, CA_AGENT]
    if config.registry_store == "etcd":
        names += [f"etcd-m{i}" for i in range(3)]
    for node in fabric.nodes:
        names += [node.nsmgr_process, node.forwarder_process]
    return names + [_endpoint_name(s, fabric) for s in config.services] + [CLIENT]


def _endpoint_name(service: str, fabric: Fabric) -> str:
    return f"nse-{service}-{fabric.nodes[-1].name}"


def running(config: LabConfig, topology: Topology = DEFAULT) -> bool:
    fabric = _fabric(topology, config)
    return all(fabric.processes.pid_of(n) is not None for n in _process_names(config, fabric))


def load_config(topology: Topology = DEFAULT) -> LabConfig | None:
    try:
        return LabConfig(**json.loads(_config_file(topology).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def check_services(services: list[str]) -> None:
    """:class:`InvalidArgument` (field ``services``) unless ``services`` are one or more distinct
    network service names (registry rules) that also make valid endpoint names."""
    if not services:
        raise InvalidArgument("services", "give at least one network service")
    for service in services:
        check_name("services", service)
        if len(service) > _LONGEST_SERVICE:  # its endpoint is nse-SERVICE-nN, a name too
            raise InvalidArgument("services", f"must be at most {_LONGEST_SERVICE} characters "
                                  f"(got {len(service)})")
    repeated = sorted({s for s in services if services.count(s) > 1})
    if repeated:
        raise InvalidArgument("services", f"{', '.join(map(repr, repeated))} given twice")


def check(config: LabConfig) -> None:
    """Everything :func:`up` needs, checked before it touches a running lab:
    :class:`InvalidArgument` or :class:`FailedPrecondition` naming what is wrong."""
    if config.nodes < 1 or config.nodes > 16:
        raise InvalidArgument("nodes", f"must be 1-16 (got {config.nodes})")
    check_services(config.services)
    if config.registry_store not in REGISTRY_STORES:
        raise InvalidArgument("registry_store", f"must be one of {', '.join(REGISTRY_STORES)} "
                              f"(got {config.registry_store!r})")
    if config.wireguard_device not in WIREGUARD_DEVICES:
        raise InvalidArgument("wireguard_device", f"must be one of {', '.join(WIREGUARD_DEVICES)}"
                              f" (got {config.wireguard_device!r})")
    tools = ("ip", "wireguard-go", *(("etcd",) if config.registry_store == "etcd" else ()))
    for tool in tools:
        if shutil.which(tool) is None:
            raise FailedPrecondition(f"{tool} is missing: run scripts/setup.sh first")


def up(config: LabConfig, progress: Progress = lambda _m: None,
       topology: Topology = DEFAULT) -> None:
    """Build the lab (see the module docstring); nothing is touched unless :func:`check`
    passes."""
    check(config)
    if load_config(topology) == config and running(config, topology):
        progress("the lab is already up")
        return
    down(progress, topology)
    fabric = _fabric(topology, config)
    try:
        asyncio.run(_build(fabric, config, progress))
    except BaseException as exc:
        kept = failed_logs(topology)
        shutil.rmtree(kept, ignore_errors=True)
        fabric.save_logs(kept)
        _point_at_kept_logs(exc, topology.state_dir, kept)
        down(progress, topology)
        raise


def failed_logs(topology: Topology = DEFAULT) -> Path:
    """Where ``up`` keeps the logs of a lab that failed to come up (its state directory is
    removed with it): :data:`FAILED_LOGS` for the default lab, else one per prefix."""
    if topology.prefix == Topology.prefix:
        return FAILED_LOGS
    return FAILED_LOGS.with_name(f"{FAILED_LOGS.name}-{topology.prefix.rstrip('-')}")


def _point_at_kept_logs(exc: BaseException, state_dir: Path, kept: Path) -> None:
    """Rewrite the paths in ``exc``'s message from the state directory (about to be removed)
    to the kept copy, and say where the logs are."""
    if len(exc.args) == 1 and isinstance(exc.args[0], str):
        exc.args = (exc.args[0].replace(f"{state_dir}/", f"{kept}/"),)
    exc.add_note(f"the lab's logs are kept in {kept} (the lab was removed)")


def _count(number: int, noun: str) -> str:
    """``1 node namespace``, ``2 node namespaces``."""
    return f"{number} {noun}{'' if number == 1 else 's'}"


async def _build(fabric: Fabric, config: LabConfig, progress: Progress) -> None:
    first, last = fabric.nodes[0], fabric.nodes[-1]
    registry = ("a three-member etcd cluster and two registry replicas"
                if config.registry_store == "etcd" else "the registry")
    progress(f"creating {_count(config.nodes, 'node namespace')} joined by an underlay bridge; "
             f"starting {registry}, and nsmgr and forwarder on every node")
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
    fabric = _fabric(topology, config)
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
        progress(f"removed {_count(len(removed), 'namespace')}")


def env(topology: Topology = DEFAULT, node: int = 1) -> dict[str, str]:
    """The environment that points nsmctl at the running lab: its registry, the nsmgr of
    ``node`` and its CA (``nsmctl lab env`` prints it as ``export`` lines)."""
    config = load_config(topology)
    if config is None:
        raise FailedPrecondition("the lab is down: start it with `nsmctl lab up`")
    if not 1 <= node <= config.nodes:
        raise InvalidArgument("node", f"the lab has nodes 1-{config.nodes} (got {node})")
    return {
        "NSMCTL_REGISTRY": f"unix://{topology.registry_socket}",
        "NSMCTL_NSMGR": f"unix://{topology.node(node).nsmgr_socket}",
        "VWIRE_CA_DIR": str(topology.state_dir / "ca"),
    }


def status(topology: Topology = DEFAULT) -> dict[str, Any]:
    """Nodes (namespaces, sockets, process states) and the connections each nsmgr knows."""
    config = load_config(topology)
    if config is None:
        return {"up": False, "nodes": [], "connections": []}
    fabric = _fabric(topology, config)

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
        "registry_socket": str(topology.registry_socket),
        "registry_store": config.registry_store,
        "ca_dir": str(topology.state_dir / "ca"),
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
