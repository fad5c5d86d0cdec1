"""``nsmctl node join`` and ``nsmctl node leave``: a VM becomes a node of a domain, and stops
being one (:mod:`nsmctl.join` does the work; docs/external.md).

* ``node join --name NODE --identity DIR [--advertise tcp://IP:PORT] [--underlay-interface IF]
  [--root /] [--mode auto|systemd|supervisor] [--netns NAME] [--dry-run]`` (the registry is the
  global ``--registry``) installs the env file, the SVIDs and the two units, then starts them
  (systemd or supervisor) and waits until both serve. ``--dry-run`` prints the files instead.
  A failure removes everything made.
* ``node leave [--root /] [--mode ...]`` stops both (their sockets, links and registrations go
  with them) and removes every file join made.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from nsmctl import join
from nsmctl.context import CliError, options
from sdk.errors import FabricError, InvalidArgument

node_app = typer.Typer(help="This machine as a node of a domain: join, leave.",
                       no_args_is_help=True)

RootOpt = Annotated[Path, typer.Option(
    "--root", metavar="DIR", help="install under this directory (default /)", show_default=False)]
ModeOpt = Annotated[str, typer.Option(
    "--mode", metavar="MODE", help="systemd, supervisor (detached processes with pid files) or "
    "auto (systemd when it runs and --root is /)", show_default=False)]


@node_app.command("join")
def join_command(
    ctx: typer.Context,
    name: Annotated[str, typer.Option("--name", metavar="NODE", help="this node's name")],
    identity: Annotated[Path, typer.Option(
        "--identity", metavar="DIR", help="SVID directories DIR/nsmgr and DIR/forwarder "
        "(nsmctl ca issue --out)")],
    advertise: Annotated[str, typer.Option(
        "--advertise", metavar="URL", help="tcp://IP:PORT other nodes reach this nsmgr at "
        "(none: it serves this node only)")] = "",
    underlay_interface: Annotated[str, typer.Option(
        "--underlay-interface", metavar="IF", help="interface carrying tunnels (default eth0)",
        show_default=False)] = "eth0",
    root: RootOpt = Path("/"),
    mode: ModeOpt = "auto",
    netns: Annotated[str, typer.Option(
        "--netns", metavar="NAME", help="run nsmgr and forwarder in this network namespace "
        "(NetworkNamespacePath=)")] = "",
    python: Annotated[str, typer.Option(
        "--python", metavar="PATH", help="the Python that runs them (default: nsmctl's own)",
        show_default=False)] = "",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the files, change nothing")
                       ] = False,
) -> None:
    """Install and start this machine's nsmgr and forwarder as a node of the domain."""
    plan = join.JoinPlan(name, options(ctx).registry, identity, root, python or sys.executable,
                         advertise, underlay_interface, netns)
    try:
        join.validate(plan)
        chosen = join.choose_mode(mode, root)
    except InvalidArgument as exc:
        raise typer.BadParameter(str(exc)) from None
    if dry_run:
        layout = join.Layout(root)
        typer.echo(f"# {layout.env_file}\n{join.render_env(join.environment(plan))}")
        for unit, text in join.render_units(plan).items():
            typer.echo(f"# {layout.units / unit}\n{text}")
        return
    join.install(plan)
    try:
        if chosen == "systemd":
            join.systemctl("daemon-reload")
            join.systemctl("enable", "--now", *join.UNITS)
        else:
            join.start(root)
    except (FabricError, OSError) as exc:
        join.uninstall(root)
        raise CliError(f"node {name} did not start ({exc}): nothing was left installed") from None
    typer.echo(f"node {name} joined ({chosen}): nsmgr and forwarder running; workloads connect "
               f"with: nsmctl connect URL --nsmgr unix://{join.Layout(root).run / 'nsmgr.sock'}")


@node_app.command("leave")
def leave_command(root: RootOpt = Path("/"), mode: ModeOpt = "auto") -> None:
    """Stop this machine's nsmgr and forwarder and remove everything join installed."""
    try:
        chosen = join.choose_mode(mode, root)
    except InvalidArgument as exc:
        raise typer.BadParameter(str(exc)) from None
    manifest = join.installed(root)
    if manifest is None:
        raise CliError(f"no node is installed under {root}: nothing to leave")
    if chosen == "systemd":
        join.systemctl("disable", "--now", *join.UNITS)
    else:
        join.stop(root)
    join.uninstall(root)
    if chosen == "systemd":
        join.systemctl("daemon-reload")
    typer.echo(f"node {manifest.get('node', '?')} left: its processes stopped and its files "
               "removed")


def register(app: typer.Typer) -> None:
    """Add the ``node`` command group to the root command."""
    app.add_typer(node_app, name="node")
