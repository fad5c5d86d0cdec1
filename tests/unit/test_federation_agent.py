"""The node agent hands workloads the federated bundles with their SVIDs, re-read from the CA's
directory on every answer: a trust domain federated (or removed) with ``nsmctl ca federate``
while the agent runs reaches the workload's source at its next renewal, no restart. A malformed
federated bundle in an answer is refused by the workload's source."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import pytest

from agent.attest import Pod
from agent.server import AgentServer
from sdk.errors import Unavailable
from sdk.security.ca import CertificateAuthority
from sdk.security.workload import AgentSvidSource, _parse

A, B = "cloud-a", "cloud-b"


class OnlyMe:
    """This test process is pod ``web`` of namespace ``shop``; nothing else is a pod."""

    def pod_of(self, pid: int) -> Pod | None:
        return Pod("web", "shop", "frontend") if pid == os.getpid() else None


async def test_federation_changed_on_disk_reaches_the_workload_at_renewal(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "ca"
    CertificateAuthority.init(directory, A)
    foreign = CertificateAuthority.create(B, now=time.time() - 60)
    server = AgentServer(tmp_path / "agent.sock", CertificateAuthority.load(directory), OnlyMe(),
                         100.0)
    await server.start()
    now = [time.time()]
    try:
        source = await asyncio.to_thread(AgentSvidSource, f"unix://{server.path}",
                                         clock=lambda: now[0])
        assert source.current().trust.trust_domains == [A]
        CertificateAuthority.load(directory).federate(foreign.bundle)  # another process
        now[0] = source.renew_at + 1
        renewed = await asyncio.to_thread(source.current)
        assert renewed.trust.trust_domains == [A, B]
        assert renewed.trust.require(B).pem() == foreign.bundle.pem()
        CertificateAuthority.load(directory).unfederate(B)
        now[0] = source.renew_at + 1
        assert (await asyncio.to_thread(source.current)).trust.trust_domains == [A]
    finally:
        await server.stop()


def test_a_federated_bundle_of_the_local_trust_domain_in_an_answer_is_refused() -> None:
    ca = CertificateAuthority.create(A, now=time.time() - 60)
    svid = ca.issue(f"spiffe://{A}/ns/shop/sa/frontend")
    answer: dict[str, Any] = {
        "spiffe_id": str(svid.spiffe_id), "svid_pem": svid.chain_pem().decode(),
        "key_pem": svid.key_pem().decode(), "bundle_pem": ca.bundle.pem().decode(),
        "federated_bundles": {A: CertificateAuthority.create(A).bundle.pem().decode()},
    }
    with pytest.raises(Unavailable, match="local trust domain 'cloud-a'"):
        _parse(answer, "unix:///agent.sock")
