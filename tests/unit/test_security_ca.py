"""The built-in CA, SPIFFE ID validation, SVID files and SVID sources."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from sdk.errors import FailedPrecondition, InvalidArgument, Unauthenticated
from sdk.security.ca import CertificateAuthority
from sdk.security.source import CaSvidSource, FileSvidSource, Material
from sdk.security.spiffe import SpiffeId, is_spiffe_id
from sdk.security.svid import KEY_FILE, Svid, TrustBundle, read_svid, spiffe_id_of, write_svid

TD = "example.org"


class Clock:
    """A settable clock for sources and tokens (no sleeping)."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.create(TD)


def t0(ca: CertificateAuthority) -> float:
    """An instant an hour into the root's validity."""
    return ca.root.not_valid_before_utc.timestamp() + 3600


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "must start with 'spiffe://'"),
        ("SPIFFE://example.org/a/b", "must start with 'spiffe://'"),
        ("spiffe://Example.org/a/b", "is not a trust domain"),
        ("spiffe:///a/b", "must not be empty"),
        ("spiffe://example.org/a//b", "empty path segment"),
        ("spiffe://example.org/a/b/", "empty path segment"),
        ("spiffe://example.org/a/../b", "'.' or '..'"),
        ("spiffe://example.org/a/b?x=1", "query"),
        ("spiffe://example.org/a/b#f", "fragment"),
        ("spiffe://example.org:443/a/b", "port"),
        ("spiffe://user@example.org/a/b", "user info"),
        ("spiffe://example.org/a/b c", "path segments use only"),
        ("spiffe://example.org/a/%41", "percent-encoding"),
        ("spiffe://example.org/" + "a" * 2100, "at most 2048"),
    ],
)
def test_invalid_spiffe_ids_are_refused_with_the_rule(text: str, problem: str) -> None:
    with pytest.raises(InvalidArgument, match="spiffe_id") as info:
        SpiffeId.parse(text)
    assert problem in str(info.value)
    assert not is_spiffe_id(text)


def test_valid_spiffe_id_round_trips_and_has_kind_and_name() -> None:
    ident = SpiffeId.workload("spiffe://example.org/nse/db/replica-1")
    assert str(ident) == "spiffe://example.org/nse/db/replica-1"
    assert (ident.trust_domain, ident.kind, ident.name) == (TD, "nse", "db/replica-1")
    assert SpiffeId.parse("spiffe://example.org").segments == ()
    with pytest.raises(InvalidArgument, match="must name a kind and a name"):
        SpiffeId.workload("spiffe://example.org/nse")


def test_init_stores_the_root_with_a_private_key_file(tmp_path: Path) -> None:
    ca = CertificateAuthority.init(tmp_path / "ca", TD)
    key = tmp_path / "ca" / "root.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    loaded = CertificateAuthority.load(tmp_path / "ca")
    assert loaded.trust_domain == TD
    assert loaded.root == ca.root
    with pytest.raises(FailedPrecondition, match="already holds a CA"):
        CertificateAuthority.init(tmp_path / "ca", TD)


def test_load_refuses_a_key_readable_by_others(tmp_path: Path) -> None:
    CertificateAuthority.init(tmp_path / "ca", TD)
    os.chmod(tmp_path / "ca" / "root.key", 0o644)
    with pytest.raises(FailedPrecondition, match="chmod 600"):
        CertificateAuthority.load(tmp_path / "ca")


def test_issued_svid_carries_the_id_dns_sans_and_lifetime(ca: CertificateAuthority) -> None:
    now = t0(ca)
    svid = ca.issue("spiffe://example.org/registry/main", ["vwire.example.org"], ttl=120, now=now)
    assert str(svid.spiffe_id) == "spiffe://example.org/registry/main"
    assert svid.not_after == pytest.approx(now + 120, abs=1)
    assert ca.bundle.verify(svid.chain, now=now + 60) == svid.spiffe_id


@pytest.mark.parametrize(
    ("spiffe_id", "dns", "ttl", "field"),
    [
        ("spiffe://other.org/nse/x", [], 60, "spiffe_id"),
        ("spiffe://example.org/nse", [], 60, "spiffe_id"),
        ("spiffe://example.org/nse/x", ["not a name"], 60, "dns"),
        ("spiffe://example.org/nse/x", [], 0, "ttl"),
        ("spiffe://example.org/nse/x", [], -5, "ttl"),
    ],
)
def test_issue_refuses_bad_input_naming_the_field(
    ca: CertificateAuthority, spiffe_id: str, dns: list[str], ttl: float, field: str
) -> None:
    with pytest.raises(InvalidArgument) as info:
        ca.issue(spiffe_id, dns, ttl)
    assert info.value.field == field


def test_bundle_refuses_foreign_expired_and_not_yet_valid_certificates(
    ca: CertificateAuthority,
) -> None:
    foreign = CertificateAuthority.create(TD).issue("spiffe://example.org/nsc/evil")
    with pytest.raises(Unauthenticated, match="not signed by a root"):
        ca.bundle.verify(foreign.chain)
    now = t0(ca)
    old = ca.issue("spiffe://example.org/nsc/old", ttl=60, now=now)
    with pytest.raises(Unauthenticated, match="expired"):
        ca.bundle.verify(old.chain, now=now + 3600)
    with pytest.raises(Unauthenticated, match="not valid yet"):
        ca.bundle.verify(old.chain, now=now - 3600)
    with pytest.raises(Unauthenticated, match="no certificate"):
        ca.bundle.verify([])


