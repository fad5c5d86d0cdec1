"""``nsmctl lab up|status|env|down``: the local multi-node lab (see :mod:`lab`).

``lab up --topology FILE|multi-cloud`` builds the multi-cloud lab instead (:mod:`lab.multirun`:
several domains with their own registry, gateway and trust domain, NAT on a simulated internet,
per-path MTU); ``status``, ``env`` and ``down`` work on whichever lab runs.

``lab env`` prints ``export`` lines (``NSMCTL_REGISTRY``, ``NSMCTL_NSMGR``, ``VWIRE_CA_DIR``) so
that ``eval "$(nsmctl lab env)"`` points every later nsmctl command at the lab."""

from __future__ import annotations

import shlex
from enum import StrEnum
from typing import Annotated, Any

import typer
from rich.table import Table

from lab import multirun
from lab import run as lab
from lab.clouds import BUILT_IN_NAME
from nsmctl import connections, lab_pod_cmds, node_cmds
from nsmctl.context import console, emit, run
from nsmctl.render import Output, dump
from sdk.errors import InvalidArgument

lab_app = typer.Typer(help="A multi-node fabric on this machine, in network namespaces.",
                      no_args_is_help=True)


def _progress(message: str) -> None:
    emit(f"==> {message}")


#: Seconds to wait for each forwarder's counters.
COUNTERS_TIMEOUT = 5.0


def _nodes_table(nodes: list[dict[str, Any]]) -> Table:
    view = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("NODE", "NAMESPACE", "UNDERLAY", "NSMGR", "FORWARDER", "NSMGR SOCKET"):
        view.add_column(column)
    for node in nodes:
        view.add_row(node["name"], node["netns"], node["underlay_ip"],
                     "up" if node["nsmgr"] else "DOWN", "up" if node["forwarder"] else "DOWN",
                     node["nsmgr_socket"])
    return view


def with_live_counters(status: dict[str, Any], timeout: float = COUNTERS_TIMEOUT
                       ) -> dict[str, Any]:
    """``status`` whose client connections carry counters read now from the nodes' forwarders
    (as ``nsmctl status`` shows them), and ``counters_stale``: the forwarders that did not
    answer (their connections keep the counters of the last refresh)."""
    forwarders = [{"name": node["name"], "url": f"unix://{node['forwarder_socket']}"}
                  for node in status["nodes"]]
    counters, stale = run(node_cmds.forwarder_counters(forwarders, timeout))
    return {**status, "counters_stale": stale,
            "client": [connections.with_counters(conn, counters) for conn in status["client"]]}


def _show(status: dict[str, Any]) -> None:
    out = console()
    out.print(_nodes_table(status["nodes"]))
    store = status.get("registry_store", "memory")
    replicas = " (2 replicas over a 3-member etcd cluster)" if store == "etcd" else ""
    out.print(f"registry: unix://{status['registry_socket']}{replicas}    CA: {status['ca_dir']}")
    out.print('point nsmctl at this lab: eval "$(nsmctl lab env)"')
    out.print("see it live: nsmctl dashboard --lab   (http://127.0.0.1:8080/)")
    out.print()
    for name in status.get("counters_stale", []):
        out.print(f"counters of node {name}'s forwarder are as of the last refresh "
                  "(it did not answer)")
    out.print("client connections:")
    out.print(connections.table(status["client"]))
    for line in connections.paths(status["client"]):
        out.print(line)
    for line in lab_pod_cmds.status_lines():
        out.print(line)
    targets = [lab.endpoint_address(c) for c in status["client"]]
    if targets:
        out.print()
        out.print("try it:")
        for target in targets:
            out.print(f"  ip netns exec {status['client_netns']} ping -c3 {target}")


def _services(values: list[str] | None) -> list[str] | None:
    """The ``--service`` values, checked (:func:`lab.run.check_services`) before ``up`` touches
    a running lab: a bad one is a usage error naming the option."""
    if values:
        try:
            lab.check_services(values)
        except InvalidArgument as exc:
            raise typer.BadParameter(exc.problem) from None
    return values


