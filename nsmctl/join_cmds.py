"""``nsmctl node join`` and ``nsmctl node leave``: a VM becomes a node of a domain, and stops
being one (:mod:`nsmctl.join` does the work; docs/external.md).

* ``node join --name NODE --identity DIR [--advertise tcp://IP:PORT] [--underlay-interface IF]
  [--root /] [--mode auto|systemd|supervisor] [--netns NAME] [--dry-run]`` (the registry is the
  global ``--registry``) installs the env file, the SVIDs and the two units, then starts them
  (systemd or supervisor) and waits until both serve. ``--dry-run`` prints the files instead.
  A failure removes everything made.
* ``node token create --dir CA --node NODE [--ttl 1h]`` (where the CA is) prints a one-time join
  token; ``node signer --dir CA --listen tcp://HOST:PORT`` serves join requests
  (:mod:`nsmctl.joinsigner`); ``node join --token TOKEN --signer tcp://HOST:PORT`` makes the
  node's keys on the node and gets its SVIDs for the token instead of ``--identity``.
* ``node renew --signer tcp://HOST:PORT [--root /] [--once]`` renews the node's SVIDs at half
  their lifetime (new keys, authenticated by the current nsmgr SVID); a node that joined by
  token gets it as a third unit, ``vwire-renew.service``.
* ``node join --role gateway --name NODE --domain D [--trust-domain TD] [--ca-dir DIR]
  [--domains-file FILE] [--gateway-port 5005] [--signer-port 5006]`` (the global ``--registry``
  is tcp://PRIVATE-IP:PORT, where this node's registry listens) makes the node its domain's
  gateway node: CA (made here when none), registry, gateway, join signer and CA agent as units
  beside nsmgr and forwarder (:mod:`nsmctl.join_domain`); no --identity or --token.
* ``node leave [--root /] [--mode ...] [--purge-ca]`` stops both (their sockets, links and
  registrations go with them) and removes every file join made; a gateway node's CA stays
  unless ``--purge-ca``.
"""

from __future__ import annotations

