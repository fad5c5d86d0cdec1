"""``nsmctl ca bundle export|list`` and ``nsmctl ca federate`` as a user types them, and the CA
agent delivering (and withdrawing) federated bundles to SVID directories where a running file
source picks them up."""

from __future__ import annotations

import datetime as dt
import io
import json
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from nsmctl.app import main
from sdk.security.ca import CertificateAuthority
from sdk.security.source import FileSvidSource
from sdk.security.svid import FEDERATED_DIR

A, B = "cloud-a", "cloud-b"


def nsmctl(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def domains(tmp_path: Path) -> Path:
    for td in (A, B):
        code, _, err = nsmctl("ca", "init", "--trust-domain", td, "--dir", str(tmp_path / td))
        assert code == 0, err
    return tmp_path


def test_export_federate_list_and_remove(domains: Path) -> None:
    a, b, pem = str(domains / A), str(domains / B), str(domains / "b.pem")
    code, out, _ = nsmctl("ca", "bundle", "export", "--dir", b)
    assert code == 0 and out == (domains / B / "bundle.pem").read_text()
    assert nsmctl("ca", "bundle", "export", "--dir", b, "--out", pem)[0] == 0
    code, out, err = nsmctl("ca", "federate", "--dir", a, "--bundle", pem)
    assert code == 0, err
    assert out.startswith(f"federated with trust domain {B} (1 root)")
    assert nsmctl("ca", "federate", "--dir", a, "--bundle", pem)[1].startswith("replaced")
    code, out, _ = nsmctl("ca", "bundle", "list", "--dir", a)
    lines = out.splitlines()
    assert lines[0].split() == ["TRUST", "DOMAIN", "ROLE", "ROOT", "SHA-256", "NOT", "AFTER"]
    assert [line.split()[:2] for line in lines[1:]] == [[A, "local"], [B, "federated"]]
    code, out, _ = nsmctl("ca", "bundle", "list", "--dir", a, "-o", "json")
    listed = json.loads(out)
    assert [(r["trust_domain"], r["local"], len(r["roots"])) for r in listed] == [
        (A, True, 1), (B, False, 1)]
    assert nsmctl("ca", "federate", "--dir", a, "--remove", B)[0] == 0
    assert [r["trust_domain"] for r in json.loads(
        nsmctl("ca", "bundle", "list", "--dir", a, "-o", "json")[1])] == [A]


@pytest.mark.parametrize(("make", "says"), [
    (lambda d: (d / A / "bundle.pem").read_bytes(), "is a bundle of the local trust domain"),
    (lambda d: b"just text\n", "holds no root certificate"),
    (lambda d: (d / A / "bundle.pem").read_bytes() + (d / B / "bundle.pem").read_bytes(),
     "roots name 2 trust domains"),
])
def test_federate_refuses_bad_bundles_and_changes_nothing(
    domains: Path, make: Callable[[Path], bytes], says: str
) -> None:
    path = domains / "bad.pem"
    path.write_bytes(make(domains))
    code, out, err = nsmctl("ca", "federate", "--dir", str(domains / A), "--bundle", str(path))
    assert (code, out) == (1, "")
    assert f"--bundle {path}: {says}" in err
    assert not (domains / A / FEDERATED_DIR).exists()


def test_federate_refuses_an_svid_and_an_unknown_removal(domains: Path) -> None:
    svid = domains / "svid"
    assert nsmctl("ca", "issue", "--dir", str(domains / B), "--spiffe-id",
                  f"spiffe://{B}/nsc/x", "--out", str(svid))[0] == 0
    code, _, err = nsmctl("ca", "federate", "--dir", str(domains / A),
                          "--bundle", str(svid / "svid.crt"))
    assert code == 1 and "is not a CA certificate" in err
    code, _, err = nsmctl("ca", "federate", "--dir", str(domains / A), "--remove", B)
    assert code == 1 and f"--remove: trust domain {B!r} is not federated" in err
    code, _, err = nsmctl("ca", "federate", "--dir", str(domains / A))
    assert code == 1 and "give --bundle FILE" in err


def test_the_ca_agent_delivers_and_withdraws_federated_bundles(domains: Path) -> None:
    a, svids = str(domains / A), domains / "svids"
    assert nsmctl("ca", "issue", "--dir", a, "--spiffe-id", f"spiffe://{A}/nsmgr/n1",
                  "--out", str(svids / "n1"))[0] == 0
    source = FileSvidSource(svids / "n1", poll=0)
    assert source.current().trust.trust_domains == [A]
    nsmctl("ca", "bundle", "export", "--dir", str(domains / B), "--out", str(domains / "b.pem"))
    nsmctl("ca", "federate", "--dir", a, "--bundle", str(domains / "b.pem"))
    code, out, err = nsmctl("ca", "agent", "--dir", a, "--svids", str(svids), "--once")
    assert code == 0, err
    assert f"updated the federated bundles of spiffe://{A}/nsmgr/n1" in out
    assert source.current().trust.trust_domains == [A, B]
    assert (svids / "n1" / FEDERATED_DIR / f"{B}.pem").read_bytes() == (
        CertificateAuthority.load(domains / B).bundle.pem())
    nsmctl("ca", "federate", "--dir", a, "--remove", B)
    assert "updated the federated bundles" in nsmctl(
        "ca", "agent", "--dir", a, "--svids", str(svids), "--once")[1]
    assert source.current().trust.trust_domains == [A]


def test_issue_writes_the_cas_federated_bundles_with_the_svid(domains: Path) -> None:
    a, out = str(domains / A), domains / "svid"
    nsmctl("ca", "bundle", "export", "--dir", str(domains / B), "--out", str(domains / "b.pem"))
    nsmctl("ca", "federate", "--dir", a, "--bundle", str(domains / "b.pem"))
    assert nsmctl("ca", "issue", "--dir", a, "--spiffe-id", f"spiffe://{A}/nsmgr/n1",
                  "--out", str(out))[0] == 0
    assert FileSvidSource(out).current().trust.trust_domains == [A, B]


def _root_without_spiffe_san(tmp_path: Path) -> Path:
    """A CA root that names no trust domain (as SPIRE's 'bundle show -format pem' may print)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "spire root")])
    now = dt.datetime.now(dt.UTC)
    root = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    path = tmp_path / "spire.pem"
    path.write_bytes(root.public_bytes(serialization.Encoding.PEM))
    return path


def test_roots_naming_no_trust_domain_need_trust_domain(domains: Path) -> None:
    a, pem = str(domains / A), str(_root_without_spiffe_san(domains))
    code, _, err = nsmctl("ca", "federate", "--dir", a, "--bundle", pem)
    assert code == 1 and "roots name no trust domain" in err and "--trust-domain" in err
    code, out, err = nsmctl("ca", "federate", "--dir", a, "--bundle", pem,
                            "--trust-domain", "spire.example")
    assert code == 0, err
    assert out.startswith("federated with trust domain spire.example")
    assert (domains / A / FEDERATED_DIR / "spire.example.pem").is_file()
    code, _, err = nsmctl("ca", "federate", "--dir", a, "--bundle",
                          str(domains / B / "bundle.pem"), "--trust-domain", "spire.example")
    assert code == 1 and f"roots name trust domain {B!r}, not 'spire.example'" in err
