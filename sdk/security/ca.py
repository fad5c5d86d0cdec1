"""The built-in certificate authority of one trust domain.

Contract: :meth:`CertificateAuthority.init` creates an EC P-256 root (self-signed, URI SAN
``spiffe://<trust-domain>``, 10 years by default) in a directory: ``root.key`` (mode 0600),
``root.crt`` and ``bundle.pem`` (the roots to trust: the current one and, after a rotation, the
previous one). :meth:`CertificateAuthority.load` opens such a directory. :meth:`issue` signs an
X.509 SVID for a workload ID (``spiffe://<td>/<kind>/<name>``, in this trust domain) with a fresh
P-256 key, usable for both TLS client and server authentication, optional DNS SANs (servers need
one: gRPC clients check the host name), valid ``ttl`` seconds (default one hour), never beyond
the root's own expiry. :meth:`rotate_root` makes a new root and keeps the old one in the bundle
until the next rotation, so SVIDs of both keep verifying during the change-over.

Which identity belongs to which SVID directory is recorded too (:meth:`assign`,
:meth:`assignment`): one small file per directory under ``<CA dir>/assigned/`` (mode 0600, in
the CA's 0700 directory), holding the directory's resolved path, its SPIFFE ID and DNS names.
``nsmctl ca issue --out DIR`` writes it; the renewal agent (:mod:`sdk.security.renew`) re-issues
only to the recorded identity. :meth:`issued` tells whether this CA signed a certificate (under
its current or previous root), whatever its validity period.

Federation (:mod:`sdk.security.federation`): :meth:`federate` adds or replaces a foreign trust
domain's bundle, :meth:`unfederate` removes one; both are stored at once as
``federated/<trust-domain>.pem`` in the CA's directory, read back by :meth:`load`.
:attr:`trust` is the CA's :class:`~sdk.security.federation.BundleSet` (its bundle plus the
federated ones): what the renewal agent and the node agent hand out with every SVID.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import json
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sdk.errors import FailedPrecondition, InvalidArgument, NotFound
from sdk.security.federation import BundleSet, read_federated, write_federated
from sdk.security.spiffe import SpiffeId, check_trust_domain
from sdk.security.svid import (
    PrivateKey,
    Svid,
    TrustBundle,
    load_certificates,
    load_private_key,
    spiffe_id_of,
    write_private,
    write_public,
)

ROOT_KEY = "root.key"
ROOT_CERT = "root.crt"
BUNDLE = "bundle.pem"
ASSIGNED = "assigned"
DEFAULT_SVID_TTL = 3600.0
DEFAULT_ROOT_TTL = 10 * 365 * 86400.0
MAX_SVID_TTL = 365 * 86400.0
#: Certificates start this long before "now", so slightly slow clocks accept them.
BACKDATE = 60.0


def _utc(stamp: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(stamp, tz=dt.UTC)


def new_key() -> PrivateKey:
    """A fresh EC P-256 private key."""
    return ec.generate_private_key(ec.SECP256R1())


def _check_dns(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        pass
    labels = name.split(".")
    if not name or len(name) > 253 or not all(
        0 < len(label) <= 63 and label.replace("-", "").isalnum() and label.isascii()
        and not label.startswith("-") and not label.endswith("-")
        for label in labels
    ):
        raise InvalidArgument("dns", f"{name!r} is not a DNS name (letters, digits, '-', '.')")
    return x509.DNSName(name.lower())


def _make_root(trust_domain: str, key: PrivateKey, now: float, ttl: float) -> x509.Certificate:
    name = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "vwire"),
        x509.NameAttribute(NameOID.COMMON_NAME, f"vwire root {trust_domain} {int(now)}"),
    ])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_utc(now - BACKDATE))
        .not_valid_after(_utc(now + ttl))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(f"spiffe://{trust_domain}")]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )


@dataclass(frozen=True)
class Assignment:
    """The identity an SVID directory is for: its SPIFFE ID and DNS names."""

    directory: str
    spiffe_id: str
    dns_names: tuple[str, ...] = ()


def _where(directory: Path) -> str:
    return str(directory.resolve())


class CertificateAuthority:
    """See the module docstring."""

    def __init__(
        self,
        trust_domain: str,
        root: x509.Certificate,
        key: PrivateKey,
        previous: Sequence[x509.Certificate] = (),
        directory: Path | None = None,
        federated: Sequence[TrustBundle] = (),
    ) -> None:
        self.trust_domain = check_trust_domain(trust_domain)
        self.root = root
        self._key = key
        self.previous = tuple(previous)
        self.directory = directory
        self.federated = BundleSet(self.bundle, tuple(federated)).foreign
        self._assigned: dict[str, Assignment] = {}  # without a directory: kept in memory

    def __repr__(self) -> str:
        return f"<CertificateAuthority {self.trust_domain} root serial {self.root.serial_number:x}>"

    @property
    def bundle(self) -> TrustBundle:
        """The roots to trust: the current root first, then the previous one (if any)."""
        return TrustBundle(self.trust_domain, (self.root, *self.previous))

    @property
    def trust(self) -> BundleSet:
        """The bundle and the foreign trust domains' bundles this CA federates with."""
        return BundleSet(self.bundle, self.federated)

    def federate(self, bundle: TrustBundle) -> None:
        """Trust ``bundle``'s (foreign) trust domain, replacing its earlier bundle; saved when
        the CA has a directory. Refuses the local trust domain (InvalidArgument)."""
        if bundle.trust_domain == self.trust_domain:
            raise InvalidArgument(
                "bundle", f"is a bundle of the local trust domain {self.trust_domain!r}: only "
                "foreign trust domains are federated"
            )
        self.federated = self.trust.federating(bundle).foreign
        self._save_federated()

    def unfederate(self, trust_domain: str) -> None:
        """Stop trusting the foreign ``trust_domain``; NotFound when it is not federated."""
        if self.trust.bundle_for(trust_domain) in (None, self.bundle):
            known = ", ".join(b.trust_domain for b in self.federated) or "none"
            raise NotFound(
                f"trust domain {trust_domain!r} is not federated with {self.trust_domain!r} "
                f"(federated: {known}): see 'nsmctl ca bundle list'"
            )
        self.federated = self.trust.without(trust_domain).foreign
        self._save_federated()

    def reload_federated(self) -> tuple[TrustBundle, ...]:
        """Re-read ``federated/`` from the CA's directory (changed by another process's
        ``nsmctl ca federate``) and return the bundles; a broken file raises InvalidArgument
        naming it and keeps the previous set."""
        if self.directory is not None:
            self.federated = BundleSet(
                self.bundle, read_federated(self.directory, self.trust_domain)
            ).foreign
        return self.federated

    def _save_federated(self) -> None:
        if self.directory is not None:
            write_federated(self.directory, self.federated)

    @classmethod
    def create(
        cls, trust_domain: str, root_ttl: float = DEFAULT_ROOT_TTL, now: float | None = None
    ) -> CertificateAuthority:
        """A new in-memory CA (tests, labs); :meth:`init` also stores it."""
        check_trust_domain(trust_domain)
        key = new_key()
        root = _make_root(trust_domain, key, time.time() if now is None else now, root_ttl)
        return cls(trust_domain, root, key)

    @classmethod
    def init(
        cls, directory: Path, trust_domain: str, root_ttl: float = DEFAULT_ROOT_TTL
    ) -> CertificateAuthority:
        """Create a CA and store it in ``directory``; refuses to overwrite an existing one."""
        if (directory / ROOT_KEY).exists():
            raise FailedPrecondition(
                f"{directory} already holds a CA ({ROOT_KEY}): use it, or pick another directory"
            )
        ca = cls.create(trust_domain, root_ttl)
        ca.directory = directory
        ca.save()
        return ca

    @classmethod
    def load(cls, directory: Path) -> CertificateAuthority:
        """Open the CA stored in ``directory``."""
        key_path, cert_path, bundle_path = (directory / n for n in (ROOT_KEY, ROOT_CERT, BUNDLE))
        for path in (key_path, cert_path):
            if not path.is_file():
                raise FailedPrecondition(
                    f"{path} is missing: create a CA with 'nsmctl ca init --dir {directory}'"
                )
        if key_path.stat().st_mode & 0o077:
            raise FailedPrecondition(
                f"{key_path} is readable by other users: chmod 600 {key_path}"
            )
        key = load_private_key(key_path.read_bytes(), str(key_path))
        root = load_certificates(cert_path.read_bytes(), str(cert_path))[0]
        trust_domain = spiffe_id_of(root).trust_domain
        previous: list[x509.Certificate] = []
        if bundle_path.is_file():
            previous = [
                c for c in load_certificates(bundle_path.read_bytes(), str(bundle_path))
                if c.fingerprint(hashes.SHA256()) != root.fingerprint(hashes.SHA256())
            ]
        federated = read_federated(directory, trust_domain)
        return cls(trust_domain, root, key, previous, directory, federated)

    def save(self) -> None:
        """Write key (0600), root and bundle to the CA's directory."""
        if self.directory is None:
            raise FailedPrecondition("this CA has no directory to save to")
        self.directory.mkdir(parents=True, exist_ok=True)
        self.directory.chmod(0o700)
        write_private(self.directory / ROOT_KEY, self._key_pem())
        write_public(self.directory / ROOT_CERT, Svid((self.root,), self._key).chain_pem())
        write_public(self.directory / BUNDLE, self.bundle.pem())
        self._save_federated()

    def _key_pem(self) -> bytes:
        return Svid((self.root,), self._key).key_pem()

    def rotate_root(self, root_ttl: float = DEFAULT_ROOT_TTL, now: float | None = None) -> None:
        """Replace the root; the old root stays trusted (in the bundle) until the next rotation.
        Saved when the CA has a directory."""
        key = new_key()
        self.previous = (self.root,)
        self.root = _make_root(
            self.trust_domain, key, time.time() if now is None else now, root_ttl
        )
        self._key = key
        if self.directory is not None:
            self.save()

    def issued(self, cert: x509.Certificate) -> bool:
        """Whether ``cert`` carries this CA's signature (current or previous root), at any time
        (an expired SVID is still one this CA issued)."""
        for root in self.bundle.roots:
            try:
                cert.verify_directly_issued_by(root)
            except (ValueError, TypeError, InvalidSignature):
                continue
            return True
        return False

    def _assignment_file(self, directory: Path) -> Path | None:
        if self.directory is None:
            return None
        digest = hashlib.sha256(_where(directory).encode()).hexdigest()[:32]
        return self.directory / ASSIGNED / f"{digest}.json"

    def assign(
        self, directory: Path, spiffe_id: str | SpiffeId, dns_names: Sequence[str] = ()
    ) -> Assignment:
        """Record that the SVID directory ``directory`` is for ``spiffe_id`` with ``dns_names``
        (replacing an earlier record)."""
        record = Assignment(_where(directory), str(spiffe_id), tuple(dns_names))
        path = self._assignment_file(directory)
        if path is None:
            self._assigned[record.directory] = record
            return record
        path.parent.mkdir(mode=0o700, exist_ok=True)
        text = json.dumps(
            {"directory": record.directory, "spiffe_id": record.spiffe_id,
             "dns_names": list(record.dns_names)},
            indent=1,
        )
        write_private(path, text.encode())
        return record

    def assignment(self, directory: Path) -> Assignment | None:
        """The recorded identity of ``directory``; None when there is no record. A record that
        cannot be read raises ``FailedPrecondition`` (never treated as "no record")."""
        path = self._assignment_file(directory)
        if path is None:
            return self._assigned.get(_where(directory))
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise FailedPrecondition(f"cannot read {path}: {exc.strerror}") from None
        try:
            data = json.loads(raw)
            record = Assignment(
                str(data["directory"]), str(data["spiffe_id"]),
                tuple(str(name) for name in data["dns_names"]),
            )
        except (ValueError, KeyError, TypeError):
            record = None
        if record is None or record.directory != _where(directory):
            raise FailedPrecondition(
                f"{path} (the identity record of {directory}) is damaged: re-issue the SVID "
                f"with 'nsmctl ca issue --out {directory}', which rewrites it"
            )
        return record

    def issue(
        self,
        spiffe_id: str | SpiffeId,
        dns_names: Sequence[str] = (),
        ttl: float = DEFAULT_SVID_TTL,
        now: float | None = None,
    ) -> Svid:
        """Sign a new SVID; see the module docstring. ``now`` backdates (tests of expiry)."""
        key = new_key()
        return Svid((self.sign(spiffe_id, key.public_key(), dns_names, ttl, now),), key)

    def sign(
        self,
        spiffe_id: str | SpiffeId,
        public_key: ec.EllipticCurvePublicKey,
        dns_names: Sequence[str] = (),
        ttl: float = DEFAULT_SVID_TTL,
        now: float | None = None,
    ) -> x509.Certificate:
        """The SVID certificate of :meth:`issue` for a key made elsewhere (a CSR's: the private
        key never reaches the CA). Only P-256 keys are signed."""
        if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(
                public_key.curve, ec.SECP256R1):
            raise InvalidArgument("public_key", "must be an EC P-256 key")
        ident = spiffe_id if isinstance(spiffe_id, SpiffeId) else SpiffeId.workload(spiffe_id)
        if not ident.member_of(self.trust_domain):
            raise InvalidArgument(
                "spiffe_id",
                f"{ident} is not in this CA's trust domain {self.trust_domain!r}",
            )
        if not 0 < ttl <= MAX_SVID_TTL:
            raise InvalidArgument("ttl", f"must be between 0 and {MAX_SVID_TTL:g} s (got {ttl:g})")
        start = time.time() if now is None else now
        not_after = min(_utc(start + ttl), self.root.not_valid_after_utc)
        sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(str(ident))]
        sans += [_check_dns(name) for name in dns_names]
        root_ski = self.root.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "vwire"),
                x509.NameAttribute(NameOID.SERIAL_NUMBER, secrets.token_hex(8)),
            ]))
            .issuer_name(self.root.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(_utc(start - BACKDATE))
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=True, key_cert_sign=False,
                    crl_sign=False, encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(root_ski),
                critical=False,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False
            )
            .sign(self._key, hashes.SHA256())
        )
        return cert
