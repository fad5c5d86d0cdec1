"""A signed path that crosses two trust domains: a client and its nsmgr in cloud-a, a gateway and
an endpoint in cloud-b. Every hop's VerifyPath checks each token against the bundle of the trust
domain its signer names: with federation the chain verifies and the endpoint sees the client's
own cloud-a ID; without it, the hop refuses naming the trust domain and the fix."""

from __future__ import annotations

import time

import pytest

from api.proto.connection_pb2 import Connection
from api.proto.networkservice_pb2 import NetworkServiceRequest
from sdk.chain import CallContext
from sdk.errors import Unauthenticated
from sdk.networkservice.core import NetworkServiceChain, NetworkServiceElement, NSCursor
from sdk.networkservice.token import CLIENT_ID, PATH_IDS, SignPathSegment, VerifyPath
from sdk.networkservice.updatepath import UpdatePath
from sdk.security.ca import CertificateAuthority
from sdk.security.source import CaSvidSource

A, B = "cloud-a", "cloud-b"
NSC = f"spiffe://{A}/nsc/web"
NSMGR = f"spiffe://{A}/nsmgr/a1"
GATEWAY = f"spiffe://{B}/gateway/b"
NSE = f"spiffe://{B}/nse/db"


class Keep(NetworkServiceElement):
    """Keeps each request and call context that reaches it."""

    def __init__(self) -> None:
        self.requests: list[NetworkServiceRequest] = []
        self.contexts: list[CallContext] = []

    async def request(self, request: NetworkServiceRequest, next: NSCursor) -> Connection:
        copy = NetworkServiceRequest()
        copy.CopyFrom(request)
        self.requests.append(copy)
        self.contexts.append(next.ctx)
        return await next.request(request)


def relay(source: CaSvidSource, name: str, audience: str, keep: Keep) -> NetworkServiceChain:
    return NetworkServiceChain([
        VerifyPath(source), UpdatePath(name), SignPathSegment(source, audience), keep,
    ])


async def cross(federate_b: bool) -> Keep:
    """Run one request nsc → nsmgr (cloud-a) → gateway → nse (cloud-b); returns what reached
    the endpoint's chain after its VerifyPath."""
    then = time.time() - 3600
    ca_a, ca_b = CertificateAuthority.create(A, now=then), CertificateAuthority.create(B, now=then)
    ca_a.federate(ca_b.bundle)
    if federate_b:
        ca_b.federate(ca_a.bundle)
    client = NetworkServiceChain([
        UpdatePath("nsc"), SignPathSegment(CaSvidSource(ca_a, NSC), NSMGR),
    ])
    conn = await client.run_request(NetworkServiceRequest(
        connection=Connection(id="c1", network_service="db")))
    at_nsmgr, at_gateway, at_nse = Keep(), Keep(), Keep()
    await relay(CaSvidSource(ca_a, NSMGR), "nsmgr", GATEWAY, at_nsmgr).run_request(
        NetworkServiceRequest(connection=conn), CallContext(peer=NSC))
    await relay(CaSvidSource(ca_b, GATEWAY), "gateway", NSE, at_gateway).run_request(
        at_nsmgr.requests[0], CallContext(peer=NSMGR))
    nse = NetworkServiceChain([VerifyPath(CaSvidSource(ca_b, NSE)), UpdatePath("nse"), at_nse])
    await nse.run_request(at_gateway.requests[0], CallContext(peer=GATEWAY))
    return at_nse


async def test_a_path_crossing_two_federated_trust_domains_verifies_at_every_hop() -> None:
    at_nse = await cross(federate_b=True)
    assert at_nse.contexts[0].values[CLIENT_ID] == NSC
    assert at_nse.contexts[0].values[PATH_IDS] == [NSC, NSMGR, GATEWAY]


async def test_a_hop_that_does_not_federate_the_signers_trust_domain_refuses() -> None:
    with pytest.raises(Unauthenticated) as caught:
        await cross(federate_b=False)
    assert f"trust domain {A!r}, which is not federated with {B!r}" in str(caught.value)
    assert "nsmctl ca federate" in str(caught.value)
