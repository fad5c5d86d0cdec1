"""X.509 SVIDs and trust bundles: the identity documents of the fabric.

Contract:
- :class:`Svid` holds a certificate chain (leaf first), its private key and the SPIFFE ID of the
  leaf. The key never appears in ``repr``/``str``; PEM of the key only comes out of
  :meth:`Svid.key_pem`, which callers write to 0600 files or hand to TLS, never to logs.
- :class:`TrustBundle` holds the root certificates of one trust domain (two during a root
  rotation). :meth:`TrustBundle.verify` checks a presented chain: signed up to one of the roots,
  valid at the given instant, exactly one SPIFFE URI SAN in the leaf, that ID in the bundle's trust
  domain; it returns the ID or raises :class:`sdk.errors.Unauthenticated` with the reason.
- :func:`write_svid` / :func:`read_svid` store an SVID as ``svid.crt`` (chain), ``svid.key``
  (mode 0600) and ``bundle.pem`` in one directory, each replaced atomically.
- :func:`check_svid_files` refuses a directory others could tamper with: ``svid.key`` readable
  by group or others, or any of the files or the directory writable by group or others or owned
  by someone other than root or this process's user (whoever can write ``bundle.pem`` decides
  whom the process trusts). The same holds for the folder ``federated/`` of foreign trust
  domains' bundles and every file in it (:mod:`sdk.security.federation`).
  ``FailedPrecondition`` names the file and the ``chmod``/``chown``.
"""

from __future__ import annotations

import datetime as dt
import os
import stat
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from sdk.errors import FailedPrecondition, InvalidArgument, Unauthenticated
from sdk.security.spiffe import SpiffeId

CERT_FILE = "svid.crt"
KEY_FILE = "svid.key"
BUNDLE_FILE = "bundle.pem"
#: The folder of foreign trust domains' bundles, ``<trust-domain>.pem`` each
#: (:mod:`sdk.security.federation`).
FEDERATED_DIR = "federated"

PrivateKey = ec.EllipticCurvePrivateKey


def _sans(cert: x509.Certificate, kind: type[x509.DNSName | x509.UniformResourceIdentifier]
          ) -> list[str]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return list(ext.value.get_values_for_type(kind))


def uri_sans(cert: x509.Certificate) -> list[str]:
    """The URI subject alternative names of ``cert`` (empty when it has none)."""
    return _sans(cert, x509.UniformResourceIdentifier)


def dns_sans(cert: x509.Certificate) -> list[str]:
    """The DNS subject alternative names of ``cert`` (empty when it has none)."""
    return _sans(cert, x509.DNSName)


def server_names(cert: x509.Certificate) -> list[str]:
    """The DNS names and IP addresses (as text) in ``cert``'s SANs: what to issue again."""
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return [*ext.value.get_values_for_type(x509.DNSName),
            *(str(ip) for ip in ext.value.get_values_for_type(x509.IPAddress))]


def spiffe_id_of(cert: x509.Certificate) -> SpiffeId:
    """The SPIFFE ID of a leaf certificate; raises Unauthenticated unless it has exactly one."""
    uris = [u for u in uri_sans(cert) if u.startswith("spiffe://")]
    if len(uris) != 1:
        raise Unauthenticated(
            f"certificate {cert.subject.rfc4514_string()!r} must carry exactly one SPIFFE ID "
            f"URI SAN (has {len(uris)})"
        )
    try:
        return SpiffeId.parse(uris[0], "certificate URI SAN")
    except InvalidArgument as exc:
        raise Unauthenticated(str(exc)) from None


