"""Trust across domains: the bundles of foreign trust domains next to the local one.

A :class:`sdk.security.svid.TrustBundle` verifies identities of **one** trust domain. A
:class:`BundleSet` (SPIFFE's "bundle set") holds the local trust domain's bundle plus the bundles
of the foreign trust domains it federates with, and verifies identities of **any** of them —
each only against the bundle of the trust domain its leaf's SPIFFE ID names.

Contract:
- :meth:`BundleSet.verify` reads the SPIFFE ID of the chain's leaf, picks the bundle of that
  trust domain and verifies the chain against it alone: a foreign root never vouches for a local
  ID nor for a third trust domain's ID. An ID of a trust domain the set does not hold raises
  :class:`sdk.errors.Unauthenticated` naming the trust domain and the fix (``nsmctl ca
  federate``). The set never holds two bundles of one trust domain, nor a foreign bundle of the
  local trust domain (``InvalidArgument``).
- :func:`foreign_bundle` turns PEM roots into the bundle of a foreign trust domain, refusing with
  ``InvalidArgument`` naming ``what``: no certificate, a certificate that is not a CA
  (BasicConstraints CA:TRUE), roots whose SPIFFE URI SANs name two trust domains or another trust
  domain than the one given, no trust domain at all (neither named by the roots nor given), the
  local trust domain, and (``check_expiry``) an expired root.
- On disk (CA directories and SVID directories alike) the foreign bundles are
  ``federated/<trust-domain>.pem``, one PEM file of roots per trust domain, next to
  ``bundle.pem``. :func:`read_federated` reads them (file names starting with ``.`` are
  temporaries and skipped; the file's name is its trust domain); :func:`write_federated` makes the
  directory hold exactly the given bundles (new and changed files replaced atomically, others
  removed) and returns whether it changed anything; :func:`write_svid_set` writes an SVID
  directory with them.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from sdk.errors import InvalidArgument, Unauthenticated
from sdk.security.spiffe import SpiffeId, check_trust_domain
from sdk.security.svid import (
    FEDERATED_DIR,
    Svid,
    TrustBundle,
    load_certificates,
    spiffe_id_of,
    uri_sans,
    write_public,
    write_svid,
)

PEM_SUFFIX = ".pem"


def federate_hint(trust_domain: str) -> str:
    """How to make a trust domain known: the commands, as an error message ends."""
    return (
        f"export its bundle on its CA ('nsmctl ca bundle export --dir CA --out "
        f"{trust_domain}.pem') and import it here ('nsmctl ca federate --dir CA --bundle "
        f"{trust_domain}.pem')"
    )


@dataclass(frozen=True)
class BundleSet:
    """The local bundle and the foreign bundles it federates with. See the module docstring."""

    local: TrustBundle
    foreign: tuple[TrustBundle, ...] = ()

    def __post_init__(self) -> None:
        seen = {self.local.trust_domain}
        for bundle in self.foreign:
            if bundle.trust_domain in seen:
                raise InvalidArgument(
                    "federated", f"trust domain {bundle.trust_domain!r} is given twice (or is "
                    "the local one): one bundle per trust domain"
                )
            seen.add(bundle.trust_domain)

    @property
    def trust_domain(self) -> str:
        """The local trust domain."""
        return self.local.trust_domain

    @property
    def trust_domains(self) -> list[str]:
        """The local trust domain first, then the foreign ones sorted."""
        return [self.trust_domain, *sorted(b.trust_domain for b in self.foreign)]

    def bundle_for(self, trust_domain: str) -> TrustBundle | None:
        """The bundle of ``trust_domain`` (None: not federated)."""
        if trust_domain == self.local.trust_domain:
            return self.local
        return next((b for b in self.foreign if b.trust_domain == trust_domain), None)

    def require(self, trust_domain: str) -> TrustBundle:
        """The bundle of ``trust_domain``; Unauthenticated naming it and the fix when absent."""
        bundle = self.bundle_for(trust_domain)
        if bundle is None:
            raise Unauthenticated(
                f"trust domain {trust_domain!r} is not federated with {self.trust_domain!r}: "
                + federate_hint(trust_domain)
            )
        return bundle

    def verify(self, chain: Sequence[x509.Certificate], now: float | None = None) -> SpiffeId:
        """Verify a chain (leaf first) against the bundle of its leaf's trust domain only."""
        if not chain:
            raise Unauthenticated("no certificate was presented")
        identity = spiffe_id_of(chain[0])
        bundle = self.bundle_for(identity.trust_domain)
        if bundle is None:
            raise Unauthenticated(
                f"{identity} belongs to trust domain {identity.trust_domain!r}, which is not "
                f"federated with {self.trust_domain!r}: " + federate_hint(identity.trust_domain)
            )
        return bundle.verify(chain, now)

    @property
    def roots(self) -> tuple[x509.Certificate, ...]:
        """Every root of every trust domain (what a TLS server offers to verify clients by)."""
        return tuple(r for b in (self.local, *self.foreign) for r in b.roots)

    def pem(self) -> bytes:
        """:attr:`roots` as PEM."""
        return b"".join(b.pem() for b in (self.local, *self.foreign))

    def federating(self, bundle: TrustBundle) -> BundleSet:
        """This set with ``bundle`` added, or replacing the bundle of its trust domain."""
        others = tuple(b for b in self.foreign if b.trust_domain != bundle.trust_domain)
        return BundleSet(self.local, (*others, bundle))

    def without(self, trust_domain: str) -> BundleSet:
        """This set without the foreign ``trust_domain`` (unchanged when absent)."""
        return BundleSet(
            self.local, tuple(b for b in self.foreign if b.trust_domain != trust_domain)
        )


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return False
    return constraints.ca


