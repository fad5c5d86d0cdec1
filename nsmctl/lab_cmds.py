"""``nsmctl lab up|status|env|down``: the local multi-node lab (see :mod:`lab`).

``lab env`` prints ``export`` lines (``NSMCTL_REGISTRY``, ``NSMCTL_NSMGR``, ``VWIRE_CA_DIR``) so
that ``eval "$(nsmctl lab env)"`` points every later nsmctl command at the lab."""

from __future__ import annotations

import shlex
from enum import StrEnum
from typing import Annotated, Any

import typer
from rich.table import Table

from lab import run as lab
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
) -> None:
    """Build the lab, wait until the client's vWire passes traffic, and show it."""
    lab.up(lab.LabConfig(nodes=nodes, services=services or ["secure-db"],
                         registry_store=registry_store.value), _progress)
    _show(with_live_counters(lab.status()))


@lab_app.command()
def status(
    output: Annotated[Output, typer.Option("-o", "--output")] = Output.table,
) -> None:
    """Nodes (namespaces, sockets, processes) and connections of the running lab."""
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
    for name, value in lab.env(node=node).items():
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
