"""The route a node manager hands its forwarder (``sdk.networkservice.route``): signed chains of
client, nsmgr and forwarder in one process, on one clock."""

from __future__ import annotations

import pytest

from api.proto.connection_pb2 import Connection
from api.proto.networkservice_pb2 import NetworkServiceRequest
from sdk.chain import CallContext
from sdk.errors import FailedPrecondition, PermissionDenied
from sdk.grpcutil import ROUTE_HEADERS
from sdk.networkservice.client import CLIENT_URL, SEND_HEADERS
from sdk.networkservice.core import NetworkServiceChain
from sdk.networkservice.route import MAX_URL, FollowRoute, HandRoute, Route, route_from
from sdk.networkservice.toendpoint import MECHANISM_CLASS
from sdk.networkservice.token import NEXT_HOP_ID, SignPathSegment, VerifyPath
from sdk.networkservice.updatepath import UpdatePath
from sdk.security.source import CaSvidSource
from sdk.testing import Check
from tests.unit.test_security_token import NSC, NSE, NSMGR, Capture, Context, Hops, denied_count

FWD = "spiffe://example.org/forwarder/node1"
ROUTE = Route("unix:///run/vwire/nse-db.sock", NSE, "LOCAL")


def chosen(route: Route) -> Check:
    """What ``RouteToEndpoint`` leaves for ``HandRoute``."""
    def choose(request: NetworkServiceRequest, ctx: CallContext) -> None:
        ctx.values[CLIENT_URL] = route.url
        ctx.values[NEXT_HOP_ID] = route.spiffe_id
        ctx.values[MECHANISM_CLASS] = route.mechanism_class
    return Check(choose)


def to_forwarder(request: NetworkServiceRequest, ctx: CallContext) -> None:
    ctx.values[NEXT_HOP_ID] = FWD  # what SelectForwarder sets


async def handed(hops: Hops, route: Route = ROUTE) -> tuple[NetworkServiceRequest, dict[str, str]]:
    """The client's request through an nsmgr that hands ``route`` on: the request it sends its
    forwarder and the headers that go with it."""
    sent: list[NetworkServiceRequest] = []
    contexts: list[CallContext] = []
    nsmgr = NetworkServiceChain([
        VerifyPath(hops.nsmgr, clock=hops.clock), UpdatePath("nsmgr"), chosen(route),
        HandRoute(), Check(to_forwarder), SignPathSegment(hops.nsmgr, clock=hops.clock),
        Context(contexts), Capture(sent),
    ])
    conn = await hops.client_request()
    await nsmgr.run_request(NetworkServiceRequest(connection=conn), CallContext(peer=NSC))
    headers = contexts[0].values.get(SEND_HEADERS)
    assert headers is not None
    return sent[0], headers


def forwarder(hops: Hops, seen: list[CallContext], nsmgr_id: str = NSMGR) -> NetworkServiceChain:
    source = CaSvidSource(hops.ca, FWD, ttl=3600, clock=hops.clock)
    return NetworkServiceChain([
        VerifyPath(source, clock=hops.clock), UpdatePath("forwarder"),
        FollowRoute(lambda: nsmgr_id), Context(seen),
    ])


@pytest.fixture
def hops() -> Hops:
    return Hops()


async def test_the_forwarder_follows_the_route_its_nsmgr_signed(hops: Hops) -> None:
    request, headers = await handed(hops)
    assert headers == dict(zip(ROUTE_HEADERS, ROUTE, strict=True))
    seen: list[CallContext] = []
    await forwarder(hops, seen).run_request(request, CallContext(peer="unix:", headers=headers))
    values = seen[0].values
    assert (values[CLIENT_URL], values[NEXT_HOP_ID], values[MECHANISM_CLASS]) == ROUTE


@pytest.mark.parametrize("changed", [
    Route("tcp://10.0.0.9:5002", NSE, "LOCAL"),  # another place
    Route(ROUTE.url, "spiffe://example.org/nse/other", "LOCAL"),  # signed for another
    Route(ROUTE.url, NSE, "REMOTE"),  # another class of mechanism
])
async def test_a_route_the_nsmgr_did_not_sign_is_refused(hops: Hops, changed: Route) -> None:
    request, _ = await handed(hops)
    before = denied_count("route")
    seen: list[CallContext] = []
    with pytest.raises(PermissionDenied, match="not the one the nsmgr signed"):
        await forwarder(hops, seen).run_request(
            request, CallContext(peer="unix:", headers=changed.headers()))
    assert seen == [] and denied_count("route") == before + 1


async def test_a_route_from_another_signer_is_refused(hops: Hops) -> None:
    request, headers = await handed(hops)
    seen: list[CallContext] = []
    for nsmgr_id, why in [("spiffe://example.org/nsmgr/node2", "not from this forwarder's nsmgr"),
                          ("", "not registered yet")]:
        with pytest.raises(PermissionDenied, match=why):
            await forwarder(hops, seen, nsmgr_id).run_request(
                NetworkServiceRequest(connection=request.connection),
                CallContext(peer="unix:", headers=headers))
    assert seen == []


async def test_without_a_route_nothing_goes_on_and_a_close_keeps_its_target() -> None:
    seen: list[CallContext] = []
    chain = NetworkServiceChain([UpdatePath("forwarder"), FollowRoute(lambda: ""), Context(seen)])
    request = NetworkServiceRequest(connection=Connection(id="c", network_service="db"))
    with pytest.raises(FailedPrecondition, match="carries no route"):
        await chain.run_request(request, CallContext())
    assert seen == []
    await chain.run_request(request, CallContext(headers=ROUTE.headers()))  # unsigned: followed
    assert seen[0].values[CLIENT_URL] == ROUTE.url

    closes: list[CallContext] = []
    closing = NetworkServiceChain([FollowRoute(lambda: ""), Check(
        on_close=lambda conn, ctx: closes.append(ctx))])
    await closing.run_close(Connection(id="c"), CallContext())
    await closing.run_close(Connection(id="c"), CallContext(headers=ROUTE.headers()))
    assert [ctx.values.get(CLIENT_URL) for ctx in closes] == [None, ROUTE.url]


@pytest.mark.parametrize(("headers", "named"), [
    ({ROUTE_HEADERS[1]: NSE, ROUTE_HEADERS[2]: "LOCAL"}, ROUTE_HEADERS[0]),
    ({**ROUTE.headers(), ROUTE_HEADERS[0]: "x" * (MAX_URL + 1)}, ROUTE_HEADERS[0]),
    ({**ROUTE.headers(), ROUTE_HEADERS[0]: "unix:///a\nb"}, ROUTE_HEADERS[0]),
    ({ROUTE_HEADERS[0]: ROUTE.url, ROUTE_HEADERS[2]: "LOCAL"}, ROUTE_HEADERS[1]),
    ({**ROUTE.headers(), ROUTE_HEADERS[2]: "SIDEWAYS"}, ROUTE_HEADERS[2]),
])
def test_a_malformed_route_names_its_header(headers: dict[str, str], named: str) -> None:
    with pytest.raises(FailedPrecondition, match=named):
        route_from(headers)


def test_no_route_headers_is_no_route_and_each_field_is_bound() -> None:
    assert route_from({"traceparent": "00-x"}) is None
    assert route_from(ROUTE.headers()) == ROUTE
    bindings = {ROUTE.binding(), Route("unix:///x", NSE, "LOCAL").binding(),
                Route(ROUTE.url, "", "LOCAL").binding(), Route(ROUTE.url, NSE, "REMOTE").binding()}
    assert len(bindings) == 4