def _named_domains(roots: Iterable[x509.Certificate], what: str) -> set[str]:
    found = set()
    for root in roots:
        if any(u.startswith("spiffe://") for u in uri_sans(root)):
            try:
                found.add(spiffe_id_of(root).trust_domain)
            except Unauthenticated as exc:
                raise InvalidArgument(what, str(exc)) from None
    return found


def foreign_bundle(
    pem: bytes,
    local_trust_domain: str,
    trust_domain: str | None = None,
    what: str = "bundle",
    check_expiry: bool = True,
    now: float | None = None,
) -> TrustBundle:
    """The bundle of a foreign trust domain from PEM roots; see the module docstring."""
    if b"-----BEGIN CERTIFICATE-----" not in pem:
        raise InvalidArgument(
            what, "holds no root certificate (no '-----BEGIN CERTIFICATE-----' block): export "
            "the trust domain's bundle with 'nsmctl ca bundle export'"
        )
    roots = load_certificates(pem, what)
    at = time.time() if now is None else now
    for root in roots:
        name = root.subject.rfc4514_string() or "(no subject)"
        if not _is_ca(root):
            raise InvalidArgument(
                what, f"certificate {name!r} is not a CA certificate (BasicConstraints CA:TRUE): "
                "export the trust domain's root ('nsmctl ca bundle export'), not an SVID"
            )
        if check_expiry and root.not_valid_after_utc.timestamp() <= at:
            raise InvalidArgument(
                what, f"root {name!r} expired at {root.not_valid_after_utc}: export the "
                "trust domain's current bundle"
            )
    named = _named_domains(roots, what)
    if len(named) > 1:
        raise InvalidArgument(
            what, f"roots name {len(named)} trust domains ({', '.join(sorted(named))}): "
            "one bundle holds the roots of one trust domain"
        )
    if trust_domain is not None:
        check_trust_domain(trust_domain, what)
        if named and named != {trust_domain}:
            raise InvalidArgument(
                what, f"roots name trust domain {named.pop()!r}, not {trust_domain!r}"
            )
    elif not named:
        raise InvalidArgument(
            what, "roots name no trust domain (no spiffe:// URI SAN): give the trust domain "
            "(--trust-domain)"
        )
    domain = trust_domain if trust_domain is not None else named.pop()
    if domain == local_trust_domain:
        raise InvalidArgument(
            what, f"is a bundle of the local trust domain {domain!r}: only foreign trust "
            "domains are federated (a foreign root must never vouch for local identities)"
        )
    return TrustBundle(domain, tuple(roots))


def read_federated(directory: Path, local_trust_domain: str) -> tuple[TrustBundle, ...]:
    """The foreign bundles under ``directory/federated`` (none when it does not exist)."""
    folder = directory / FEDERATED_DIR
    if not folder.is_dir():
        return ()
    bundles = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.name.endswith(PEM_SUFFIX):
            continue
        domain = path.name[: -len(PEM_SUFFIX)]
        bundles.append(foreign_bundle(
            path.read_bytes(), local_trust_domain, domain, str(path), check_expiry=False
        ))
    return tuple(bundles)


def write_federated(directory: Path, bundles: Iterable[TrustBundle]) -> bool:
    """Make ``directory/federated`` hold exactly ``bundles``; returns whether anything changed."""
    folder = directory / FEDERATED_DIR
    wanted = {b.trust_domain + PEM_SUFFIX: b.pem() for b in bundles}
    if not wanted and not folder.exists():
        return False
    folder.mkdir(mode=0o755, exist_ok=True)
    changed = False
    for name, pem in sorted(wanted.items()):
        path = folder / name
        if not path.is_file() or path.read_bytes() != pem:
            write_public(path, pem)
            changed = True
    for path in sorted(folder.iterdir()):
        if path.name.endswith(PEM_SUFFIX) and path.name not in wanted:
            path.unlink()
            changed = True
    return changed


def write_svid_set(directory: Path, svid: Svid, trust: BundleSet) -> None:
    """:func:`sdk.security.svid.write_svid` plus the federated bundles of ``trust``: what a new
    SVID directory needs so its process trusts the federated trust domains from the start."""
    write_svid(directory, svid, trust.local)
    write_federated(directory, trust.foreign)