def _utc(stamp: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(stamp, tz=dt.UTC)


def load_certificates(pem: bytes, what: str) -> list[x509.Certificate]:
    """All certificates in a PEM blob; raises InvalidArgument naming ``what`` when there are
    none or the blob is malformed."""
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise InvalidArgument(what, f"not PEM certificates ({exc})") from None
    if not certs:
        raise InvalidArgument(what, "holds no certificate")
    return certs


def load_private_key(pem: bytes, what: str) -> PrivateKey:
    """An EC private key from PEM; the error never contains key material."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        raise InvalidArgument(what, "is not an unencrypted PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise InvalidArgument(what, "must be an EC (P-256) private key")
    return key


@dataclass(frozen=True)
class Svid:
    """An X.509 SVID: chain (leaf first) and private key. See the module docstring."""

    chain: tuple[x509.Certificate, ...]
    key: PrivateKey = field(repr=False)

    def __post_init__(self) -> None:
        if not self.chain:
            raise InvalidArgument("chain", "an SVID needs at least its leaf certificate")
        pub = self.chain[0].public_key()
        if not isinstance(pub, ec.EllipticCurvePublicKey) or pub.public_numbers() != (
            self.key.public_key().public_numbers()
        ):
            raise InvalidArgument("key", "does not belong to the SVID's leaf certificate")

    @property
    def leaf(self) -> x509.Certificate:
        return self.chain[0]

    @cached_property
    def spiffe_id(self) -> SpiffeId:
        """The leaf's SPIFFE ID (read from its URI SAN once: every token signed asks for it)."""
        return spiffe_id_of(self.leaf)

    @property
    def not_before(self) -> float:
        return self.leaf.not_valid_before_utc.timestamp()

    @property
    def not_after(self) -> float:
        return self.leaf.not_valid_after_utc.timestamp()

    @property
    def serial(self) -> int:
        return self.leaf.serial_number

    def chain_pem(self) -> bytes:
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in self.chain)

    def key_pem(self) -> bytes:
        """The private key as unencrypted PKCS#8 PEM: for 0600 files and TLS only."""
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def __str__(self) -> str:
        return f"SVID {self.spiffe_id} (serial {self.serial:x}, until {_utc(self.not_after)})"

    def __repr__(self) -> str:
        return f"<{self}>"