import datetime as dt
import signal
import sys
import tempfile
import threading
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from nsmctl import join, join_domain, params
from nsmctl.ca_cmds import DEFAULT_CA_DIR, CaDir
from nsmctl.context import CliError, options
from nsmctl.joinsigner import (
    DEFAULT_TTL,
    JoinSigner,
    fetch_identity,
    pin_of,
    renew_due,
    renew_identity,
)
from nsmctl.jointoken import JoinToken, TokenStore
from sdk.errors import FabricError, InvalidArgument
from sdk.security.ca import CertificateAuthority

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
    name: Annotated[str, typer.Option("--name", metavar="NODE",
                                      help="this node's name (default: the token's)")] = "",
    identity: Annotated[Path | None, typer.Option(
        "--identity", metavar="DIR", help="SVID directories DIR/nsmgr and DIR/forwarder "
        "(nsmctl ca issue --out)")] = None,
    token: Annotated[str, typer.Option(
        "--token", metavar="TOKEN", envvar="VWIRE_JOIN_TOKEN", show_envvar=False,
        help="instead of --identity: a join token (nsmctl node token create); keys are made "
        "here [VWIRE_JOIN_TOKEN]")] = "",
    signer: Annotated[str, typer.Option(
        "--signer", metavar="URL", help="with --token: the join signer, tcp://HOST:PORT")] = "",
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
    setting: Annotated[list[str] | None, typer.Option(
        "--setting", metavar="VARIABLE=VALUE", help="another nsmgr or forwarder setting, e.g. "
        "VWIRE_NSMGR_DOMAIN=aws or VWIRE_FORWARDER_SITE=aws; repeatable")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the files, change nothing")
                       ] = False,
    role: Annotated[str, typer.Option(
        "--role", metavar="ROLE", help="node, or gateway: this node also runs its domain's CA, "
        "registry, gateway and join signer", show_default=False)] = "node",
    domain: Annotated[str, typer.Option(
        "--domain", metavar="NAME", help="with --role gateway: the domain it serves (default: "
        "the VWIRE_NSMGR_DOMAIN setting)", show_default=False)] = "",
    trust_domain: Annotated[str, typer.Option(
        "--trust-domain", metavar="TD", help="with --role gateway: the CA's trust domain "
        "(default: the domain's name)", show_default=False)] = "",
    ca_dir: Annotated[Path | None, typer.Option(
        "--ca-dir", metavar="DIR", help="with --role gateway: the domain's CA, made there when "
        "none exists (default ROOT/etc/vwire/ca)", show_default=False)] = None,
    domains_file: Annotated[str, typer.Option(
        "--domains-file", metavar="FILE", help="with --role gateway: the other domains' "
        "gateways (YAML)")] = "",
    gateway_port: Annotated[int, typer.Option(
        "--gateway-port", metavar="PORT", help="with --role gateway: the gateway's TCP port "
        "(default 5005)", show_default=False)] = 5005,
    signer_port: Annotated[int, typer.Option(
        "--signer-port", metavar="PORT", help="with --role gateway: the join signer's TCP port "
        "(default 5006)", show_default=False)] = 5006,
) -> None:
    """Install and start this machine's nsmgr and forwarder as a node of the domain (with
    --role gateway, the domain's own services too)."""
    try:
        if role not in join_domain.ROLES:
            raise InvalidArgument("--role", f"{role[:40]!r}: use node or gateway")
        settings = join.parse_settings(setting or [])
        if role == "gateway":
            parsed = None
            domain_plan = _domain_plan(options(ctx).registry, dict(settings), domain,
                                       trust_domain, ca_dir or join.Layout(root).etc / "ca",
                                       (gateway_port, signer_port), domains_file,
                                       (identity, token, signer))
        else:
            parsed, name = _identity_source(identity, token, signer, name)
            domain_plan = None
        plan = join.JoinPlan(name, options(ctx).registry, identity or Path("/nonexistent"),
                             root, python or sys.executable, advertise, underlay_interface,
                             netns, settings=settings, signer=signer if token else "",
                             role=role, domain=domain_plan)
        join.validate(plan, identity=parsed is None)
        chosen = join.choose_mode(mode, root)
    except InvalidArgument as exc:
        raise typer.BadParameter(str(exc)) from None
    if dry_run:
        layout = join.Layout(root)
        typer.echo(f"# {layout.env_file}\n{join.render_env(join.environment(plan))}")
        for unit, text in join.render_units(plan).items():
            typer.echo(f"# {layout.units / unit}\n{text}")
        return
    if parsed is None:
        _install_and_start(plan, chosen)
    else:
        with tempfile.TemporaryDirectory(prefix="vwire-join-") as fetched:
            fetch_identity(parsed, signer, Path(fetched), options(ctx).timeout)
            _install_and_start(replace(plan, identity=Path(fetched)), chosen)
    if domain_plan is not None:
        typer.echo(f"domain {domain_plan.domain} served here: CA {domain_plan.ca_dir} "
                   f"({domain_plan.trust_domain}), registry tcp://{domain_plan.address}:"
                   f"{domain_plan.registry_port}, gateway {domain_plan.gateway_url}, join signer "
                   f"tcp://{domain_plan.address}:{domain_plan.signer_port}")
    typer.echo(f"node {name} joined ({chosen}): nsmgr and forwarder running; workloads connect "
               f"with: nsmctl connect URL --nsmgr unix://{join.Layout(root).run / 'nsmgr.sock'}")


def _domain_plan(registry: str, settings: dict[str, str], domain: str, trust_domain: str,
                 ca_dir: Path, ports: tuple[int, int], domains_file: str,
                 identity_options: tuple[Path | None, str, str]) -> join_domain.DomainPlan:
    """A gateway node's domain services (InvalidArgument naming the option)."""
    if any(identity_options):
        raise InvalidArgument("--identity", "a gateway node issues its own SVIDs from its "
                              "domain's CA: give neither --identity nor --token/--signer")
    return join_domain.plan_for(registry, domain or settings.get("VWIRE_NSMGR_DOMAIN", ""),
                                trust_domain, ca_dir, ports, domains_file,
                                settings.get("VWIRE_FORWARDER_EXTERNAL_ADDRESS", ""))


def _identity_source(identity: Path | None, token: str, signer: str,
                     name: str) -> tuple[JoinToken | None, str]:
    """(the parsed token, or None with --identity; the node's name)."""
    if (identity is None) == (not token):
        raise InvalidArgument("--identity", "give --identity DIR, or --token and --signer")
    if not token:
        if signer:
            raise InvalidArgument("--signer", "only with --token")
        return None, name
    parsed = JoinToken.parse(token)
    if not signer:
        raise InvalidArgument("--signer", "give the join signer's address, tcp://HOST:PORT")
    if name and name != parsed.node:
        raise InvalidArgument("--name", f"the token is for node {parsed.node!r}")
    return parsed, parsed.node


def _install_and_start(plan: join.JoinPlan, chosen: str) -> None:
    join.install(plan)
    try:
        if chosen == "systemd":
            join.systemctl("daemon-reload")
            join.systemctl("enable", "--now", *join.installed_units(plan.root))
        else:
            join.start(plan.root)
    except (FabricError, OSError) as exc:
        join.uninstall(plan.root, purge_ca=True)  # only a CA this join made
        raise CliError(f"node {plan.name} did not start ({exc}): nothing was left installed"
                       ) from None


