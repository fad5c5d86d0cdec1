"""Every chain element passes the shared conformance checks (``sdk.testing``): a request comes
back once, a refresh works, a close reaches downstream once, a downstream error comes back
unchanged, and no task is left running. Elements that read a fact another element hands them
get a stand-in for that element in front (``front``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence

import pytest

from api.mechanisms import REMOTE
from api.proto.connection_pb2 import Mechanism
from api.proto.networkservice_pb2 import NetworkServiceRequest
from api.proto.registry_pb2 import NetworkService, NetworkServiceEndpoint
from sdk.chain import CallContext
from sdk.channels import ChannelPool
from sdk.networkservice.chosen import RequireChosenEndpoint
from sdk.networkservice.client import CLIENT_URL
from sdk.networkservice.clientbegin import ClientBegin
from sdk.networkservice.core import NetworkServiceElement
from sdk.networkservice.discover import CANDIDATES, Discover
from sdk.networkservice.enterdomain import EnterDomain
from sdk.networkservice.excludedprefixes import ExcludePrefixes
from sdk.networkservice.forgetdead import ForgetUnreachable
from sdk.networkservice.forwarder import SelectForwarder
from sdk.networkservice.heal import Heal
from sdk.networkservice.load import CountLoad
from sdk.networkservice.markdomain import MarkDomain
from sdk.networkservice.measure import Measure
from sdk.networkservice.mechanisms import FilterMechanisms
from sdk.networkservice.metadata import Metadata
from sdk.networkservice.named import CheckNamedEndpoint
from sdk.networkservice.noloop import RefuseLoop
from sdk.networkservice.owner import ConnectionOwner
from sdk.networkservice.rebuild import RebuildOnHeal
from sdk.networkservice.refresh import Refresh
from sdk.networkservice.relays import RequireRelays
from sdk.networkservice.reselect import Reselect
from sdk.networkservice.retry import Retry
from sdk.networkservice.route import FollowRoute, HandRoute, Route
from sdk.networkservice.select import SelectEndpoint
from sdk.networkservice.switch import Case, Switch
from sdk.networkservice.toendpoint import MECHANISM_CLASS, RouteToEndpoint
from sdk.networkservice.token import CLIENT_ID
from sdk.networkservice.trace import Trace
from sdk.registry.core import RegistryChain
from sdk.registry.kinds import ENDPOINT, SERVICE
from sdk.registry.memory import MemoryStore
from sdk.registry.persist import Persist
from sdk.select.breaker import CircuitBreaker
from sdk.select.match import WeightedCandidate
from sdk.select.policy import RoundRobin
from sdk.testing import Check, Count, conformance_problems

PROVIDER = NetworkServiceEndpoint(name="nse-1", network_service_names=["conformance"],
                                  url="unix:///nowhere/nse-1.sock")


async def endpoints() -> RegistryChain[NetworkServiceEndpoint]:
    chain: RegistryChain[NetworkServiceEndpoint] = RegistryChain(
        [Persist(ENDPOINT, MemoryStore())])
    await chain.register(PROVIDER)
    return chain


class Forwarders:
    """This node's forwarders as the node manager's elements see them: one, always there."""

    def url(self, name: str) -> str | None:
        return "unix:///nowhere/fwd.sock" if name == "fwd" else None

    def spiffe_id(self, name: str) -> str:
        return ""

    def pick(self) -> tuple[str, str]:
        return "fwd", "unix:///nowhere/fwd.sock"


class LocalEndpoints:
    def url(self, name: str) -> str | None:
        return "unix:///nowhere/nse-1.sock" if name == "nse-1" else None

    def spiffe_id(self, name: str) -> str:
        return ""


def handing(setter: Callable[[NetworkServiceRequest, CallContext], None]) -> (
    Callable[[], Sequence[NetworkServiceElement]]
):
    """Metadata, then a stand-in that sets what an element in front would have set."""
    return lambda: [Metadata(), Check(setter)]


def named(request: NetworkServiceRequest) -> None:
    request.connection.network_service_endpoint_name = "nse-1"


def in_domain_b(request: NetworkServiceRequest) -> None:
    request.connection.network_service_endpoint_name = "nse-1@b"


def candidates(request: NetworkServiceRequest, ctx: CallContext) -> None:
    ctx.values[CANDIDATES] = [WeightedCandidate(PROVIDER, 1)]


def remote(request: NetworkServiceRequest, ctx: CallContext) -> None:
    ctx.values[MECHANISM_CLASS] = REMOTE
    if not request.mechanism_preferences:
        request.mechanism_preferences.append(Mechanism(cls=REMOTE, type="WIREGUARD"))


async def registry_elements() -> dict[str, tuple[Callable[[], NetworkServiceElement], dict[str,
                                                                                          object]]]:
    found = await endpoints()
    services: RegistryChain[NetworkService] = RegistryChain([Persist(SERVICE, MemoryStore())])
    return {
        "discover": (lambda: Discover(services, found), {"front": lambda: [Metadata()]}),
        "check-named-endpoint": (lambda: CheckNamedEndpoint(found),
                                 {"prepare": named, "front": lambda: [Metadata()]}),
        "route-to-endpoint": (lambda: RouteToEndpoint(LocalEndpoints(), found),
                              {"prepare": named}),
    }


ELEMENTS: dict[str, tuple[Callable[[], NetworkServiceElement], dict[str, object]]] = {
    "switch": (lambda: Switch(Case(lambda conn: True, [Count()]), default=[Count()]),
               {"front": lambda: [Metadata()]}),
    "select-endpoint": (lambda: SelectEndpoint(RoundRobin()),
                        {"front": handing(candidates)}),
    "reselect": (Reselect, {}),
    "require-chosen-endpoint": (RequireChosenEndpoint, {"prepare": named}),
    "rebuild-on-heal": (RebuildOnHeal, {}),
    "count-load": (CountLoad, {"front": lambda: [Metadata()], "prepare": named}),
    "retry": (lambda: Retry(CircuitBreaker(), attempts=1), {"prepare": named}),
    "select-forwarder": (lambda: SelectForwarder(Forwarders()), {"front": lambda: [Metadata()]}),
    "hand-route": (HandRoute, {"front": handing(
        lambda r, ctx: ctx.values.__setitem__(CLIENT_URL, "unix:///nowhere/nse-1.sock"))}),
    "follow-route": (lambda: FollowRoute(lambda: ""), {"front": handing(
        lambda r, ctx: ctx.headers.update(Route("unix:///nowhere/nse-1.sock", "", REMOTE)
                                          .headers()))}),
    "filter-mechanisms": (FilterMechanisms, {"front": handing(remote)}),
    "require-relays": (RequireRelays, {}),
    "enter-domain": (lambda: EnterDomain("b"), {"prepare": in_domain_b}),
    "refuse-loop": (lambda: RefuseLoop(lambda: {"unix:///nowhere/self.sock"}), {}),
    "mark-domain": (lambda: MarkDomain("a"), {}),
    "forget-unreachable": (lambda: ForgetUnreachable(ChannelPool()), {}),
    "connection-owner": (ConnectionOwner, {"front": handing(
        lambda r, ctx: ctx.values.__setitem__(CLIENT_ID, "spiffe://t/nsc/a"))}),
    "exclude-prefixes": (ExcludePrefixes, {}),
    "client-begin": (ClientBegin, {}),
    "refresh": (lambda: Refresh(60.0), {"front": lambda: [ClientBegin()]}),
    "heal": (lambda: Heal(ChannelPool(), "unix:///nowhere/nsmgr.sock"),
             {"front": lambda: [ClientBegin()]}),
    "trace": (lambda: Trace("conformance"), {}),
    "measure": (lambda: Measure("conformance"), {}),
}


@pytest.fixture
async def pool() -> AsyncIterator[None]:
    yield


@pytest.mark.parametrize("name", sorted(ELEMENTS))
async def test_element_conforms(name: str) -> None:
    factory, options = ELEMENTS[name]
    assert await conformance_problems(factory, **options) == []  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["discover", "check-named-endpoint", "route-to-endpoint"])
async def test_registry_reading_element_conforms(name: str) -> None:
    factory, options = (await registry_elements())[name]
    assert await conformance_problems(factory, **options) == []  # type: ignore[arg-type]