class WireguardDevice(StrEnum):
    """How the lab's forwarders make remote vWires (VWIRE_FORWARDER_WIREGUARD_DEVICE)."""

    per_vwire = "per-vwire"
    shared = "shared"


class RegistryStore(StrEnum):
    """Where the lab's registry keeps its records."""

    memory = "memory"
    etcd = "etcd"


@lab_app.command()
def up(
    nodes: Annotated[int, typer.Option("--nodes", min=1, max=16, metavar="N",
                                       help="how many nodes")] = 2,
    services: Annotated[list[str] | None, typer.Option(
        "--service", metavar="NAME", callback=_services,
        help="network service the endpoint provides (repeatable)")] = None,
    registry_store: Annotated[RegistryStore, typer.Option(
        "--registry-store", show_default=False,
        help="memory: one registry; etcd: a three-member etcd cluster and two registry "
             "replicas (default memory)")] = RegistryStore.memory,
    wireguard_device: Annotated[WireguardDevice, typer.Option(
        "--wireguard-device", show_default=False,
        help="per-vwire: a WireGuard device per remote vWire; shared: one per pair of nodes "
             "for all their vWires (docs/dataplane.md; default per-vwire)")
    ] = WireguardDevice.per_vwire,
    topology: Annotated[str | None, typer.Option(
        "--topology", metavar="FILE",
        help=f"build the multi-cloud lab from a topology YAML file, or '{BUILT_IN_NAME}' "
             "(aws + gcp + azure + on-prem); see docs/lab.md")] = None,
) -> None:
    """Build the lab, wait until the client's vWire passes traffic, and show it."""
    if topology is not None:
        _multi_up(topology, nodes != 2 or services is not None
                  or registry_store is not RegistryStore.memory
                  or wireguard_device is not WireguardDevice.per_vwire)
        return
    lab.up(lab.LabConfig(nodes=nodes, services=services or ["secure-db"],
                         registry_store=registry_store.value,
                         wireguard_device=wireguard_device.value), _progress)
    _show(with_live_counters(lab.status()))


def _multi_up(topology: str, single_options: bool) -> None:
    if single_options:
        raise typer.BadParameter("--nodes, --service, --registry-store and --wireguard-device "
                                 "build the single-domain lab: the topology file says what to "
                                 "build",
                                 param_hint="--topology")
    try:
        multirun.up(topology, _progress)
    except InvalidArgument as exc:
        raise typer.BadParameter(str(exc), param_hint="--topology") from None
    _show_multi(multirun.status())


def _table(*columns: str) -> Table:
    view = Table(box=None, pad_edge=False, header_style="bold")
    for column in columns:
        view.add_column(column)
    return view


def _up(*flags: bool) -> str:
    return "up" if all(flags) else "DOWN"


def _domains_table(status: dict[str, Any]) -> Table:
    view = _table("DOMAIN", "CLOUD", "MTU", "TRUST DOMAIN", "GATEWAY", "REGISTRY")
    for d in status["domains"]:
        view.add_row(d["name"], d["cloud"], str(d["mtu"]), d["trust_domain"],
                     f"{d['gateway']} {_up(d['gateway_up'])}", _up(d["registry_up"]))
    return view


def _cloud_nodes_table(status: dict[str, Any]) -> Table:
    view = _table("NODE", "DOMAIN", "NAT", "UNDERLAY", "PUBLIC", "NSMGR", "FORWARDER")
    for n in status["nodes"]:
        view.add_row(n["name"], n["domain"], n["nat"], n["underlay_ip"], n["public_ip"] or "-",
                     _up(n["nsmgr"]), _up(n["forwarder"]))
    return view


