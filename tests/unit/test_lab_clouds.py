"""The multi-cloud lab's topology file (lab.clouds): the built-in default, defaults per cloud,
and every kind of bad input refused with the field and the fix named; the router's NAT rules
(lab.internet) for each NAT kind."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from lab.clouds import BUILT_IN_NAME, CLOUD_MTU, load, parse, parse_text
from lab.internet import addresses, gateway_url, nat_rules
from sdk.errors import InvalidArgument


def topology(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "domains": [
            {"name": "aws", "cloud": "aws", "nodes": [{"name": "aws-1"},
                                                     {"name": "aws-2", "nat": "masquerade"}]},
            {"name": "dc", "cloud": "on-prem", "nodes": [{"name": "dc-1"}]},
        ],
        "services": [{"name": "db", "node": "dc-1"}],
        "clients": [{"name": "web", "node": "aws-2", "services": ["db"]}],
    }
    doc.update(changes)
    return doc


def test_the_built_in_topology_has_four_clouds_and_every_nat_kind() -> None:
    model = load(BUILT_IN_NAME)
    assert [(d.name, d.mtu) for d in model.domains] == [
        ("aws", 9001), ("gcp", 1460), ("azure", 1500), ("on-prem", 1500)]
    assert {n.nat for _, n in model.all_nodes()} == {"one-to-one", "masquerade", "none"}
    for client in model.clients:  # the demo crosses clouds
        for service in client.services:
            served = next(s.node for s in model.services if s.name == service)
            assert model.node(served)[0] != model.node(client.node)[0]


def test_defaults_mtu_per_cloud_and_nat_per_kind_of_site() -> None:
    model = parse(topology())
    aws, dc = model.domains
    assert (aws.mtu, dc.mtu, model.wan_mtu) == (CLOUD_MTU["aws"], 1500, 1500)
    assert [n.nat for n in aws.nodes] == ["one-to-one", "masquerade"]
    assert dc.nodes[0].nat == "none"
    assert parse(topology(wan_mtu=1400)).wan_mtu == 1400


def _with_domain(**domain: Any) -> dict[str, Any]:
    base = {"name": "gcp", "cloud": "gcp", "nodes": [{"name": "gcp-1"}]}
    base.update(domain)
    return topology(domains=[*topology()["domains"], base])


@pytest.mark.parametrize(("doc", "field", "words"), [
    (_with_domain(cloud="ibm"), "topology.domains[2].cloud", "unknown cloud 'ibm'"),
    (_with_domain(name="aws"), "topology.domains[2].name", "given twice"),
    (_with_domain(nodes=[{"name": "aws-1"}]), "topology.domains[2].nodes[0].name",
     "given twice"),
    (_with_domain(mtu=100), "topology.domains[2].mtu", "1280..9216"),
    (_with_domain(mtu="9001"), "topology.domains[2].mtu", "integer"),
    (_with_domain(nodes=[]), "topology.domains[2].nodes", "domain gcp has no nodes"),
    (_with_domain(nodes=None), "topology.domains[2].nodes", "domain gcp has no nodes"),
    (_with_domain(nodes=[{"name": "g", "nat": "cgnat"}]), "topology.domains[2].nodes[0].nat",
     "one-to-one, masquerade, none"),
    (_with_domain(nodes=[{"name": "Bad_Name"}]), "topology.domains[2].nodes[0].name",
     "lower-case"),
    (_with_domain(region="eu"), "topology.domains[2]", "unknown key 'region'"),
    (topology(domains=[]), "topology.domains", "at least one domain"),
    (topology(wan_mtu=True), "topology.wan_mtu", "integer MTU"),
    (topology(services=[{"name": "db", "node": "nowhere"}]), "topology.services[0].node",
     "not a node"),
    (topology(clients=[{"name": "web", "node": "aws-1", "services": ["cache"]}]),
     "topology.clients[0].services[0]", "not a service"),
    (topology(clients=[{"name": "web", "node": "aws-1", "services": []}]),
     "topology.clients[0].services", "at least one service"),
    (topology(extra=1), "topology", "unknown key 'extra'"),
    (topology(vms=[{"name": "vm-1", "domain": "gcp", "services": ["db"]}]),
     "topology.vms[0].domain", "not a domain"),
    (topology(vms=[{"name": "vm-1", "domain": "aws", "services": ["db"]}]),
     "topology.vms[0].services[0]", "db runs in domain dc, not aws: a joined VM gets no "
     "federated bundles"),
    (topology(vms=[{"name": "aws-1", "domain": "dc", "services": ["db"]}]),
     "topology.vms[0].name", "given twice"),
    (topology(external_hosts=[{"name": "laptop", "domain": "dc", "service": "cache"}]),
     "topology.external_hosts[0].service", "not a service"),
    (topology(domains=[*topology()["domains"], {"name": "gcp", "cloud": "gcp", "nodes": [
        {"name": "gcp-1", "nat": "masquerade"}]}], services=[{"name": "db", "node": "gcp-1"}],
        clients=[], external_hosts=[{"name": "laptop", "domain": "gcp", "service": "db"}]),
     "topology.external_hosts[0].domain", "no node others can reach"),
    ([1, 2], "topology", "must be a mapping"),
], ids=["cloud", "dup-domain", "dup-node", "mtu-range", "mtu-type", "no-nodes", "null-nodes",
        "nat", "node-name", "domain-key", "no-domains", "wan-mtu", "service-node",
        "client-service", "client-no-service", "top-key", "vm-domain", "vm-other-domain",
        "vm-name-taken", "host-service", "host-no-router", "not-mapping"])
def test_bad_topologies_name_the_field_and_the_fix(doc: Any, field: str, words: str) -> None:
    with pytest.raises(InvalidArgument) as failure:
        parse(doc)
    assert failure.value.field == field
    assert words in failure.value.problem


def test_guests_get_their_domain_and_numbers() -> None:
    model = parse(topology(
        vms=[{"name": "vm-1", "domain": "dc", "services": ["db"]},
             {"name": "vm-2", "domain": "dc", "services": ["db"]}],
        external_hosts=[{"name": "laptop", "domain": "dc", "service": "db"}]))
    assert [(v.name, v.domain, v.index) for v in model.vms] == [("vm-1", "dc", 1),
                                                                ("vm-2", "dc", 2)]
    assert [(h.name, h.service, h.index) for h in model.hosts] == [("laptop", "db", 1)]


def test_files_that_cannot_be_read_or_parsed(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match=r"cannot read .*missing\.yaml.*'multi-cloud'"):
        load(str(tmp_path / "missing.yaml"))
    with pytest.raises(InvalidArgument, match="not valid YAML"):
        parse_text("domains: [", "topology")
    good = tmp_path / "t.yaml"
    good.write_text(yaml.safe_dump(topology()))
    assert load(str(good)) == parse(topology())


def test_router_rules_per_nat_kind() -> None:
    aws, dc = parse(topology()).domains
    rules = nat_rules(aws)
    one, masq = (addresses(aws, n) for n in aws.nodes)
    assert one.public == "100.64.1.11" and masq.public == ""
    assert f"ip daddr {one.public} dnat to {one.private}" in rules
    assert f'oifname "up0" ip saddr {one.private} snat to {one.public}' in rules
    assert f'oifname "up0" ip saddr {masq.private} masquerade fully-random' in rules
    assert f"dnat to {masq.private}" not in rules  # nobody outside reaches a masqueraded node
    assert 'oifname "up0" ip saddr 172.16.2.11 accept' in nat_rules(dc)
    assert gateway_url(dc) == "tcp://100.64.2.1:5105"
