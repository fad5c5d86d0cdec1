"""Renewal of file SVIDs (sdk.security.renew) and ``nsmctl ca agent``."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509

from nsmctl.app import main as nsmctl
from sdk.security.ca import CertificateAuthority
from sdk.security.renew import renew_due
from sdk.security.svid import CERT_FILE, read_svid, write_svid

TD = "example.org"
TTL = 1000.0  # the CA backdates not_before by a minute: half-life is ~0.47 TTL after issue


def issue(ca: CertificateAuthority, directory: Path, spiffe_id: str, dns: list[str],
          now: float) -> int:
    svid = ca.issue(spiffe_id, dns, TTL, now=now)
    write_svid(directory, svid, ca.bundle)
    return svid.serial


def dns_of(directory: Path) -> list[str]:
    leaf = read_svid(directory)[0].leaf
    return list(leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
                .value.get_values_for_type(x509.DNSName))


@pytest.fixture
def setup(tmp_path: Path) -> tuple[CertificateAuthority, Path, float]:
    ca = CertificateAuthority.init(tmp_path / "ca", TD)
    now = ca.root.not_valid_before_utc.timestamp() + 60
    issue(ca, tmp_path / "ids" / "nsmgr" / "n1", f"spiffe://{TD}/nsmgr/n1", ["vwire.example.org"],
          now)
    issue(ca, tmp_path / "ids" / "nsc" / "web", f"spiffe://{TD}/nsc/web", [], now)
    return ca, tmp_path / "ids", now


def test_nothing_is_renewed_before_half_its_lifetime(
    setup: tuple[CertificateAuthority, Path, float],
) -> None:
    ca, root, now = setup
    assert renew_due(ca, root, TTL, now=now + 0.4 * TTL) == []


def test_svids_past_half_their_lifetime_are_reissued_with_the_same_names(
    setup: tuple[CertificateAuthority, Path, float],
) -> None:
    ca, root, now = setup
    before = {d: read_svid(d)[0].serial for d in (root / "nsmgr" / "n1", root / "nsc" / "web")}
    later = now + 0.6 * TTL
    renewed = renew_due(ca, root, TTL, now=later)
    assert sorted(r.spiffe_id for r in renewed) == [f"spiffe://{TD}/nsc/web",
                                                      f"spiffe://{TD}/nsmgr/n1"]
    for directory, serial in before.items():
        svid, _ = read_svid(directory)
        assert svid.serial != serial
        assert svid.not_after == pytest.approx(later + TTL, abs=1)
    assert dns_of(root / "nsmgr" / "n1") == ["vwire.example.org"]
    assert dns_of(root / "nsc" / "web") == []
    assert renew_due(ca, root, TTL, now=later + 1) == [], "fresh ones are left alone"


def test_a_rotated_root_updates_bundles_first_then_reissues_from_the_new_root(
    setup: tuple[CertificateAuthority, Path, float],
) -> None:
    ca, root, now = setup
    web = root / "nsc" / "web"
    old_serial = read_svid(web)[0].serial
    ca.rotate_root(now=now)

    first = renew_due(ca, root, TTL, now=now + 1)
    assert [r.what for r in first] == ["bundle", "bundle"]
    svid, bundle = read_svid(web)
    assert svid.serial == old_serial, "the SVID stays until every process trusts the new root"
    assert len(bundle.roots) == 2
    assert str(bundle.verify(svid.chain, now=now + 1)) == f"spiffe://{TD}/nsc/web"

    second = renew_due(ca, root, TTL, now=now + 2)
    assert [r.what for r in second] == ["svid", "svid"]
    svid, bundle = read_svid(web)
    assert svid.serial != old_serial
    assert svid.chain[-1].issuer == ca.root.subject
    assert str(bundle.verify(svid.chain, now=now + 2)) == f"spiffe://{TD}/nsc/web"
    assert renew_due(ca, root, TTL, now=now + 3) == []


def test_an_unreadable_svid_is_skipped_and_the_rest_renewed(
    setup: tuple[CertificateAuthority, Path, float],
) -> None:
    ca, root, now = setup
    (root / "nsc" / "web" / CERT_FILE).write_text("not a certificate")
    renewed = renew_due(ca, root, TTL, now=now + 0.6 * TTL)
    assert [r.spiffe_id for r in renewed] == [f"spiffe://{TD}/nsmgr/n1"]


def test_nsmctl_ca_agent_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ca = CertificateAuthority.init(tmp_path / "ca", TD)
    short = ca.issue(f"spiffe://{TD}/nse/db", ttl=30)  # half of it is over (backdated 60 s)
    write_svid(tmp_path / "ids" / "nse" / "db", short, ca.bundle)
    base = ["ca", "agent", "--dir", str(tmp_path / "ca"), "--svids", str(tmp_path / "ids")]
    assert nsmctl([*base, "--once"]) == 0
    assert f"renewed spiffe://{TD}/nse/db in {tmp_path / 'ids' / 'nse' / 'db'}" in (
        capsys.readouterr().out)
    assert nsmctl([*base, "--once"]) == 0
    assert "renewed" not in capsys.readouterr().out
    assert nsmctl([*base, "--ttl", "10s", "--interval", "10s"]) != 0
    assert "--interval must be positive and under half of --ttl" in capsys.readouterr().err

    assert nsmctl(["ca", "rotate-root", "--dir", str(tmp_path / "ca")]) == 0
    assert "the bundle holds 2 roots" in capsys.readouterr().out
    assert nsmctl([*base, "--once"]) == 0
    assert "updated the trust bundle of spiffe://example.org/nse/db" in capsys.readouterr().out
    assert nsmctl([*base, "--once"]) == 0
    assert "renewed spiffe://example.org/nse/db" in capsys.readouterr().out
