"""``nsmctl ca``: create the built-in CA of a trust domain and issue SVIDs from it.

Every command works on the CA in ``--dir``: by default :data:`DEFAULT_CA_DIR`, or
``$VWIRE_CA_DIR`` (``nsmctl lab env`` sets it to the lab's CA).
``ca init --trust-domain D [--dir DIR]`` creates the root (key mode 0600) and bundle;
``ca issue --spiffe-id spiffe://D/KIND/NAME [--dns NAME]... [--ttl 1h] --out DIR`` writes
``svid.crt``, ``svid.key`` (0600) and ``bundle.pem`` into DIR (atomically, so a running process
reading DIR with a file SVID source picks the new SVID up) and records, in the CA's directory,
that DIR is for that SPIFFE ID and those DNS names;
``ca agent --svids ROOT [--ttl 1h] [--interval 10s] [--once]`` keeps every SVID under ROOT
renewed (:mod:`sdk.security.renew`): each is re-issued at half its lifetime, and after
``ca rotate-root`` first every bundle is updated, then (next pass) every SVID re-issued from the
new root, so processes never run on an expired SVID nor meet a root they do not trust yet. The
agent re-issues only certificates the CA signed, whose key is in the directory, to the identity
recorded for the directory; it reports any other as refused, with the reason. The agent also
copies the CA's federated bundles (``federated/<td>.pem``) into every SVID directory.
``ca federate``, ``ca bundle export`` and ``ca bundle list``: trust across domains
(:mod:`nsmctl.ca_bundle_cmds`). Output never shows key material.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from pathlib import Path
from typing import Annotated, Any

import typer

from nsmctl import ca_bundle_cmds, params
from nsmctl.context import CliError
from nsmctl.render import Output
from sdk.errors import FabricError, InvalidArgument
from sdk.security.ca import MAX_SVID_TTL, CertificateAuthority
from sdk.security.federation import write_svid_set
from sdk.security.renew import DEFAULT_FRACTION, Renewal, keep_renewed, renew_due
from sdk.security.svid import CERT_FILE, load_certificates, server_names

DEFAULT_CA_DIR = "/var/lib/vwire/ca"
CA_DIR_ENV = "VWIRE_CA_DIR"

CaDir = Annotated[Path, typer.Option(
    "--dir", envvar=CA_DIR_ENV, metavar="DIR",
    help="the CA's directory")]

ca_app = typer.Typer(help="The built-in certificate authority: init, issue SVIDs, federate.",
                     no_args_is_help=True)


def _duration(flag: str, what: str, at_most: float = params.MAX_DURATION) -> Any:
    """A duration option (:func:`nsmctl.params.duration`: a bad value exits 2 naming it)."""
    return typer.Option(flag, metavar="DURATION", callback=params.duration_at_most(at_most),
                        help=f"{what}: e.g. 90s, 30m, 1h, 7d")


def _when(stamp: float) -> str:
    return dt.datetime.fromtimestamp(stamp, tz=dt.UTC).isoformat(timespec="seconds")


@ca_app.command("init")
def init(
    trust_domain: Annotated[str, typer.Option("--trust-domain", metavar="TD",
                                              help="e.g. example.org")],
    directory: CaDir = Path(DEFAULT_CA_DIR),
) -> None:
    """Create a CA (EC P-256 root) for a trust domain in DIR."""
    try:
        ca = CertificateAuthority.init(directory, trust_domain)
    except InvalidArgument as exc:
        raise CliError(f"--trust-domain: {exc.problem}") from None
    typer.echo(f"created CA for trust domain {ca.trust_domain} in {directory}")
    typer.echo(f"root valid until {_when(ca.root.not_valid_after_utc.timestamp())}")
    typer.echo(f"bundle (distribute to every node): {directory / 'bundle.pem'}")


@ca_app.command("issue")
def issue(
    spiffe_id: Annotated[str, typer.Option("--spiffe-id", metavar="SPIFFE-ID",
                                           help="spiffe://TD/KIND/NAME")],
    out: Annotated[Path, typer.Option("--out", metavar="DIR",
                                      help="directory for svid.crt/svid.key/bundle.pem")],
    dns: Annotated[list[str] | None, typer.Option("--dns", metavar="NAME",
                                                  help="DNS SAN (servers); repeatable")] = None,
    ttl: Annotated[str, _duration("--ttl", "lifetime", MAX_SVID_TTL)] = "1h",
    directory: CaDir = Path(DEFAULT_CA_DIR),
) -> None:
    """Issue an X.509 SVID signed by the CA in --dir and write it to --out."""
    seconds = params.seconds(ttl)
    ca = CertificateAuthority.load(directory)
    try:
        svid = ca.issue(spiffe_id, dns or (), seconds)
    except InvalidArgument as exc:
        flag = {"spiffe_id": "--spiffe-id", "dns": "--dns", "ttl": "--ttl"}.get(exc.field)
        raise CliError(f"{flag or exc.field}: {exc.problem}") from None
    write_svid_set(out, svid, ca.trust)  # with the federated bundles, if any
    ca.assign(out, svid.spiffe_id, server_names(svid.leaf))  # what the agent holds DIR to
    typer.echo(f"issued {svid.spiffe_id} (serial {svid.serial:x}) valid until "
               f"{_when(svid.not_after)}")
    typer.echo(f"wrote {out / 'svid.crt'}, {out / 'svid.key'} (mode 0600), {out / 'bundle.pem'}")


def _report(renewal: Renewal) -> None:
    if renewal.what == "refused":
        typer.echo(f"refused {renewal.directory} (claims {renewal.spiffe_id}): {renewal.reason}",
                   err=True)
        return
    if renewal.what == "bundle":
        typer.echo(f"updated the trust bundle of {renewal.spiffe_id} in {renewal.directory}")
        return
    if renewal.what == "federated":
        typer.echo(f"updated the federated bundles of {renewal.spiffe_id} in "
                   f"{renewal.directory}")
        return
    typer.echo(f"renewed {renewal.spiffe_id} in {renewal.directory} until "
               f"{_when(renewal.not_after)}")


def _nothing_due(svids: Path) -> str:
    """What ``agent --once`` says when it renewed nothing: until when every SVID is valid."""
    ends, dues = [], []
    for cert_file in svids.rglob(CERT_FILE):
        with contextlib.suppress(OSError, FabricError, ValueError):
            leaf = load_certificates(cert_file.read_bytes(), str(cert_file))[0]
            start, end = (leaf.not_valid_before_utc.timestamp(),
                          leaf.not_valid_after_utc.timestamp())
            ends.append(end)
            dues.append(start + DEFAULT_FRACTION * (end - start))
    if not ends:
        return f"nothing due: no SVID under {svids}"
    count = f"{len(ends)} SVID{'' if len(ends) == 1 else 's'}"
    return (f"nothing due: every SVID is valid past {_when(min(ends))}; the next renewal is due "
            f"at {_when(min(dues))} ({count} under {svids})")


@ca_app.command("rotate-root")
def rotate_root(
    directory: CaDir = Path(DEFAULT_CA_DIR),
    root_ttl: Annotated[str, _duration("--root-ttl", "lifetime of the new root")] = "3650d",
) -> None:
    """Make a new root; the bundle holds the new and the previous root until the next rotation.
    A running ``ca agent`` then updates every bundle, and on its next pass re-issues the SVIDs."""
    ca = CertificateAuthority.load(directory)
    ca.rotate_root(params.seconds(root_ttl))
    typer.echo(f"new root for {ca.trust_domain}, valid until "
               f"{_when(ca.root.not_valid_after_utc.timestamp())}; the bundle holds "
               f"{len(ca.bundle.roots)} roots: {directory / 'bundle.pem'}")


@ca_app.command("agent")
def agent(
    svids: Annotated[Path, typer.Option("--svids", metavar="ROOT",
                                        help="directory tree holding SVID directories")],
    ttl: Annotated[str, _duration("--ttl", "lifetime of renewed SVIDs", MAX_SVID_TTL)] = "1h",
    interval: Annotated[str, _duration("--interval", "how often to check")] = "10s",
    once: Annotated[bool, typer.Option("--once", help="check once and exit")] = False,
    directory: CaDir = Path(DEFAULT_CA_DIR),
) -> None:
    """Keep every SVID under --svids renewed from the CA (at half their lifetime)."""
    seconds, every = params.seconds(ttl), params.seconds(interval)
    if seconds <= 2 * every:
        raise CliError("--interval must be positive and under half of --ttl (renewals happen at "
                       "half the lifetime, so a check must come before the SVID expires)")
    ca = CertificateAuthority.load(directory)  # fails here, with the reason, when unusable
    if not svids.is_dir():
        raise CliError(f"--svids: {svids} is not a directory")
    if once:
        done = renew_due(ca, svids, seconds)
        for renewal in done:
            _report(renewal)
        if not done:
            typer.echo(_nothing_due(svids))
        return
    typer.echo(f"keeping the SVIDs under {svids} renewed (ttl {ttl}, checking every {interval})")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(keep_renewed(lambda: CertificateAuthority.load(directory), svids, seconds,
                                 every, _report))


@ca_app.command("federate")
def federate(
    bundle: ca_bundle_cmds.BundleOpt = None,
    trust_domain: ca_bundle_cmds.TrustDomainOpt = None,
    remove: ca_bundle_cmds.RemoveOpt = None,
    directory: CaDir = Path(DEFAULT_CA_DIR),
) -> None:
    """Trust a foreign trust domain's bundle (--bundle FILE, added or replaced), or stop
    trusting one (--remove TD)."""
    ca_bundle_cmds.federate(directory, bundle, trust_domain, remove)


@ca_bundle_cmds.bundle_app.command("export")
def bundle_export(
    out: ca_bundle_cmds.OutOpt = None,
    directory: CaDir = Path(DEFAULT_CA_DIR),
) -> None:
    """Print (or write with --out) this CA's trust bundle, for other domains to federate."""
    ca_bundle_cmds.export(directory, out)


@ca_bundle_cmds.bundle_app.command("list")
def bundle_list(
    output: ca_bundle_cmds.OutputOpt = Output.table,
    directory: CaDir = Path(DEFAULT_CA_DIR),
) -> None:
    """The local and federated trust domains, with each root's fingerprint and expiry."""
    ca_bundle_cmds.list_bundles(directory, output)


ca_app.add_typer(ca_bundle_cmds.bundle_app, name="bundle")


def register(app: typer.Typer) -> None:
    """Add the ``ca`` command group to the root command."""
    app.add_typer(ca_app, name="ca")
