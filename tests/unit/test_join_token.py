"""Join tokens and the join signer over real HTTPS on loopback: a node gets SVIDs for keys it
made itself, once per token; a token for another CA, a reused, expired or altered token and a bad
certificate request are refused, and a bad request does not spend the token; a node renews its
SVIDs with new keys by proving itself with its nsmgr SVID, and nothing else renews."""

from __future__ import annotations

import json
import ssl
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from nsmctl.joinsigner import JoinSigner, fetch_identity, pin_of, renew_due, renew_identity
from nsmctl.jointoken import JoinToken, TokenStore
from sdk.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from sdk.security.ca import CertificateAuthority
from sdk.security.source import FileSvidSource
from sdk.security.svid import read_svid, write_svid


@pytest.fixture
def ca_dir(tmp_path: Path) -> Path:
    CertificateAuthority.init(tmp_path / "ca", "join.test")
    return tmp_path / "ca"


@pytest.fixture
def signer(ca_dir: Path) -> Iterator[str]:
    running = JoinSigner(ca_dir, "tcp://127.0.0.1:0", ttl=600)
    port = running.start()
    yield f"tcp://127.0.0.1:{port}"
    running.stop()


def _token(ca_dir: Path, node: str = "vm-1", ttl: float = 60) -> JoinToken:
    ca = CertificateAuthority.load(ca_dir)
    return TokenStore(ca_dir).create(node, ca.trust_domain, pin_of(ca.root), ttl)


def test_node_gets_svids_for_its_own_keys_once(ca_dir: Path, signer: str,
                                                 tmp_path: Path) -> None:
    token = _token(ca_dir)
    assert JoinToken.parse(token.text()) == token
    fetch_identity(token, signer, tmp_path / "id")
    for kind in ("nsmgr", "forwarder"):
        material = FileSvidSource(tmp_path / "id" / kind).current()
        assert str(material.spiffe_id) == f"spiffe://join.test/{kind}/{kind}-vm-1"
        assert (tmp_path / "id" / kind / "svid.key").stat().st_mode & 0o777 == 0o600
        key = (tmp_path / "id" / kind / "svid.key").read_bytes()
        assert not [p for p in ca_dir.rglob("*") if p.is_file() and key in p.read_bytes()]
    assert list((ca_dir / "join-tokens").glob("*")) == []  # spent
    with pytest.raises(PermissionDenied, match="unknown, expired, already used"):
        fetch_identity(token, signer, tmp_path / "again")
    assert not (tmp_path / "again").exists()


def test_token_pinning_another_ca_is_refused_before_anything_is_sent(
        ca_dir: Path, signer: str, tmp_path: Path) -> None:
    other = CertificateAuthority.init(tmp_path / "other", "join.test")
    token = TokenStore(ca_dir).create("vm-1", "join.test", pin_of(other.root), 60)
    with pytest.raises(FailedPrecondition, match="does not hold the CA the token pins"):
        fetch_identity(token, signer, tmp_path / "id")
    assert len(list((ca_dir / "join-tokens").glob("*.json"))) == 1  # not spent


def test_expired_altered_and_foreign_node_tokens_are_refused(ca_dir: Path) -> None:
    now = [1000.0]
    store = TokenStore(ca_dir, clock=lambda: now[0])
    ca = CertificateAuthority.load(ca_dir)
    token = store.create("vm-1", ca.trust_domain, pin_of(ca.root), 30)
    for bad in (JoinToken(token.id, "0" * 64, "vm-1", token.trust_domain, token.pin),
                JoinToken(token.id, token.secret, "vm-2", token.trust_domain, token.pin)):
        with pytest.raises(PermissionDenied):
            store.consume(bad)
    now[0] += 31
    with pytest.raises(PermissionDenied):
        store.consume(token)
    assert list(store.directory.glob("*")) == []  # expired ones are swept
    for text in ("vwj1-!!", "nonsense", token.text()[:-6]):
        with pytest.raises(InvalidArgument) as caught:
            JoinToken.parse(text)
        assert token.secret not in str(caught.value)


def test_bad_request_is_refused_and_does_not_spend_the_token(ca_dir: Path, signer: str,
                                                             tmp_path: Path) -> None:
    token = _token(ca_dir)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    body = json.dumps({"token": token.text(), "csrs": {"nsmgr": "x", "forwarder": "y"}})
    request = urllib.request.Request(f"https://{signer.removeprefix('tcp://')}/join",
                                     body.encode(), {"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, context=context, timeout=10)
    assert caught.value.code == 400 and "csrs.nsmgr" in caught.value.read().decode()
    fetch_identity(token, signer, tmp_path / "id")  # still good


def test_node_renews_with_new_keys_proving_itself_with_its_nsmgr_svid(
        ca_dir: Path, signer: str, tmp_path: Path) -> None:
    identity = tmp_path / "id"
    fetch_identity(_token(ca_dir), signer, identity)
    before = {kind: read_svid(identity / kind)[0] for kind in ("nsmgr", "forwarder")}
    assert not renew_due(identity)
    assert renew_due(identity, now=before["nsmgr"].not_before + 0.6 * 600)
    assert renew_identity(signer, identity) == "vm-1"
    for kind, old in before.items():
        new, _ = read_svid(identity / kind)
        assert str(new.spiffe_id) == str(old.spiffe_id)
        assert new.serial != old.serial
        assert new.key.public_key().public_numbers() != old.key.public_key().public_numbers()


def test_renewal_needs_a_node_nsmgr_svid(ca_dir: Path, signer: str, tmp_path: Path) -> None:
    ca = CertificateAuthority.load(ca_dir)
    for kind in ("nsmgr", "forwarder"):  # a workload's SVID posing as the node's identity
        write_svid(tmp_path / "nsc" / kind, ca.issue("spiffe://join.test/nsc/vm-1"), ca.bundle)
    with pytest.raises(PermissionDenied, match="is not a node's nsmgr"):
        renew_identity(signer, tmp_path / "nsc")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    request = urllib.request.Request(f"https://{signer.removeprefix('tcp://')}/renew",
                                     b'{"csrs": {}}', {"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as caught:  # no client certificate at all
        urllib.request.urlopen(request, context=context, timeout=10)
    assert caught.value.code == 403
