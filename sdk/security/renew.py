"""Keeping file SVIDs fresh: re-issue the SVIDs under a directory before they expire.

The fabric's processes read their SVIDs from files (:class:`sdk.security.source.FileSvidSource`)
and pick up new ones without a restart; this module is what writes the new ones, for a node or a
lab that uses the built-in CA (where SPIRE is used, its agent does this job).

Contract of :func:`renew_due`: every directory under ``root`` (searched recursively) that holds
an ``svid.crt`` is checked. First, that the agent may touch it at all — it re-issues only what
the CA issued, only to whom the CA issued it:

* ``svid.crt`` must carry the CA's signature (current or previous root; expired is fine). A
  self-signed or foreign certificate claiming any identity is refused;
* ``svid.key`` must be the private key of that certificate. Certificates are public: a copy of
  another component's certificate in a directory of one's own does not make the agent hand out
  a fresh key for that component's identity;
* the certificate's SPIFFE ID and DNS names must be those recorded for the directory
  (:meth:`sdk.security.ca.CertificateAuthority.assignment`): ``nsmctl ca issue --out DIR``
  records them; a directory without a record (SVIDs written by other tools, such as the lab's)
  is recorded on the first pass that finds a certificate passing the two checks above, and held
  to it from then on. A mismatch (say, a valid certificate of another identity copied over the
  directory's own) is refused. Re-issuing always uses the recorded names.

A refused directory is left untouched, logged as a warning with the reason and the fix, and
reported as a ``refused`` :class:`Renewal`. The rest goes in steps so that a root rotation
never breaks a handshake or a path token:

1. if its ``bundle.pem`` is not the CA's current bundle (the root was rotated), only the bundle
   is replaced this pass (it holds the new and the previous root, so the old SVID stays valid)
   — every process learns to trust the new root before anyone presents it;
2. the foreign trust domains' bundles (``federated/<td>.pem``, :mod:`sdk.security.federation`)
   are made the CA's federated bundles: new and changed ones written, removed ones deleted — so
   ``nsmctl ca federate`` reaches every process on the agent's next pass (reported as
   ``federated``); then
3. the SVID is re-issued from ``ca`` — same SPIFFE ID, same DNS names, lifetime ``ttl`` — when
   it has lived ``fraction`` (default half) of its lifetime, has expired, or was not issued by
   the CA's current root (so after a rotation, the pass after the bundle update).

Files are replaced atomically. A directory that cannot be read or renewed is logged and skipped;
the others are still handled. Returns what was done, as :class:`Renewal` values.
:func:`keep_renewed` runs it every ``interval`` seconds until cancelled (longer than the file
sources' poll, one second), re-reading the CA each time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from sdk.errors import FabricError, PermissionDenied
from sdk.security.ca import Assignment, CertificateAuthority
from sdk.security.federation import write_federated
from sdk.security.svid import (
    BUNDLE_FILE,
    CERT_FILE,
    KEY_FILE,
    load_certificates,
    load_private_key,
    server_names,
    spiffe_id_of,
    write_public,
    write_svid,
)

_log = structlog.get_logger("sdk.security.renew")

DEFAULT_FRACTION = 0.5


@dataclass(frozen=True)
class Renewal:
    """One SVID re-issued: where, for whom, and until when."""

    directory: Path
    spiffe_id: str
    not_after: float
    #: "bundle": only the trust bundle was replaced; "federated": the foreign trust domains'
    #: bundles were brought in line with the CA's; "refused": nothing done
    what: str = "svid"
    reason: str = ""  # why it was refused


class Refused(PermissionDenied):
    """The agent may not re-issue the SVID of a directory (see the module docstring)."""


def _check(ca: CertificateAuthority, directory: Path, leaf: x509.Certificate) -> Assignment:
    """The identity to re-issue ``directory``'s SVID to, or :class:`Refused` with the reason."""
    fix = f"remove it, or issue a real one with 'nsmctl ca issue --out {directory}'"
    if not ca.issued(leaf):
        raise Refused(
            f"{directory / CERT_FILE} is not signed by this CA ({ca.trust_domain}): a forged or "
            f"foreign certificate is never re-issued; {fix}"
        )
    key_file = directory / KEY_FILE
    key = load_private_key(key_file.read_bytes(), str(key_file))
    public = leaf.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey) or (
        public.public_numbers() != key.public_key().public_numbers()
    ):
        raise Refused(
            f"{key_file} is not the key of {directory / CERT_FILE}: only the holder of a "
            f"certificate's key gets it re-issued (a copied certificate does not count); {fix}"
        )
    ident, names = str(spiffe_id_of(leaf)), tuple(server_names(leaf))
    record = ca.assignment(directory)
    if record is None:
        record = ca.assign(directory, ident, names)
        _log.info("svid directory assigned", directory=str(directory), spiffe_id=ident,
                  dns_names=list(names), how="first CA-issued certificate seen")
    if (ident, set(names)) != (record.spiffe_id, set(record.dns_names)):
        raise Refused(
            f"{directory / CERT_FILE} is for {ident} {sorted(names)} but {directory} is assigned "
            f"to {record.spiffe_id} {sorted(record.dns_names)}: not re-issued; if the change is "
            f"intended, issue it with 'nsmctl ca issue --out {directory}' (which records it)"
        )
    return record


