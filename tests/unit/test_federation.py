"""Trust federation (sdk.security.federation): the bundle set verifies each identity against its
own trust domain's bundle, foreign bundles are checked on import, stored as
``federated/<td>.pem`` and picked up by running sources; path tokens verify across federated
trust domains."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sdk.errors import FailedPrecondition, InvalidArgument, NotFound, Unauthenticated
from sdk.security import token
from sdk.security.ca import CertificateAuthority
from sdk.security.federation import BundleSet, foreign_bundle, read_federated, write_federated
from sdk.security.policy import parse_policy
from sdk.security.source import CaSvidSource, FileSvidSource
from sdk.security.svid import FEDERATED_DIR, check_svid_files, write_svid

A, B, C = "cloud-a", "cloud-b", "cloud-c"
A_NSC = f"spiffe://{A}/nsc/web"
B_NSE = f"spiffe://{B}/nse/db"


@pytest.fixture(scope="module")
def cas() -> dict[str, CertificateAuthority]:
    then = time.time() - 3600
    return {td: CertificateAuthority.create(td, now=then) for td in (A, B, C)}


def test_a_set_verifies_each_identity_against_its_own_trust_domain(
    cas: dict[str, CertificateAuthority],
) -> None:
    trust = BundleSet(cas[A].bundle, (cas[B].bundle,))
    assert str(trust.verify(cas[A].issue(A_NSC).chain)) == A_NSC
    assert str(trust.verify(cas[B].issue(B_NSE).chain)) == B_NSE
    assert trust.trust_domains == [A, B]
    assert len(trust.roots) == 2


def test_an_unfederated_trust_domain_is_refused_naming_it_and_the_fix(
    cas: dict[str, CertificateAuthority],
) -> None:
    trust = BundleSet(cas[A].bundle)
    with pytest.raises(Unauthenticated) as caught:
        trust.verify(cas[B].issue(B_NSE).chain)
    assert f"trust domain {B!r}, which is not federated with {A!r}" in str(caught.value)
    assert "nsmctl ca federate" in str(caught.value)
    with pytest.raises(Unauthenticated, match="nsmctl ca federate"):
        trust.require(B)


def test_a_set_holds_one_bundle_per_trust_domain(cas: dict[str, CertificateAuthority]) -> None:
    with pytest.raises(InvalidArgument, match="given twice"):
        BundleSet(cas[A].bundle, (cas[B].bundle, cas[B].bundle))
    with pytest.raises(InvalidArgument, match="given twice"):
        BundleSet(cas[A].bundle, (cas[A].bundle,))
    trust = BundleSet(cas[A].bundle, (cas[B].bundle,))
    assert trust.federating(cas[B].bundle).trust_domains == [A, B]  # replaced, not added
    assert trust.without(B).trust_domains == [A]


def test_foreign_bundle_refuses_what_is_not_a_foreign_root(
    cas: dict[str, CertificateAuthority],
) -> None:
    assert foreign_bundle(cas[B].bundle.pem(), A).trust_domain == B
    with pytest.raises(InvalidArgument, match="local trust domain 'cloud-a'"):
        foreign_bundle(cas[A].bundle.pem(), A)
    with pytest.raises(InvalidArgument, match="holds no root certificate"):
        foreign_bundle(b"no roots here\n", A)
    with pytest.raises(InvalidArgument, match="name 2 trust domains"):
        foreign_bundle(cas[B].bundle.pem() + cas[C].bundle.pem(), A)
    with pytest.raises(InvalidArgument, match="not a CA certificate"):
        foreign_bundle(cas[B].issue(B_NSE).chain_pem(), A)
    with pytest.raises(InvalidArgument, match="not 'cloud-c'"):
        foreign_bundle(cas[B].bundle.pem(), A, C)
    with pytest.raises(InvalidArgument, match="expired"):
        foreign_bundle(cas[B].bundle.pem(), A, now=time.time() + 11 * 365 * 86400)


def test_the_ca_stores_federation_and_loads_it_back(
    tmp_path: Path, cas: dict[str, CertificateAuthority]
) -> None:
    ca = CertificateAuthority.init(tmp_path / "ca", A)
    ca.federate(cas[B].bundle)
    assert (tmp_path / "ca" / FEDERATED_DIR / f"{B}.pem").read_bytes() == cas[B].bundle.pem()
    assert CertificateAuthority.load(tmp_path / "ca").trust.trust_domains == [A, B]
    with pytest.raises(InvalidArgument, match="local trust domain"):
        ca.federate(ca.bundle)
    ca.unfederate(B)
    assert CertificateAuthority.load(tmp_path / "ca").trust.trust_domains == [A]
    assert not (tmp_path / "ca" / FEDERATED_DIR / f"{B}.pem").exists()
    with pytest.raises(NotFound, match="not federated"):
        ca.unfederate(B)


def test_write_federated_makes_the_folder_hold_exactly_the_bundles(
    tmp_path: Path, cas: dict[str, CertificateAuthority]
) -> None:
    assert not write_federated(tmp_path, ())
    assert not (tmp_path / FEDERATED_DIR).exists()
    assert write_federated(tmp_path, (cas[B].bundle, cas[C].bundle))
    assert not write_federated(tmp_path, (cas[B].bundle, cas[C].bundle))
    assert write_federated(tmp_path, (cas[C].bundle,))
    assert [b.trust_domain for b in read_federated(tmp_path, A)] == [C]


def test_a_federated_file_whose_name_disagrees_with_its_roots_is_refused(
    tmp_path: Path, cas: dict[str, CertificateAuthority]
) -> None:
    (tmp_path / FEDERATED_DIR).mkdir()
    (tmp_path / FEDERATED_DIR / f"{C}.pem").write_bytes(cas[B].bundle.pem())
    with pytest.raises(InvalidArgument, match="not 'cloud-c'"):
        read_federated(tmp_path, A)


def test_federated_files_others_could_write_are_refused(
    tmp_path: Path, cas: dict[str, CertificateAuthority]
) -> None:
    write_svid(tmp_path, cas[A].issue(A_NSC), cas[A].bundle)
    write_federated(tmp_path, (cas[B].bundle,))
    check_svid_files(tmp_path)
    path = tmp_path / FEDERATED_DIR / f"{B}.pem"
    os.chmod(path, 0o666)
    with pytest.raises(FailedPrecondition, match=f"{path} is writable by group or others"):
        check_svid_files(tmp_path)
    os.chmod(path, 0o644)
    os.chmod(tmp_path / FEDERATED_DIR, 0o777)
    with pytest.raises(FailedPrecondition, match="chmod go-w"):
        check_svid_files(tmp_path)


def test_a_file_source_picks_up_a_new_and_a_removed_federated_bundle(
    tmp_path: Path, cas: dict[str, CertificateAuthority]
) -> None:
    write_svid(tmp_path, cas[A].issue(A_NSC), cas[A].bundle)
    source = FileSvidSource(tmp_path, poll=0)
    first = source.current()
    assert first.trust.trust_domains == [A]
    write_federated(tmp_path, (cas[B].bundle,))
    second = source.current()
    assert second.generation == first.generation + 1
    assert str(second.trust.verify(cas[B].issue(B_NSE).chain)) == B_NSE
    write_federated(tmp_path, ())
    third = source.current()
    assert third.trust.trust_domains == [A]
    with pytest.raises(Unauthenticated, match="not federated"):
        third.trust.verify(cas[B].issue(B_NSE).chain)


def test_a_ca_source_follows_its_cas_federation(cas: dict[str, CertificateAuthority]) -> None:
    ca = CertificateAuthority.create(A)
    source = CaSvidSource(ca, A_NSC)
    assert source.current().foreign == ()
    ca.federate(cas[B].bundle)
    assert source.current().trust.trust_domains == [A, B]


def test_a_path_token_signed_in_one_trust_domain_verifies_in_a_federated_one(
    cas: dict[str, CertificateAuthority],
) -> None:
    signed, _ = token.sign(cas[A].issue(A_NSC), B_NSE, "seg-1")
    claims = token.verify(signed, BundleSet(cas[B].bundle, (cas[A].bundle,)), audience=B_NSE)
    assert claims.subject == A_NSC
    with pytest.raises(Unauthenticated, match="not federated with 'cloud-b'"):
        token.verify(signed, BundleSet(cas[B].bundle), audience=B_NSE)
    with pytest.raises(Unauthenticated, match="not signed by a root of trust domain 'cloud-b'"):
        token.verify(signed, cas[B].bundle, audience=B_NSE)  # a single bundle: local IDs only


def test_policies_name_foreign_identities_by_their_own_trust_domain() -> None:
    policy = parse_policy(f"""