@dataclass(frozen=True)
class TrustBundle:
    """The roots trusted for one trust domain. See the module docstring."""

    trust_domain: str
    roots: tuple[x509.Certificate, ...]

    def __post_init__(self) -> None:
        if not self.roots:
            raise InvalidArgument("bundle", "a trust bundle needs at least one root certificate")

    @classmethod
    def from_pem(cls, pem: bytes, trust_domain: str | None = None) -> TrustBundle:
        """A bundle from PEM roots; the trust domain comes from the roots' SPIFFE URI SAN when
        not given."""
        roots = load_certificates(pem, "bundle")
        if trust_domain is None:
            found = {spiffe_id_of(r).trust_domain for r in roots}
            if len(found) != 1:
                raise InvalidArgument(
                    "bundle", f"roots must name one trust domain in their URI SAN (found {found})"
                )
            trust_domain = found.pop()
        return cls(trust_domain, tuple(roots))

    def pem(self) -> bytes:
        return b"".join(r.public_bytes(serialization.Encoding.PEM) for r in self.roots)

    def fingerprints(self) -> list[str]:
        return [r.fingerprint(hashes.SHA256()).hex() for r in self.roots]

    def verify(self, chain: Sequence[x509.Certificate], now: float | None = None) -> SpiffeId:
        """Verify a presented chain (leaf first) against the roots; returns the leaf's ID."""
        if not chain:
            raise Unauthenticated("no certificate was presented")
        at = _utc(time.time() if now is None else now)
        leaf = chain[0]
        if at < leaf.not_valid_before_utc:
            raise Unauthenticated(f"certificate {spiffe_id_of(leaf)} is not valid yet")
        if at > leaf.not_valid_after_utc:
            raise Unauthenticated(
                f"certificate {spiffe_id_of(leaf)} expired at {leaf.not_valid_after_utc}"
            )
        identity = spiffe_id_of(leaf)
        verifier = PolicyBuilder().store(Store(list(self.roots))).time(at).build_client_verifier()
        try:
            verifier.verify(leaf, list(chain[1:]))
        except VerificationError as exc:
            raise Unauthenticated(
                f"certificate {identity} is not signed by a root of trust domain "
                f"{self.trust_domain!r} ({exc})"
            ) from None
        if not identity.member_of(self.trust_domain):
            raise Unauthenticated(
                f"{identity} is not in trust domain {self.trust_domain!r}"
            )
        return identity

    def bundle_for(self, trust_domain: str) -> TrustBundle | None:
        """This bundle when it is of ``trust_domain``, else None (the interface of
        :class:`sdk.security.federation.BundleSet`, which holds several)."""
        return self if trust_domain == self.trust_domain else None

    def merged(self, others: Iterable[x509.Certificate]) -> TrustBundle:
        """This bundle with more roots (duplicates dropped)."""
        seen = {r.fingerprint(hashes.SHA256()) for r in self.roots}
        extra = [r for r in others if r.fingerprint(hashes.SHA256()) not in seen]
        return TrustBundle(self.trust_domain, (*self.roots, *extra))


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically with mode 0600 (created so, never wider)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_public(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically with mode 0644."""
    write_private(path, data)
    os.chmod(path, 0o644)


def write_svid(directory: Path, svid: Svid, bundle: TrustBundle) -> None:
    """Store an SVID and its bundle in ``directory`` (key first, so a reader that sees the new
    certificate also finds its key)."""
    directory.mkdir(parents=True, exist_ok=True)
    write_private(directory / KEY_FILE, svid.key_pem())
    write_public(directory / CERT_FILE, svid.chain_pem())
    write_public(directory / BUNDLE_FILE, bundle.pem())


def _owner_ok(st: os.stat_result) -> bool:
    return st.st_uid in (0, os.geteuid())


def _guarded(directory: Path) -> list[Path]:
    """The paths whose owner and mode decide whom a process is and trusts."""
    paths = [directory, *(directory / n for n in (CERT_FILE, KEY_FILE, BUNDLE_FILE))]
    federated = directory / FEDERATED_DIR
    if federated.is_dir():
        paths += [federated, *sorted(federated.iterdir())]
    return paths


def check_svid_files(directory: Path) -> None:
    """Refuse an SVID directory that others could read the key of or tamper with (see the
    module docstring); missing files are :func:`read_svid`'s business."""
    for path in _guarded(directory):
        try:
            st = os.stat(path)
        except FileNotFoundError:
            continue
        mode = stat.S_IMODE(st.st_mode)
        if not _owner_ok(st):
            raise FailedPrecondition(
                f"{path} is owned by uid {st.st_uid}, who could replace this process's identity "
                f"or trust bundle: chown {os.geteuid()} {path} (root or this process's user)"
            )
        if mode & 0o022:
            raise FailedPrecondition(
                f"{path} is writable by group or others (mode {mode:04o}), who could replace "
                f"this process's identity or trust bundle: chmod go-w {path}"
            )
        if path.name == KEY_FILE and path.parent == directory and mode & 0o077:
            raise FailedPrecondition(
                f"{path} is readable by group or others (mode {mode:04o}): chmod 600 {path}, "
                "and re-issue the SVID ('nsmctl ca issue'), since its key may have leaked"
            )


def read_svid(directory: Path) -> tuple[Svid, TrustBundle]:
    """Load what :func:`write_svid` stored; raises InvalidArgument naming the bad file."""
    paths = [directory / name for name in (CERT_FILE, KEY_FILE, BUNDLE_FILE)]
    for path in paths:
        if not path.is_file():
            raise InvalidArgument(str(path), "is missing: issue an SVID with 'nsmctl ca issue'")
    chain = load_certificates(paths[0].read_bytes(), str(paths[0]))
    key = load_private_key(paths[1].read_bytes(), str(paths[1]))
    svid = Svid(tuple(chain), key)
    bundle = TrustBundle.from_pem(paths[2].read_bytes())
    return svid, bundle
