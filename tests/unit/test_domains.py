"""sdk.domains: names with @domain, the static domains file, DNS SRV against a DNS server on
loopback (tests/dns_stub.py), and the error that names every place looked in."""

from __future__ import annotations

from pathlib import Path

import pytest

from api.proto.registry_pb2 import NetworkServiceEndpoint, NetworkServiceLabels
from sdk.domains import Domain, Domains, SrvDomains, StaticDomains, localize, remote_domain, split
from sdk.errors import InvalidArgument, NotFound
from sdk.nsmurl import parse
from sdk.registry.domainnames import qualify, query_domain, unqualify
from tests.dns_stub import dns_stub


def test_names_split_and_localize() -> None:
    assert split("db@cloud-b") == ("db", "cloud-b") and split("db") == ("db", None)
    assert localize("db@cloud-a", "cloud-a") == "db"
    assert localize("db@cloud-b", "cloud-a") == "db@cloud-b"
    assert remote_domain("db@cloud-b", "cloud-a") == "cloud-b"
    assert remote_domain("db@cloud-a", "cloud-a") is None and remote_domain("db", "x") is None


async def test_static_file_short_and_long_entries(tmp_path: Path) -> None:
    path = tmp_path / "domains.yaml"
    path.write_text("domains:\n  cloud-b: tcp://10.0.0.7:5005\n"
                    "  cloud-c: {gateway: 'tcp://gw.c:5005', trust_domain: c.vwire}\n")
    static = StaticDomains(str(path))
    assert await static.resolve("cloud-b") == Domain("cloud-b", "tcp://10.0.0.7:5005")
    assert await static.resolve("cloud-c") == Domain("cloud-c", "tcp://gw.c:5005", "c.vwire")
    with pytest.raises(NotFound, match=f"'cloud-x' is not in --domains-file {path}"):
        await static.resolve("cloud-x")


@pytest.mark.parametrize(("text", "message"), [
    ("- a\n", "must be a mapping with 'domains"),
    ("domains:\n  B_b: tcp://h:1\n", "domains.B_b: 'B_b' is not a valid name"),
    ("domains:\n  b: http://h:1\n", "domains.b.gateway: 'http://h:1' has unknown scheme"),
    ("domains:\n  b: {gateway: 'tcp://h:1', colour: red}\n", "unknown keys \\['colour'\\]"),
    ("domains:\n  b: 7\n", "give the gateway's URL"),
    ("domains:\n  b: {gateway: 'tcp://h:1', trust_domain: 'B_b'}\n", "domains.b.trust_domain"),
    ("domains: [\n", "is not YAML or JSON"),
])
def test_a_bad_domains_file_names_the_entry(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "domains.yaml"
    path.write_text(text)
    with pytest.raises(InvalidArgument, match=message):
        StaticDomains(str(path))


def test_a_missing_domains_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="cannot be read"):
        StaticDomains(str(tmp_path / "none.yaml"))


async def test_srv_picks_lowest_priority_then_highest_weight_and_caches() -> None:
    records = {"_vwire-gateway._tcp.cloud-b.": [
        "20 100 7000 backup.cloud-b.", "10 5 6000 light.cloud-b.", "10 50 5005 gw.cloud-b.",
    ]}
    async with dns_stub(records) as stub:
        srv = SrvDomains(stub.address)
        found = await srv.resolve("cloud-b")
        assert found == Domain("cloud-b", "tcp://gw.cloud-b:5005")
        assert await srv.resolve("cloud-b") == found
        # the second from the cache
        assert stub.queries == ["_vwire-gateway._tcp.cloud-b. SRV",
                                "_vwire-gateway._tcp.cloud-b. TXT"]


async def test_srv_ttl_zero_asks_again() -> None:
    async with dns_stub({"_vwire-gateway._tcp.b.": ["0 0 1 gw.b."]}, ttl=0) as stub:
        srv = SrvDomains(stub.address)
        await srv.resolve("b")
        await srv.resolve("b")
        assert [q for q in stub.queries if q.endswith("SRV")] == ["_vwire-gateway._tcp.b. SRV"] * 2


async def test_unknown_everywhere_names_both_places(tmp_path: Path) -> None:
    path = tmp_path / "domains.yaml"
    path.write_text("domains:\n  cloud-b: tcp://10.0.0.7:5005\n")
    async with dns_stub({"_vwire-gateway._tcp.cloud-c.": ["0 0 5005 gw.c."]}) as stub:
        domains = Domains(StaticDomains(str(path)), SrvDomains(stub.address))
        assert (await domains.resolve("cloud-b")).gateway == "tcp://10.0.0.7:5005"
        assert stub.queries == []  # the file first
        assert (await domains.resolve("cloud-c")).gateway == "tcp://gw.c:5005"
        with pytest.raises(NotFound) as caught:
            await domains.resolve("cloud-x")
    assert str(caught.value) == (
        "domain 'cloud-x': no SRV record _vwire-gateway._tcp.cloud-x and not in "
        f"--domains-file {path}"
    )


async def test_nothing_configured_says_so() -> None:
    with pytest.raises(NotFound, match="no domains file and no DNS lookup configured"):
        await Domains().resolve("b")
    with pytest.raises(InvalidArgument, match="domain"):
        await Domains().resolve("Not_A_Name")


def test_a_url_requests_service_at_domain() -> None:
    assert parse("kernel://db@cloud-b/nsm0").requested_service == "db@cloud-b"
    assert parse("kernel://db/nsm0").requested_service == "db"


def test_queries_name_one_domain_and_records_are_renamed_for_it() -> None:
    template = NetworkServiceEndpoint(network_service_names=["db@b"])
    template.network_service_labels["db@b"].CopyFrom(NetworkServiceLabels(labels={"r": "1"}))
    assert query_domain(template) == "b"
    assert query_domain(NetworkServiceEndpoint(name="@b")) == "b"
    assert query_domain(NetworkServiceEndpoint(name="nse")) is None
    with pytest.raises(InvalidArgument, match="several domains"):
        query_domain(NetworkServiceEndpoint(name="x@b", network_service_names=["db@c"]))
    with pytest.raises(InvalidArgument, match="no domain after it"):
        query_domain(NetworkServiceEndpoint(name="x@"))
    local = unqualify(template, "b")
    assert list(local.network_service_names) == ["db"] and set(local.network_service_labels) == {
        "db"}
    assert unqualify(NetworkServiceEndpoint(name="@b"), "b").name == ""  # every record
    record = NetworkServiceEndpoint(name="nse", network_service_names=["db"])
    record.network_service_labels["db"].CopyFrom(NetworkServiceLabels(labels={"r": "1"}))
    named = qualify(record, "b")
    assert (named.name, list(named.network_service_names)) == ("nse@b", ["db@b"])
    assert dict(named.network_service_labels["db@b"].labels) == {"r": "1"}
    assert record.name == "nse"  # a copy: the original is untouched


async def test_srv_txt_names_the_trust_domain_and_a_bad_one_is_refused() -> None:
    name = "_vwire-gateway._tcp.cloud-b."
    async with dns_stub({name: ["0 0 5005 gw.b."]},
                        txt={name: ["v=other", "trust_domain=b.vwire"]}) as stub:
        assert (await SrvDomains(stub.address).resolve("cloud-b")).trust_domain == "b.vwire"
    async with dns_stub({name: ["0 0 5005 gw.b."]}, txt={name: ["trust_domain=B_Bad"]}) as stub:
        with pytest.raises(InvalidArgument, match=f"TXT {name[:-1]}"):
            await SrvDomains(stub.address).resolve("cloud-b")
