"""``nsmctl graph``: the fabric's topology as a tree, JSON, Graphviz DOT or Mermaid.

Which nodes are asked (:func:`sources`):

- ``--lab``: the running lab (``nsmctl lab up``; ``VWIRE_LAB_PREFIX``/``VWIRE_LAB_STATE_DIR``
  apply): its registry and every node's nsmgr, named ``n1``, ``n2``...;
- ``--nsmgr ADDR`` given on the command line (repeatable): those nsmgrs, with ``--registry``;
- otherwise, when ``--registry`` is the running lab's (as after ``eval "$(nsmctl lab env)"``),
  the whole lab, since a user pointed at the lab expects all of it, not only node 1;
- otherwise ``$NSMCTL_NSMGR`` or the node's default nsmgr.

The data is :func:`nsmctl.graph.topology`, which ``nsmctl dashboard`` serves too.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

from lab import run as lab_run
from lab import topology as lab_topology
from nsmctl import graph, graph_render, params
from nsmctl.context import CliError, console, emit, options, run
from nsmctl.node_cmds import DEFAULT_NSMGR
from nsmctl.render import Output, dump


class GraphOutput(StrEnum):
    """The ``-o`` formats of ``graph``."""

    tree = "tree"
    json = "json"
    dot = "dot"
    mermaid = "mermaid"


NsmgrsOpt = Annotated[list[str] | None, typer.Option(
    "--nsmgr", envvar="NSMCTL_NSMGR", metavar="ADDR", callback=lambda v: [
        params.address(a) for a in v] if v else v,
    help="an nsmgr to ask (repeatable): unix:///path.sock or tcp://host:port "
         f"(default {DEFAULT_NSMGR})", show_default=False)]
LabOpt = Annotated[bool, typer.Option(
    "--lab", help="ask the running lab (nsmctl lab up): its registry and every node")]


def lab_sources() -> tuple[str, list[graph.NodeSource]] | None:
    """The running lab's registry and nodes, or None when no lab is up."""
    topology = lab_topology.DEFAULT
    config = lab_run.load_config(topology)
    if config is None:
        return None
    return (f"unix://{topology.registry_socket}",
            [graph.NodeSource(f"unix://{node.nsmgr_socket}", node.name)
             for node in topology.nodes(config.nodes)])


def sources(ctx: typer.Context, lab: bool, nsmgrs: list[str] | None
            ) -> tuple[str, list[graph.NodeSource]]:
    """The registry and the nodes to ask (see the module docstring)."""
    registry = options(ctx).registry
    if lab:
        found = lab_sources()
        if found is None:
            raise CliError("the lab is down: start it with `nsmctl lab up` (or drop --lab)")
        return found
    source = ctx.get_parameter_source("nsmgr")
    given = source is not None and source.name == "COMMANDLINE"
    if not given:
        found = lab_sources()
        if found is not None and found[0] == registry:
            return found
    return registry, [graph.NodeSource(url) for url in (nsmgrs or [DEFAULT_NSMGR])]


def graph_command(
    ctx: typer.Context,
    nsmgr: NsmgrsOpt = None,
    lab: LabOpt = False,
    output: Annotated[GraphOutput, typer.Option(
        "--output", "-o", case_sensitive=False, metavar="tree|json|dot|mermaid",
        help="output format")] = GraphOutput.tree,
) -> None:
    """The topology: the domain's registry, nodes (nsmgr, forwarders), endpoints, clients and
    the vWires between them with their state."""
    registry, nodes = sources(ctx, lab, nsmgr)
    topo = run(graph.topology(registry, nodes, options(ctx).timeout))
    if output is GraphOutput.json:
        emit(dump(topo, Output.json).rstrip("\n"))
    elif output is GraphOutput.dot:
        emit(graph_render.dot(topo).rstrip("\n"))
    elif output is GraphOutput.mermaid:
        emit(graph_render.mermaid(topo).rstrip("\n"))
    else:
        console().print(graph_render.tree(topo))


def register(app: typer.Typer) -> None:
    """Add ``graph`` to the root command."""
    app.command("graph", help=graph_command.__doc__)(graph_command)
