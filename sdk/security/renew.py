"""Keeping file SVIDs fresh: re-issue the SVIDs under a directory before they expire.

The fabric's processes read their SVIDs from files (:class:`sdk.security.source.FileSvidSource`)
and pick up new ones without a restart; this module is what writes the new ones, for a node or a
lab that uses the built-in CA (where SPIRE is used, its agent does this job).

Contract of :func:`renew_due`: every directory under ``root`` (searched recursively) that holds
an ``svid.crt`` is checked, in two steps so that a root rotation never breaks a handshake or a
path token:

1. if its ``bundle.pem`` is not the CA's current bundle (the root was rotated), only the bundle
   is replaced (it holds the new and the previous root, so the old SVID stays valid) — every
   process learns to trust the new root before anyone presents it;
2. otherwise the SVID is re-issued from ``ca`` — same SPIFFE ID, same DNS names, lifetime
   ``ttl`` — when it has lived ``fraction`` (default half) of its lifetime, has expired, or was
   not issued by the CA's current root (so after a rotation, the pass after the bundle update).

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

from sdk.errors import FabricError
from sdk.security.ca import CertificateAuthority
from sdk.security.svid import (
    BUNDLE_FILE,
    CERT_FILE,
    dns_sans,
    load_certificates,
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
    what: str = "svid"  # or "bundle": only the trust bundle was replaced


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
            bundle_file = directory / BUNDLE_FILE
            bundle_pem = bundle_file.read_bytes() if bundle_file.is_file() else b""
            if bundle_pem != ca.bundle.pem():
                write_public(bundle_file, ca.bundle.pem())
                _log.info("trust bundle updated", directory=str(directory),
                          roots=len(ca.bundle.roots))
                renewed.append(Renewal(directory, str(spiffe_id_of(leaf)),
                                       leaf.not_valid_after_utc.timestamp(), "bundle"))
                continue
            if not _due(leaf, ca, at, fraction):
                continue
            svid = ca.issue(spiffe_id_of(leaf), dns_sans(leaf), ttl, now=at)
            write_svid(directory, svid, ca.bundle)
        except (OSError, FabricError) as exc:
            _log.warning("cannot renew the SVID", directory=str(directory), error=str(exc))
            continue
        _log.info("svid renewed", spiffe_id=str(svid.spiffe_id), directory=str(directory),
                  serial=f"{svid.serial:x}", not_after=svid.not_after)
        renewed.append(Renewal(directory, str(svid.spiffe_id), svid.not_after))
    return renewed


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