def _clients_table(status: dict[str, Any], tries: list[str]) -> Table:
    """The clients' connections; appends a DF ping of exactly each vWire's MTU to ``tries``."""
    view = _table("CLIENT", "NODE", "SERVICE", "ENDPOINT", "MTU", "PATH")
    for client in status["clients"]:
        for conn in client["connections"]:
            target = lab.endpoint_address(conn)
            mtu = conn.get("context", {}).get("MTU", 0)
            hops = [s.get("name", "") for s in conn.get("path", {}).get("path_segments", [])]
            view.add_row(client["name"], client["node"], conn.get("network_service", ""),
                         target, str(mtu), " > ".join(hops))
            if target and mtu:
                tries.append(f"  ip netns exec {client['netns']} ping -c3 -M do "
                             f"-s {mtu - 28} {target}")
    return view


def _guest_lines(status: dict[str, Any], tries: list[str]) -> list[str]:
    """Lines about the VMs and external hosts; appends a ping per VM connection to ``tries``."""
    lines = []
    for vm in status.get("vms", []):
        lines.append(f"VM {vm['name']} ({vm['domain']}, {vm['address']}, joined with nsmctl "
                     f"node join): nsmgr and forwarder {_up(vm['nsmgr'], vm['forwarder'])}")
        for conn in vm["connections"]:
            target = lab.endpoint_address(conn)
            lines.append(f"  its workload {vm['client_netns']} -> "
                         f"{conn.get('network_service')} at {target}")
            tries.append(f"  ip netns exec {vm['client_netns']} ping -c3 {target}")
    for host in status.get("external_hosts", []):
        lines.append(f"external host {host['name']} ({host['address']} on the internet) -> "
                     f"{host['service']} in {host['domain']}: wg-quick file {host['config']}")
    return lines


def _show_multi(status: dict[str, Any]) -> None:
    out = console()
    out.print(_domains_table(status))
    out.print()
    out.print(_cloud_nodes_table(status))
    out.print(f"internet MTU {status['wan_mtu']}; point nsmctl at a node: "
              'eval "$(nsmctl lab env --node N)"')
    out.print()
    tries: list[str] = []
    out.print(_clients_table(status, tries))
    for line in _guest_lines(status, tries):
        out.print(line)
    if tries:
        out.print()
        out.print("try it (clients: a don't-fragment ping of exactly the vWire's MTU):")
        for line in tries:
            out.print(line)


@lab_app.command()
def status(
    output: Annotated[Output, typer.Option("-o", "--output")] = Output.table,
) -> None:
    """Nodes (namespaces, sockets, processes) and connections of the running lab."""
    if multirun.running_topology() is not None:
        multi = multirun.status()
        if output is not Output.table:
            emit(dump(multi, output).rstrip("\n"))
        else:
            _show_multi(multi)
        return
    current = lab.status()
    if current["nodes"]:
        current = with_live_counters(current)
    if output is not Output.table:
        emit(dump(current, output).rstrip("\n"))
        return
    if not current["nodes"]:
        emit("the lab is down: start it with `nsmctl lab up`")
        return
    _show(current)


@lab_app.command()
def env(
    node: Annotated[int, typer.Option("--node", min=1, max=16, metavar="N",
                                      help="the node whose nsmgr NSMCTL_NSMGR names")] = 1,
) -> None:
    """Print shell lines that point nsmctl at the running lab: eval "$(nsmctl lab env)"."""
    chosen = (multirun.env(node=node) if multirun.running_topology() is not None
              else lab.env(node=node))
    for name, value in chosen.items():
        emit(f"export {name}={shlex.quote(value)}")


@lab_app.command()
def down() -> None:
    """Remove every process, namespace and file the lab made."""
    lab.down(_progress)
    emit("the lab is down")


def register(app: typer.Typer) -> None:
    """Add the ``lab`` command group to the root command."""
    lab_pod_cmds.register(lab_app)
    app.add_typer(lab_app, name="lab")
