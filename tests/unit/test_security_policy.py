"""Authorization policies: parsing, decisions, reload, the Authorize element, nsmctl policy check,
and registry ownership / registration authorization."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from api.proto.connection_pb2 import Connection
from api.proto.networkservice_pb2 import NetworkServiceRequest
from api.proto.registry_pb2 import NetworkService, NetworkServiceEndpoint
from nsmctl.app import main as nsmctl
from registry.store import open_store
from sdk.chain import CallContext
from sdk.errors import InvalidArgument, NotFound, PermissionDenied
from sdk.networkservice.authorize import Authorize
from sdk.networkservice.core import NetworkServiceChain
from sdk.networkservice.token import CLIENT_ID
from sdk.registry.core import RegistryChain
from sdk.registry.kinds import ENDPOINT, SERVICE
from sdk.registry.ownership import Ownership
from sdk.registry.persist import Persist
from sdk.registry.validate import Validate
from sdk.security.policy import (
    ALLOW_ALL,
    PolicyFile,
    StaticPolicy,
    glob_match,
    load_policy,
    parse_policy,
)
from sdk.security.registry_authorize import AuthorizeRegistration

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "policy.yaml"
WEB = "spiffe://example.org/nsc/web-1"
DB = "spiffe://example.org/nse/db-1"


def denied_count(kind: str) -> float:
    return REGISTRY.get_sample_value("vwire_authz_denied_total", {"kind": kind}) or 0.0


@pytest.fixture
def policy() -> StaticPolicy:
    return StaticPolicy(parse_policy(EXAMPLE.read_text()))


@pytest.mark.parametrize(
    ("glob", "text", "matches"),
    [
        ("spiffe://example.org/nsc/*", "spiffe://example.org/nsc/web", True),
        ("spiffe://example.org/nsc/*", "spiffe://example.org/nsc/web/x", False),
        ("spiffe://example.org/nsc/**", "spiffe://example.org/nsc/web/x", True),
        ("db-?", "db-1", True),
        ("db-?", "db-10", False),
        ("secure.db", "secureXdb", False),
        ("[a]", "[a]", True),
    ],
)
def test_globs(glob: str, text: str, matches: bool) -> None:
    assert glob_match(glob, text) is matches


def test_decisions_name_the_rule_and_the_reason(policy: StaticPolicy) -> None:
    p = policy.policy()
    yes = p.explain(WEB, "secure-db")
    assert (yes.allowed, yes.rule) == (True, "web-to-db")
    assert WEB in yes.reason
    no = p.explain("spiffe://example.org/nsc/mallory", "secure-db")
    assert not no.allowed and no.rule is None
    assert "not client spiffe://example.org/nsc/mallory" in no.reason
    assert not p.explain(None, "secure-db").allowed
    assert "covers the service but not client" in p.explain(WEB, "other").reason
    assert "no rule names this service" in parse_policy("{}").explain(WEB, "x").reason
    ops = "spiffe://example.org/nsc/ops/alice"
    assert p.explain(ops, "anything", {"team": "ops"}).allowed
    assert "needs label team=ops" in p.explain(ops, "anything", {"team": "dev"}).reason
    assert p.explain_registration(DB, "secure-db").allowed
    assert not p.explain_registration(WEB, "secure-db").allowed
    assert p.explain_registration("spiffe://example.org/nsmgr/n1", "x").allowed
    assert ALLOW_ALL.explain(None, "x").allowed


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("[1, 2]", "policy"),
        ("requests: {}", "requests"),
        ("requests: [{services: [a]}]", "requests[0]"),
        ("requests: [{services: [], clients: [x]}]", "requests[0].services"),
        ("requests: [{services: [a], clients: [1]}]", "requests[0].clients[0]"),
        ("requests: [{services: [a], clients: [x], colour: red}]", "requests[0]"),
        ("registrations: [{services: [a]}]", "registrations[0].endpoints"),
        ("requests: [{services: [a], labels: [x]}]", "requests[0].labels"),
        ("version: 2", "policy.version"),
        ("grants: []", "policy"),
        ("requests: [{rule: '', services: [a], clients: [b]}]", "requests[0].rule"),
        ("a: [", "policy"),
    ],
)
def test_malformed_policies_are_refused_naming_the_entry(text: str, where: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_policy(text)
    assert info.value.field == where


def test_policy_file_reloads_on_change_and_keeps_the_old_one_when_broken(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("requests: [{rule: one, services: [a], clients: ['**']}]")
    source = PolicyFile(path, poll=0)
    assert source.policy().explain(WEB, "a").allowed
    path.write_text("requests: [{rule: two, services: [b], clients: ['**']}]")
    assert not source.policy().explain(WEB, "a").allowed
    assert source.policy().explain(WEB, "b").rule == "two"
    path.write_text("requests: [{services: ")
    assert source.policy().explain(WEB, "b").rule == "two"


def test_no_policy_file_allows_all_and_a_missing_file_is_an_error(tmp_path: Path) -> None:
    assert load_policy(None).policy().explain(None, "x").allowed
    with pytest.raises(InvalidArgument, match="cannot be read"):
        load_policy(tmp_path / "nope.yaml")


async def test_authorize_element_checks_the_path_client_and_counts_denials(
    policy: StaticPolicy,
) -> None:
    chain = NetworkServiceChain([Authorize(policy)])
    ok = NetworkServiceRequest(connection=Connection(id="c", network_service="secure-db"))
    ctx = CallContext(peer="spiffe://example.org/nsmgr/n1")
    ctx.values[CLIENT_ID] = WEB
    await chain.run_request(ok, ctx)
    before = denied_count("request")
    with pytest.raises(PermissionDenied, match=r"no rule allows spiffe://example\.org/nsmgr/n1"):
        await chain.run_request(ok, CallContext(peer="spiffe://example.org/nsmgr/n1"))
    assert denied_count("request") == before + 1
    await chain.run_close(ok.connection, CallContext(peer="unix:"))  # closes are never refused


def test_nsmctl_policy_check_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    base = ["policy", "check", "--policy", str(EXAMPLE), "--service", "secure-db"]
    assert nsmctl([*base, "--client", WEB]) == 0
    assert "allowed: rule 'web-to-db'" in capsys.readouterr().out
    assert nsmctl([*base, "--client", "spiffe://example.org/nsc/mallory"]) == 1
    assert "denied: no rule allows" in capsys.readouterr().out
    assert nsmctl([*base, "--client", DB, "--register"]) == 0
    assert nsmctl(["policy", "check", "--policy", str(EXAMPLE), "--service", "anything",
                   "--client", "spiffe://example.org/nsc/ops/a", "--label", "team=ops"]) == 0
    assert nsmctl([*base, "--client", WEB, "--label", "novalue"]) == 2
    assert nsmctl(["policy", "check", "--policy", "/nonexistent.yaml", "--service", "s",
                   "--client", WEB]) == 1
    assert "cannot be read" in capsys.readouterr().err


def _endpoint_chain(policy: StaticPolicy) -> tuple[RegistryChain[NetworkServiceEndpoint],
                                                   Ownership[NetworkServiceEndpoint],
                                                   Persist[NetworkServiceEndpoint]]:
    ownership: Ownership[NetworkServiceEndpoint] = Ownership(ENDPOINT)
    persist = Persist(ENDPOINT, open_store("memory://"))
    chain = RegistryChain([Validate(ENDPOINT), AuthorizeRegistration(policy), ownership, persist])
    return chain, ownership, persist


def _nse(name: str = "db-1", services: tuple[str, ...] = ("secure-db",)) -> NetworkServiceEndpoint:
    return NetworkServiceEndpoint(name=name, network_service_names=list(services),
                                  url="tcp://10.0.0.1:5001")


async def test_only_the_owner_may_refresh_change_or_unregister(policy: StaticPolicy) -> None:
    chain, ownership, persist = _endpoint_chain(StaticPolicy(ALLOW_ALL))
    other = "spiffe://example.org/nse/db-2"
    await chain.register(_nse(), CallContext(peer=DB))
    assert ownership.owner("db-1") == DB
    await chain.register(_nse(), CallContext(peer=DB))  # refresh by the owner
    before = denied_count("ownership")
    with pytest.raises(PermissionDenied, match=f"belongs to {DB}: {other} may not change"):
        await chain.register(_nse(services=("other",)), CallContext(peer=other))
    with pytest.raises(PermissionDenied, match="may not unregister"):
        await chain.unregister(_nse(), CallContext(peer=other))
    with pytest.raises(PermissionDenied, match=r"\(anonymous\) may not unregister"):
        await chain.unregister(_nse(), CallContext(peer="unix:"))
    assert denied_count("ownership") == before + 3
    stored = persist.get("db-1")
    assert stored is not None and list(stored.network_service_names) == ["secure-db"]
    await chain.unregister(_nse(), CallContext(peer=DB))
    assert ownership.owner("db-1") is None
    await chain.register(_nse(), CallContext(peer=other))  # the name is free again
    await chain.unregister(_nse(), CallContext())  # in-process (expiry sweeper) is trusted
    with pytest.raises(NotFound):
        await chain.unregister(_nse(), CallContext(peer=other))


async def test_failed_registration_claims_nothing() -> None:
    chain, ownership, persist = _endpoint_chain(StaticPolicy(ALLOW_ALL))
    with pytest.raises(InvalidArgument):
        await chain.register(_nse(name="Bad Name"), CallContext(peer=DB))
    assert ownership.owner("Bad Name") is None and len(persist) == 0


async def test_registration_follows_the_policy(policy: StaticPolicy) -> None:
    chain, _, persist = _endpoint_chain(policy)
    await chain.register(_nse(), CallContext(peer=DB))
    before = denied_count("register")
    with pytest.raises(PermissionDenied, match=f"no rule allows {WEB} to register 'secure-db'"):
        await chain.register(_nse(name="db-9"), CallContext(peer=WEB))
    with pytest.raises(PermissionDenied, match="to register 'other'"):
        await chain.register(_nse(name="db-8", services=("secure-db", "other")),
                             CallContext(peer=DB))
    assert denied_count("register") == before + 2
    assert persist.get("db-9") is None and persist.get("db-8") is None
    services: RegistryChain[NetworkService] = RegistryChain(
        [Validate(SERVICE), AuthorizeRegistration(policy), Ownership(SERVICE)]
    )
    await services.register(NetworkService(name="secure-db"), CallContext(peer=DB))
    with pytest.raises(PermissionDenied):
        await services.register(NetworkService(name="secure-db"), CallContext(peer=WEB))