def test_root_rotation_keeps_old_svids_valid_until_the_next_rotation() -> None:
    ca = CertificateAuthority.create(TD)
    before = ca.issue("spiffe://example.org/nsmgr/a")
    ca.rotate_root()
    after = ca.issue("spiffe://example.org/nsmgr/b")
    assert len(ca.bundle.roots) == 2
    assert ca.bundle.verify(before.chain) == before.spiffe_id
    assert ca.bundle.verify(after.chain) == after.spiffe_id
    ca.rotate_root()
    with pytest.raises(Unauthenticated):
        ca.bundle.verify(before.chain)
    assert ca.bundle.verify(after.chain) == after.spiffe_id


def test_svid_repr_and_str_never_show_the_key(ca: CertificateAuthority) -> None:
    svid = ca.issue("spiffe://example.org/nsc/a")
    body = svid.key_pem().decode().splitlines()[1]
    for text in (repr(svid), str(svid), repr(ca), repr(Material(svid, ca.bundle, 1))):
        assert "PRIVATE" not in text and body not in text
    with pytest.raises(InvalidArgument, match="does not belong") as info:
        Svid(svid.chain, ca.issue("spiffe://example.org/nsc/b").key)
    assert body not in str(info.value)


def test_svid_files_round_trip_with_a_0600_key(ca: CertificateAuthority, tmp_path: Path) -> None:
    svid = ca.issue("spiffe://example.org/nse/db", ["db.example.org"])
    write_svid(tmp_path, svid, ca.bundle)
    assert stat.S_IMODE((tmp_path / KEY_FILE).stat().st_mode) == 0o600
    loaded, bundle = read_svid(tmp_path)
    assert loaded.spiffe_id == svid.spiffe_id and loaded.serial == svid.serial
    assert bundle.trust_domain == TD and bundle.roots == ca.bundle.roots
    assert spiffe_id_of(ca.root) == SpiffeId.parse("spiffe://example.org")


def test_read_svid_names_a_missing_or_bad_file(ca: CertificateAuthority, tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="is missing"):
        read_svid(tmp_path)
    write_svid(tmp_path, ca.issue("spiffe://example.org/nse/db"), ca.bundle)
    (tmp_path / KEY_FILE).write_text("garbage")
    with pytest.raises(InvalidArgument, match="not an unencrypted PEM private key"):
        read_svid(tmp_path)


def test_file_source_rereads_changed_files_and_keeps_the_old_svid_on_bad_ones(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    first = ca.issue("spiffe://example.org/nsmgr/n1")
    write_svid(tmp_path, first, ca.bundle)
    seen: list[int] = []
    source = FileSvidSource(tmp_path, poll=0)
    source.subscribe(lambda m: seen.append(m.generation))
    assert source.current().svid.serial == first.serial
    assert source.current().generation == 1 and seen == []

    second = ca.issue("spiffe://example.org/nsmgr/n1")
    write_svid(tmp_path, second, ca.bundle)
    assert source.current().svid.serial == second.serial
    assert seen == [2]

    # A certificate whose key is not (yet) the matching one: keep the previous SVID.
    third = ca.issue("spiffe://example.org/nsmgr/n1")
    (tmp_path / "svid.crt").write_bytes(third.chain_pem())
    assert source.current().svid.serial == second.serial
    assert seen == [2]


def test_file_source_refuses_to_hand_out_an_expired_svid(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    clock = Clock(t0(ca))
    write_svid(tmp_path, ca.issue("spiffe://example.org/nsmgr/n1", ttl=60, now=clock.now),
               ca.bundle)
    source = FileSvidSource(tmp_path, poll=3600, clock=clock)
    clock.now += 120
    with pytest.raises(Unauthenticated, match="expired"):
        source.current()


def test_ca_source_renews_at_half_the_lifetime_and_on_root_rotation() -> None:
    ca = CertificateAuthority.create(TD)
    clock = Clock(ca.root.not_valid_before_utc.timestamp() + 3600)
    source = CaSvidSource(ca, "spiffe://example.org/nsmgr/n1", ["vwire.example.org"],
                          ttl=600, clock=clock)
    changes: list[Material] = []
    unsubscribe = source.subscribe(changes.append)
    first = source.current()
    assert source.renew_at == pytest.approx(clock.now + 300, abs=1)
    clock.now += 299
    assert source.current() is first
    clock.now += 2
    second = source.current()
    assert second.generation == first.generation + 1
    assert second.svid.serial != first.svid.serial
    assert changes == [second]

    ca.rotate_root()
    third = source.current()
    assert third.generation == second.generation + 1
    assert len(third.bundle.roots) == 2
    assert third.bundle.verify(third.svid.chain, now=clock.now) == third.spiffe_id
    unsubscribe()
    source.rotate()
    assert changes == [second, third]


def test_bundle_from_pem_needs_one_trust_domain(ca: CertificateAuthority) -> None:
    other = CertificateAuthority.create("other.org")
    with pytest.raises(InvalidArgument, match="one trust domain"):
        TrustBundle.from_pem(ca.bundle.pem() + other.bundle.pem())
    with pytest.raises(InvalidArgument, match=r"no certificate|not PEM"):
        TrustBundle.from_pem(b"")
