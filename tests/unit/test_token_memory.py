"""Verified path tokens are remembered per process: the same token seen again costs no signature
check, yet every check that depends on the call or the time still runs."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sdk.errors import PermissionDenied, Unauthenticated
from sdk.lru import Lru
from sdk.security import token
from sdk.security.ca import CertificateAuthority

TD = "example.org"
NSC = "spiffe://example.org/nsc/web"
NSMGR = "spiffe://example.org/nsmgr/node1"


@pytest.fixture
def signature_checks(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every signature check made, by the subject it checked (the memory starts empty)."""
    made: list[str] = []
    check = token._check_signature

    def counted(parts: list[str], signer: token._Signer, claims: token.Claims) -> None:
        made.append(claims.subject)
        check(parts, signer, claims)

    monkeypatch.setattr(token, "_check_signature", counted)
    monkeypatch.setattr(token, "_VERIFIED", Lru(token._VERIFIED_KEPT))
    yield made


def _setup(ttl: float = 600) -> tuple[CertificateAuthority, float, str]:
    ca = CertificateAuthority.create(TD)
    start = ca.root.not_valid_before_utc.timestamp() + 3600
    svid = ca.issue(NSC, ttl=ttl, now=start)
    signed, _ = token.sign(svid, NSMGR, "seg", now=start, lifetime=60)
    return ca, start, signed


def test_a_token_seen_again_is_not_checked_again(signature_checks: list[str]) -> None:
    ca, start, signed = _setup()
    bundle = ca.bundle
    for offset in (1, 2, 3):
        claims = token.verify(signed, bundle, start + offset, audience=NSMGR, segment_id="seg",
                              previous_token="")
        assert claims.subject == NSC
    assert signature_checks == [NSC]


def test_a_remembered_token_still_expires_and_binds(signature_checks: list[str]) -> None:
    ca, start, signed = _setup()
    bundle = ca.bundle
    token.verify(signed, bundle, start + 1)
    with pytest.raises(PermissionDenied, match="is for"):
        token.verify(signed, bundle, start + 1, audience="spiffe://example.org/nse/x")
    with pytest.raises(PermissionDenied, match="replayed"):
        token.verify(signed, bundle, start + 1, segment_id="other")
    with pytest.raises(PermissionDenied, match="does not chain"):
        token.verify(signed, bundle, start + 1, previous_token="something")
    with pytest.raises(Unauthenticated, match="expired"):
        token.verify(signed, bundle, start + 61)
    assert token.verify(signed, bundle, start + 61, allow_expired=True).subject == NSC
    assert signature_checks == [NSC]  # all of these were answered from memory
    with pytest.raises(Unauthenticated, match="longer than a close accepts"):
        token.verify(signed, bundle, start + 60 + token.CLOSE_GRACE + 1, allow_expired=True)
    assert token._memo_key(bundle, signed) not in token._VERIFIED  # past the grace: forgotten


def test_memory_is_per_bundle_and_ends_with_the_signer(signature_checks: list[str]) -> None:
    ca, start, signed = _setup(ttl=600)
    bundle = ca.bundle
    token.verify(signed, bundle, start + 1)
    foreign = CertificateAuthority.create(TD)  # same trust domain name, another root
    with pytest.raises(Unauthenticated, match="signer rejected"):
        token.verify(signed, foreign.bundle, start + 1)
    # A close within the grace after the SVID expired is checked at the token's issue time
    # (remembered); later the signer's chain is checked again and refused.
    assert token.verify(signed, bundle, start + 100, allow_expired=True).subject == NSC
    with pytest.raises(Unauthenticated, match="signer rejected"):
        token.verify(signed, bundle, start + 601)


def test_an_altered_token_is_checked_in_full(signature_checks: list[str]) -> None:
    ca, start, signed = _setup()
    bundle = ca.bundle
    token.verify(signed, bundle, start + 1)
    header, claims, signature = signed.split(".")
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    with pytest.raises(Unauthenticated, match="signature does not verify"):
        token.verify(f"{header}.{claims}.{flipped}", bundle, start + 1)
    with pytest.raises(Unauthenticated, match="signature does not verify"):  # not remembered
        token.verify(f"{header}.{claims}.{flipped}", bundle, start + 1)
    assert signature_checks == [NSC, NSC, NSC]


def test_memory_is_bounded(signature_checks: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(token._VERIFIED, "size", 2)
    ca = CertificateAuthority.create(TD)
    start = ca.root.not_valid_before_utc.timestamp() + 3600
    svid = ca.issue(NSC, ttl=600, now=start)
    bundle = ca.bundle
    signed = [token.sign(svid, NSMGR, f"seg{i}", now=start)[0] for i in range(3)]
    for text in signed:
        token.verify(text, bundle, start + 1)
    assert len(token._VERIFIED) == 2
    token.verify(signed[0], bundle, start + 1)  # the oldest was forgotten: checked again
    token.verify(signed[2], bundle, start + 1)  # still remembered
    assert len(signature_checks) == 4


def test_the_memories_hold_no_token_texts(
    signature_checks: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A token text is ~1.6 KB (most of it its signer's chain): the memories keep a digest."""
    monkeypatch.setattr(token, "_NAMED", Lru(token._NAMED_KEPT))
    ca, start, signed = _setup()
    token.verify(signed, ca.bundle, start + 1)
    assert token.path_identities([signed]) == {NSC, NSMGR}
    held = [key[1] for key in token._VERIFIED] + list(token._NAMED)
    assert len(held) == 2 and all(len(key) == 32 for key in held)  # digests, not ~1.6 KB texts
    assert token.path_identities([signed]) == {NSC, NSMGR}  # answered from memory
