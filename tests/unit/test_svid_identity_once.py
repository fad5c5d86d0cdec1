"""An SVID reads its SPIFFE ID from the leaf certificate once: every path token signed asks for
it (``sub``), and parsing the URI SAN each time cost ~6 us per token."""

from __future__ import annotations

import pytest

from sdk.security import svid as svid_module
from sdk.security import token
from sdk.security.ca import CertificateAuthority


def test_the_spiffe_id_is_read_once_per_svid(monkeypatch: pytest.MonkeyPatch) -> None:
    ca = CertificateAuthority.create("example.org")
    svid = ca.issue("spiffe://example.org/nsmgr/n1", ttl=600)
    reads: list[object] = []
    read = svid_module.spiffe_id_of

    def counted(cert: object) -> object:
        reads.append(cert)
        return read(cert)  # type: ignore[arg-type]

    monkeypatch.setattr(svid_module, "spiffe_id_of", counted)
    for i in range(3):
        signed, _ = token.sign(svid, "spiffe://example.org/forwarder/n1", f"seg-{i}")
        assert token.verify(signed, ca.bundle).subject == "spiffe://example.org/nsmgr/n1"
    assert str(svid.spiffe_id) == "spiffe://example.org/nsmgr/n1"
    assert len([cert for cert in reads if cert is svid.leaf]) == 1