def _issued_by(cert: x509.Certificate, root: x509.Certificate) -> bool:
    try:
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
        ski = root.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return False
    return aki.key_identifier == ski.digest


def _due(cert: x509.Certificate, ca: CertificateAuthority, now: float, fraction: float) -> bool:
    start = cert.not_valid_before_utc.timestamp()
    end = cert.not_valid_after_utc.timestamp()
    return now >= start + fraction * (end - start) or not _issued_by(cert, ca.root)


def renew_due(
    ca: CertificateAuthority,
    root: Path,
    ttl: float,
    now: float | None = None,
    fraction: float = DEFAULT_FRACTION,
) -> list[Renewal]:
    """Re-issue the SVIDs under ``root`` that are due (see the module docstring)."""
    at = time.time() if now is None else now
    renewed = []
    for cert_file in sorted(root.rglob(CERT_FILE)):
        directory = cert_file.parent
        try:
            leaf = load_certificates(cert_file.read_bytes(), str(cert_file))[0]
            record = _check(ca, directory, leaf)
            bundle_file = directory / BUNDLE_FILE
            bundle_pem = bundle_file.read_bytes() if bundle_file.is_file() else b""
            if bundle_pem != ca.bundle.pem():
                write_public(bundle_file, ca.bundle.pem())
                _log.info("trust bundle updated", directory=str(directory),
                          roots=len(ca.bundle.roots))
                renewed.append(Renewal(directory, str(spiffe_id_of(leaf)),
                                       leaf.not_valid_after_utc.timestamp(), "bundle"))
                continue
            if write_federated(directory, ca.federated):
                _log.info("federated bundles updated", directory=str(directory),
                          trust_domains=[b.trust_domain for b in ca.federated])
                renewed.append(Renewal(directory, str(spiffe_id_of(leaf)),
                                       leaf.not_valid_after_utc.timestamp(), "federated"))
            if not _due(leaf, ca, at, fraction):
                continue
            svid = ca.issue(record.spiffe_id, record.dns_names, ttl, now=at)
            write_svid(directory, svid, ca.bundle)
        except Refused as exc:
            _log.warning("svid not renewed: refused", directory=str(directory), reason=str(exc))
            renewed.append(Renewal(directory, _claimed(leaf), 0.0, "refused", str(exc)))
            continue
        except (OSError, FabricError) as exc:
            _log.warning("cannot renew the SVID", directory=str(directory), error=str(exc))
            continue
        _log.info("svid renewed", spiffe_id=str(svid.spiffe_id), directory=str(directory),
                  serial=f"{svid.serial:x}", not_after=svid.not_after)
        renewed.append(Renewal(directory, str(svid.spiffe_id), svid.not_after))
    return renewed


def _claimed(leaf: x509.Certificate) -> str:
    try:
        return str(spiffe_id_of(leaf))
    except FabricError:
        return "(no SPIFFE ID)"


async def keep_renewed(
    load_ca: Callable[[], CertificateAuthority],
    root: Path,
    ttl: float,
    interval: float,
    on_renewal: Callable[[Renewal], None] | None = None,
) -> None:
    """Run :func:`renew_due` now and every ``interval`` seconds until cancelled, with the CA
    ``load_ca()`` gives at each pass (so a root rotated by another process is followed)."""
    while True:
        try:
            ca = await asyncio.to_thread(load_ca)
            done = await asyncio.to_thread(renew_due, ca, root, ttl)
        except FabricError as exc:
            _log.warning("cannot load the CA; retrying", error=str(exc))
            done = []
        for renewal in done:
            if on_renewal is not None:
                on_renewal(renewal)
        await asyncio.sleep(interval)  # the renewal period