@node_app.command("renew")
def renew_command(
    signer: Annotated[str, typer.Option("--signer", metavar="URL",
                                        help="the join signer, tcp://HOST:PORT")],
    root: RootOpt = Path("/"),
    once: Annotated[bool, typer.Option("--once", help="check (and renew) once, then exit")
                    ] = False,
    interval: Annotated[str, typer.Option("--interval", metavar="DURATION",
                                          callback=params.duration,
                                          help="how often to check (default 5m)",
                                          show_default=False)] = "5m",
) -> None:
    """Keep this node's SVIDs renewed from the join signer (at half their lifetime), with new
    keys made here; nsmgr and forwarder pick the new files up without a restart."""
    identity = join.Layout(root).identity
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while True:
        try:
            if renew_due(identity):
                node = renew_identity(signer, identity)
                typer.echo(f"renewed the SVIDs of node {node}")
        except FabricError as exc:
            if once:
                raise
            typer.echo(f"renewal failed, retrying in {interval}: {exc}", err=True)
        if once or stop.wait(params.seconds(interval)):
            return


token_app = typer.Typer(help="One-time join tokens for VMs.", no_args_is_help=True)
node_app.add_typer(token_app, name="token")


@token_app.command("create")
def token_create(
    node: Annotated[str, typer.Option("--node", metavar="NODE", help="the node it admits")],
    ttl: Annotated[str, typer.Option("--ttl", metavar="DURATION", callback=params.duration,
                                     help="how long it may be used (default 1h, at most 24h)",
                                     show_default=False)] = "1h",
    directory: CaDir = Path(DEFAULT_CA_DIR),
) -> None:
    """Make a one-time join token for NODE (keep it secret; it is shown once)."""
    ca = CertificateAuthority.load(directory)
    seconds = params.seconds(ttl)
    made = TokenStore(directory).create(node, ca.trust_domain, pin_of(ca.root), seconds)
    typer.echo(made.text())
    until = dt.datetime.fromtimestamp(dt.datetime.now().timestamp() + seconds, dt.UTC)
    typer.echo(f"# one use, for node {node}, until {until:%Y-%m-%dT%H:%M:%SZ}", err=True)


@node_app.command("signer")
def signer_command(
    listen: Annotated[str, typer.Option("--listen", metavar="URL",
                                        help="tcp://HOST:PORT to serve join requests on")],
    ttl: Annotated[str, typer.Option("--ttl", metavar="DURATION", callback=params.duration,
                                     help="lifetime of the SVIDs it signs (default 24h)",
                                     show_default=False)] = f"{DEFAULT_TTL / 3600:g}h",
    directory: CaDir = Path(DEFAULT_CA_DIR),
) -> None:
    """Sign joining nodes' certificate requests for their join tokens until SIGTERM/SIGINT."""
    try:
        signer = JoinSigner(directory, listen, params.seconds(ttl))
    except InvalidArgument as exc:
        raise typer.BadParameter(str(exc)) from None
    wanted = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, wanted)
    port = signer.start()
    typer.echo(f"join signer for {signer.ca.trust_domain} on {signer.address.host}:{port}")
    try:
        signal.sigwait(wanted)
    finally:
        signer.stop()
        signal.pthread_sigmask(signal.SIG_UNBLOCK, wanted)


@node_app.command("leave")
def leave_command(
    root: RootOpt = Path("/"),
    mode: ModeOpt = "auto",
    purge_ca: Annotated[bool, typer.Option(
        "--purge-ca", help="a gateway node: remove its domain's CA too, if join made it")
                        ] = False,
) -> None:
    """Stop this machine's nsmgr and forwarder (a gateway node's domain services too) and remove
    everything join installed; a gateway node's CA stays unless --purge-ca."""
    try:
        chosen = join.choose_mode(mode, root)
    except InvalidArgument as exc:
        raise typer.BadParameter(str(exc)) from None
    manifest = join.installed(root)
    if manifest is None:
        raise CliError(f"no node is installed under {root}: nothing to leave")
    if chosen == "systemd":
        join.systemctl("disable", "--now", *join.installed_units(root))
    else:
        join.stop(root)
    ca_dir = join.ca_kept(root)
    join.uninstall(root, purge_ca)
    if chosen == "systemd":
        join.systemctl("daemon-reload")
    typer.echo(f"node {manifest.get('node', '?')} left: its processes stopped and its files "
               "removed")
    if ca_dir and Path(ca_dir).exists():
        typer.echo(f"the domain's CA stays in {ca_dir} (remove it with --purge-ca)")


def register(app: typer.Typer) -> None:
    """Add the ``node`` command group to the root command."""
    app.add_typer(node_app, name="node")