requests:
  - rule: cloud-a-web-to-db
    services: [secure-db]
    clients: ["{A_NSC}", "spiffe://{A}/nsc/ops/**"]
registrations:
  - rule: remote-db
    services: [secure-db]
    endpoints: ["spiffe://{B}/nse/db-*"]
""")
    assert policy.explain(A_NSC, "secure-db").allowed
    assert not policy.explain(f"spiffe://{C}/nsc/web", "secure-db").allowed
    assert policy.explain_registration(f"spiffe://{B}/nse/db-1", "secure-db").allowed


@pytest.mark.parametrize("glob", ["spiffe://*/nsc/web", "spiffe://cloud-?/nsc/web",
                                  "spiffe://**", "spiffe://Cloud-B/nsc/web"])
def test_a_policy_identity_glob_must_name_its_trust_domain(glob: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_policy(f'requests: [{{services: [db], clients: ["{glob}"]}}]')
    assert caught.value.field == "requests[0].clients[0]"


@settings(max_examples=200, deadline=None)
@given(junk=st.binary(max_size=2048), cut=st.integers(min_value=0, max_value=2000))
def test_foreign_bundle_refuses_any_garbage_with_invalid_argument(junk: bytes, cut: int) -> None:
    """Random bytes, and a real bundle cut short or with junk spliced in: InvalidArgument (a
    message naming the file), never another exception."""
    pem = _GARBAGE_BASE
    for data in (junk, pem[:cut], pem[:cut] + junk + pem[cut:]):
        with contextlib.suppress(InvalidArgument):
            foreign_bundle(data, A)


_GARBAGE_BASE = CertificateAuthority.create(B).bundle.pem()
