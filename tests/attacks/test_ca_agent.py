"""Forged and borrowed certificates against the CA agent (issue 12, item 5), with the real CA on
disk and the real ``nsmctl ca agent``: it re-issues only what the CA issued, only to whoever
holds the certificate's key, and only to the identity recorded for the directory."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from nsmctl.app import main as nsmctl
from sdk.security.ca import CertificateAuthority
from sdk.security.renew import renew_due
from sdk.security.svid import CERT_FILE, KEY_FILE, Svid, read_svid, write_svid

TD = "example.org"
REGISTRY = f"spiffe://{TD}/registry/registry"
SERVER_NAME = f"vwire.{TD}"


def forge(ca: CertificateAuthority, spiffe_id: str, dns: str) -> Svid:
    """A self-signed certificate that looks like one of the CA's: same issuer name, the root's
    key identifier as authority key id, SPIFFE ID and DNS name of the victim, already past half
    its lifetime (so an agent that trusts it renews it at once)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(tz=dt.UTC)
    root_ski = ca.root.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "vwire")]))
        .issuer_name(ca.root.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=50))
        .not_valid_after(now + dt.timedelta(minutes=10))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(
            [x509.UniformResourceIdentifier(spiffe_id), x509.DNSName(dns)]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(root_ski),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    return Svid((cert,), key)


def server_names(cert: x509.Certificate) -> list[str]:
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [*sans.get_values_for_type(x509.DNSName),
            *(str(ip) for ip in sans.get_values_for_type(x509.IPAddress))]


@pytest.fixture
def ca_dir(tmp_path: Path) -> Path:
    assert nsmctl(["ca", "init", "--trust-domain", TD, "--dir", str(tmp_path / "ca")]) == 0
    return tmp_path / "ca"


def issue(ca_dir: Path, out: Path, spiffe_id: str, *dns: str, ttl: str = "1h") -> None:
    args = ["ca", "issue", "--dir", str(ca_dir), "--spiffe-id", spiffe_id, "--out", str(out),
            "--ttl", ttl, *(arg for name in dns for arg in ("--dns", name))]
    assert nsmctl(args) == 0


def agent_pass(ca_dir: Path, svids: Path) -> None:
    assert nsmctl(["ca", "agent", "--dir", str(ca_dir), "--svids", str(svids), "--once"]) == 0


def files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def test_a_forged_certificate_in_a_new_directory_is_never_signed(
    ca_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ca = CertificateAuthority.load(ca_dir)
    svids = tmp_path / "ids"
    issue(ca_dir, svids / "registry", REGISTRY, SERVER_NAME)
    evil = svids / "evil"
    write_svid(evil, forge(ca, REGISTRY, SERVER_NAME), ca.bundle)
    before = files(evil)
    capsys.readouterr()
    for _ in range(3):  # the reported attack needed two passes
        agent_pass(ca_dir, svids)
    assert files(evil) == before, "the forged directory was rewritten"
    leaf = read_svid(evil)[0].leaf
    with pytest.raises(InvalidSignature):
        leaf.verify_directly_issued_by(ca.root)
    err = capsys.readouterr().err
    assert f"refused {evil} (claims {REGISTRY})" in err
    assert "is not signed by this CA" in err and f"nsmctl ca issue --out {evil}" in err


def test_a_forged_certificate_over_a_real_one_is_not_renewed(
    ca_dir: Path, tmp_path: Path
) -> None:
    ca = CertificateAuthority.load(ca_dir)
    registry = tmp_path / "ids" / "registry"
    issue(ca_dir, registry, REGISTRY, SERVER_NAME)
    write_svid(registry, forge(ca, REGISTRY, SERVER_NAME), ca.bundle)
    before = files(registry)
    renewed = renew_due(ca, tmp_path / "ids", 3600.0)
    assert [(r.what, r.spiffe_id) for r in renewed] == [("refused", REGISTRY)]
    assert files(registry) == before


def test_a_copied_certificate_without_its_key_gets_no_fresh_key(
    ca_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Certificates are public: the registry's, copied next to a key of the attacker's own,
    must not make the agent issue a registry SVID with a key the attacker can read."""
    ca = CertificateAuthority.load(ca_dir)
    svids = tmp_path / "ids"
    issue(ca_dir, svids / "registry", REGISTRY, SERVER_NAME, ttl="100s")  # past half-life soon
    thief = svids / "thief"
    thief.mkdir()
    shutil.copy(svids / "registry" / CERT_FILE, thief / CERT_FILE)
    (thief / KEY_FILE).write_bytes(forge(ca, REGISTRY, SERVER_NAME).key_pem())
    before = files(thief)
    renewed = renew_due(ca, svids, 3600.0, now=read_svid(svids / "registry")[0].not_after - 1)
    assert {(r.directory.name, r.what) for r in renewed} == {("registry", "svid"),
                                                             ("thief", "refused")}
    assert files(thief) == before
    assert "is not the key of" in next(r.reason for r in renewed if r.what == "refused")
    capsys.readouterr()


def test_another_identity_in_an_assigned_directory_is_not_reissued(
    ca_dir: Path, tmp_path: Path
) -> None:
    """A genuine SVID of the attacker's own (key included) moved into the registry's directory:
    the directory is recorded as the registry's, so the agent refuses instead of re-issuing
    the attacker's identity there (or, worse, trusting the claim)."""
    ca = CertificateAuthority.load(ca_dir)
    svids = tmp_path / "ids"
    issue(ca_dir, svids / "registry", REGISTRY, SERVER_NAME)
    mallory = ca.issue(f"spiffe://{TD}/nsc/mallory", [SERVER_NAME], 100.0)
    write_svid(svids / "registry", mallory, ca.bundle)
    before = files(svids / "registry")
    renewed = renew_due(ca, svids, 3600.0, now=mallory.not_after - 1)
    assert [r.what for r in renewed] == ["refused"]
    assert f"is assigned to {REGISTRY}" in renewed[0].reason
    assert files(svids / "registry") == before
    record = next((ca_dir / "assigned").iterdir())
    assert record.stat().st_mode & 0o077 == 0
    assert json.loads(record.read_text())["spiffe_id"] == REGISTRY


def test_unrecorded_directories_are_held_to_the_first_identity_seen(
    ca_dir: Path, tmp_path: Path
) -> None:
    """SVIDs written without ``nsmctl ca issue`` (the lab writes its own) are recorded on the
    first pass and renewed as usual; a later swap to another CA-issued identity is refused."""
    ca = CertificateAuthority.load(ca_dir)
    svids = tmp_path / "ids"
    web = ca.issue(f"spiffe://{TD}/nsc/web", ["10.0.0.1"], 100.0)
    write_svid(svids / "web", web, ca.bundle)
    first = renew_due(ca, svids, 3600.0, now=web.not_after - 1)
    assert [(r.what, r.spiffe_id) for r in first] == [("svid", f"spiffe://{TD}/nsc/web")]
    renewed = read_svid(svids / "web")[0]
    assert server_names(renewed.leaf) == ["10.0.0.1"], "IP SANs survive renewal"
    other = ca.issue(f"spiffe://{TD}/nsc/other", ["10.0.0.1"], 100.0)
    write_svid(svids / "web", other, ca.bundle)
    assert [r.what for r in renew_due(ca, svids, 3600.0, now=other.not_after - 1)] == [
        "refused"
    ]


def test_an_expired_genuine_svid_is_still_renewed(ca_dir: Path, tmp_path: Path) -> None:
    ca = CertificateAuthority.load(ca_dir)
    svids = tmp_path / "ids"
    issue(ca_dir, svids / "registry", REGISTRY, SERVER_NAME, ttl="100s")
    expired_at = read_svid(svids / "registry")[0].not_after
    renewed = renew_due(ca, svids, 3600.0, now=expired_at + 600)
    assert [r.what for r in renewed] == ["svid"]
    svid = read_svid(svids / "registry")[0]
    assert str(svid.spiffe_id) == REGISTRY and server_names(svid.leaf) == [SERVER_NAME]
