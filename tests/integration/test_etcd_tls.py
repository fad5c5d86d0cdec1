"""The etcd store over TLS against a real etcd that requires client certificates: it works with
the CA, certificate and key of ``etcd_tls_dir``; a store without TLS, or with a certificate of
another CA, is refused; missing files and TLS for a store that is not etcd are clear errors."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from lab.etcd import EtcdCluster
from registry.store import open_store
from registry.store.etcd import EtcdStore
from sdk.errors import FailedPrecondition, InvalidArgument, Unavailable
from sdk.registry.store import StoredRecord

Key = ec.EllipticCurvePrivateKey


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject: str, key: Key, issuer: tuple[str, Key] | None, server: bool = False,
          ca: bool = False) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    issuer_name, issuer_key = issuer or (subject, key)
    builder = (
        x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer_name))
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(directory: Path, name: str, cert: x509.Certificate, key: Key | None = None) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        (directory / f"{name}.key").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))


def pki(tmp_path: Path) -> tuple[Path, Path]:
    """(the etcd side's directory, a client directory of another CA)."""
    ca_key, rogue_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(
        ec.SECP256R1())
    ca = _cert("etcd-ca", ca_key, None, ca=True)
    server_key, client_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(2))
    good = tmp_path / "tls"
    _write(good, "ca", ca)
    _write(good, "server", _cert("etcd", server_key, ("etcd-ca", ca_key), server=True),
           server_key)
    _write(good, "tls", _cert("registry", client_key, ("etcd-ca", ca_key)), client_key)
    rogue = tmp_path / "rogue"
    _write(rogue, "ca", ca)  # trusts etcd, but its own certificate is of another CA
    _write(rogue, "tls", _cert("registry", client_key, ("rogue-ca", rogue_key)), client_key)
    return good, rogue


def record(name: str) -> StoredRecord:
    return StoredRecord("nse", name, b"x", None, None)


async def refused(store: EtcdStore) -> None:
    store.retry_for = 1.0  # refusals are retried like outages: keep the test short
    try:
        with pytest.raises(Unavailable, match="check that the etcd cluster"):
            await store.put(record("refused"))
    finally:
        await store.close()


async def test_the_store_speaks_tls_with_a_client_certificate(tmp_path: Path) -> None:
    good, rogue = pki(tmp_path)
    async with EtcdCluster(tmp_path / "etcd", members=1, tls_dir=good) as cluster:
        url = cluster.url
        store = open_store(url, good)
        assert isinstance(store, EtcdStore)
        try:
            await store.put(record("a"))
            assert [r.name for r in await store.load("nse", 0)] == ["a"]
        finally:
            await store.close()
        plain = open_store(url)
        assert isinstance(plain, EtcdStore)
        await refused(plain)
        other = open_store(url, rogue)
        assert isinstance(other, EtcdStore)
        await refused(other)


def test_tls_errors_name_the_field_and_file(tmp_path: Path) -> None:
    with pytest.raises(FailedPrecondition, match=r"etcd_tls_dir: cannot read .*ca\.crt"):
        open_store("etcd://127.0.0.1:2379", tmp_path)
    with pytest.raises(InvalidArgument, match="for etcd:// stores only") as err:
        open_store("memory://", tmp_path)
    assert err.value.field == "etcd_tls_dir"
