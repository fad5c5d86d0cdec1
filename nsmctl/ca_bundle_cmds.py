"""``nsmctl ca bundle export|list`` and ``nsmctl ca federate``: trust across domains.

Each domain has its own CA and trust domain. Two domains federate by exchanging their bundles:

* ``ca bundle export [--out F]`` prints (or writes, mode 0644) this CA's trust bundle: the PEM
  of its roots (current and, after a rotation, previous). The trust domain is in every root's
  URI SAN (``spiffe://<td>``), so the file names its trust domain by itself — the same PEM form
  SPIRE's ``bundle show -format pem`` prints.
* ``ca federate --bundle F [--trust-domain TD]`` checks F (:func:`sdk.security.federation.
  foreign_bundle`: roots of one foreign trust domain, CA certificates, not expired) and stores
  it as ``federated/<td>.pem`` in the CA's directory, replacing that trust domain's earlier
  bundle; ``--trust-domain`` names it for roots without a SPIFFE URI SAN (and must agree with
  roots that have one). ``ca federate --remove TD`` forgets a trust domain. A running ``ca
  agent`` copies the CA's federated bundles into every SVID directory on its next pass, and the
  node agent hands them to workloads with their SVIDs; processes pick them up without a restart.
* ``ca bundle list [-o table|json|yaml]`` shows the local and the federated trust domains with
  each root's SHA-256 fingerprint and expiry.

Bad input exits 1 with one line naming the option and the fix; nothing is changed then.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated, Any

import typer
from cryptography.hazmat.primitives import hashes

from nsmctl.context import CliError, emit
from nsmctl.render import Output, dump
from sdk.errors import InvalidArgument, NotFound
from sdk.security.ca import CertificateAuthority
from sdk.security.federation import foreign_bundle
from sdk.security.svid import TrustBundle, write_public

MAX_BUNDLE_FILE = 1 << 20

bundle_app = typer.Typer(help="This CA's trust bundle: export it, list what is trusted.",
                         no_args_is_help=True)


def _when(stamp: float) -> str:
    return dt.datetime.fromtimestamp(stamp, tz=dt.UTC).isoformat(timespec="seconds")


def _load(directory: Path) -> CertificateAuthority:
    try:
        return CertificateAuthority.load(directory)
    except InvalidArgument as exc:
        raise CliError(f"--dir {directory}: {exc}") from None


def export(directory: Path, out: Path | None) -> None:
    """Print or write this CA's bundle (see the module docstring)."""
    ca = _load(directory)
    pem = ca.bundle.pem()
    if out is None:
        typer.echo(pem.decode(), nl=False)
        return
    write_public(out, pem)
    count = len(ca.bundle.roots)
    emit(f"wrote the bundle of trust domain {ca.trust_domain} ({count} root"
         f"{'' if count == 1 else 's'}) to {out}: import it in another domain with "
         f"'nsmctl ca federate --dir CA --bundle {out.name}'")


def _read_bundle(path: Path) -> bytes:
    try:
        with path.open("rb") as file:
            data = file.read(MAX_BUNDLE_FILE + 1)
    except OSError as exc:
        raise CliError(f"--bundle {path}: cannot be read ({exc.strerror})") from None
    if len(data) > MAX_BUNDLE_FILE:
        raise CliError(f"--bundle {path}: larger than {MAX_BUNDLE_FILE} bytes; a bundle is a "
                       "few root certificates")
    return data


def federate(
    directory: Path, bundle: Path | None, trust_domain: str | None, remove: str | None
) -> None:
    """Add, replace or remove a foreign trust domain's bundle (see the module docstring)."""
    if (bundle is None) == (remove is None):
        raise CliError("give --bundle FILE (add or replace a trust domain) or --remove TD")
    ca = _load(directory)
    if remove is not None:
        try:
            ca.unfederate(remove)
        except NotFound as exc:
            raise CliError(f"--remove: {exc}") from None
        emit(f"{ca.trust_domain} no longer federates with {remove}: a running 'nsmctl ca agent' "
             "removes its bundle from every SVID directory on its next pass")
        return
    assert bundle is not None
    try:
        foreign = foreign_bundle(_read_bundle(bundle), ca.trust_domain, trust_domain, "--bundle")
    except InvalidArgument as exc:
        raise CliError(f"--bundle {bundle}: {exc.problem}") from None
    replaced = ca.trust.bundle_for(foreign.trust_domain) is not None
    ca.federate(foreign)
    count = len(foreign.roots)
    emit(f"{'replaced the bundle of' if replaced else 'federated with'} trust domain "
         f"{foreign.trust_domain} ({count} root{'' if count == 1 else 's'}): a running "
         "'nsmctl ca agent' delivers it to every SVID directory on its next pass")


def _rows(ca: CertificateAuthority) -> list[dict[str, Any]]:
    def row(bundle: TrustBundle, local: bool) -> dict[str, Any]:
        return {
            "trust_domain": bundle.trust_domain,
            "local": local,
            "roots": [
                {"sha256": root.fingerprint(hashes.SHA256()).hex(),
                 "not_after": _when(root.not_valid_after_utc.timestamp())}
                for root in bundle.roots
            ],
        }

    return [row(ca.bundle, True), *(row(b, False) for b in
                                     sorted(ca.federated, key=lambda b: b.trust_domain))]


def list_bundles(directory: Path, output: Output) -> None:
    """Show the trust domains this CA trusts (see the module docstring)."""
    rows = _rows(_load(directory))
    if output is not Output.table:
        emit(dump(rows, output).rstrip("\n"))
        return
    shown = [("TRUST DOMAIN", "ROLE", "ROOT SHA-256", "NOT AFTER")]
    for row in rows:
        role = "local" if row["local"] else "federated"
        shown += [(row["trust_domain"], role, root["sha256"][:16], root["not_after"])
                  for root in row["roots"]]
    widths = [max(len(line[i]) for line in shown) for i in range(4)]
    for line in shown:
        emit("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())


BundleOpt = Annotated[Path | None, typer.Option(
    "--bundle", metavar="FILE", help="a foreign trust domain's bundle (PEM roots)")]
TrustDomainOpt = Annotated[str | None, typer.Option(
    "--trust-domain", metavar="TD", help="its trust domain, for roots that do not name one")]
RemoveOpt = Annotated[str | None, typer.Option(
    "--remove", metavar="TD", help="stop trusting this foreign trust domain")]
OutOpt = Annotated[Path | None, typer.Option(
    "--out", metavar="FILE", help="write the bundle here (default: print it)")]
OutputOpt = Annotated[Output, typer.Option("-o", "--output", help="table, json or yaml")]
