"""The topology builder (:func:`nsmctl.graph.build`) and its renderings on fixed data: a
two-node fabric whose client on n1 reaches an endpoint on n2 over WireGuard, as the nsmgrs'
monitors, the registry and the forwarders' counters report it."""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import UTC, datetime
from typing import Any

import pytest
from rich.console import Console

from nsmctl import graph, graph_render
from nsmctl.dashboard import parse_listen
from nsmctl.graph import NodeSource, NodeView, Snapshot

CONN = "0fe67980-d4d7-4a9f-8e63-a1b2b4ce7bfd"
FWD1, FWD2 = "22222979-fwd1", "1145243e-fwd2"
NAMES = ["nsc-n1", "nsmgr-n1", "forwarder-n1", "nsmgr-n2", "forwarder-n2", 'nse "db" <n2>']


def _conn(index: int, state: str | None = None) -> dict[str, Any]:
    ids = [CONN, "m1", FWD1, "m2", FWD2, "nse"]
    conn: dict[str, Any] = {
        "id": ids[index], "network_service": "secure-db",
        "network_service_endpoint_name": NAMES[-1],
        "context": {"MTU": 1440, "ip_context": {"src_ip_addrs": ["10.60.0.2/32"],
                                                "dst_ip_addrs": ["10.60.0.1/32"]}},
        "path": {"index": index, "path_segments": [
            {"id": i, "name": n} for i, n in zip(ids, NAMES, strict=True)]},
    }
    if state:
        conn["state"] = state
    return conn


def snapshot(state_at_n1: str | None = None) -> Snapshot:
    n1 = NodeView(NodeSource("unix:///lab/n1/nsmgr.sock", "n1"), up=True,
                  connections=[_conn(1, state_at_n1)],
                  forwarders=[{"name": "forwarder-n1", "url": "unix:///lab/n1/fwd.sock",
                               "wireguard": "wireguard-go", "underlay-ip": "10.250.0.1"}])
    n2 = NodeView(NodeSource("unix:///lab/n2/nsmgr.sock", "n2"), up=True,
                  connections=[_conn(3)],
                  forwarders=[{"name": "forwarder-n2", "url": "unix:///lab/n2/fwd.sock",
                               "wireguard": "wireguard-go", "underlay-ip": "10.250.0.2"}])
    endpoint = {"name": NAMES[-1], "network_service_names": ["secure-db"],
                "url": "tcp://10.250.0.2:5001",
                "path_ids": ["spiffe://lab.vwire/nse/db", "spiffe://lab.vwire/nsmgr/nsmgr-n2"]}
    other = {"name": "nse-far", "network_service_names": ["other"],
             "url": "tcp://192.0.2.9:5001"}
    return Snapshot(
        "unix:///lab/registry.sock", registry_up=True, endpoints=[other, endpoint],
        nodes=[n1, n2],
        counters={FWD1: {"wireguard_rx_bytes": "2048", "wireguard_tx_bytes": "1024",
                         "wireguard_last_handshake_age_seconds": "4", "mtu": "1440"}},
        taken_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))


def test_build_makes_one_vwire_from_every_hops_view() -> None:
    topo = graph.build(snapshot())
    assert topo["domain"] == {"name": "lab.vwire", "registry": {
        "url": "unix:///lab/registry.sock", "up": True, "error": ""}}
    assert [(n["name"], n["nsmgr"]["name"], [f["name"] for f in n["forwarders"]])
            for n in topo["nodes"]] == [("n1", "nsmgr-n1", ["forwarder-n1"]),
                                        ("n2", "nsmgr-n2", ["forwarder-n2"])]
    [conn] = topo["connections"]
    assert conn["id"] == CONN and conn["short_id"] == CONN[:8]
    assert (conn["client"], conn["client_node"], conn["endpoint"], conn["endpoint_node"]) == (
        "nsc-n1", "n1", NAMES[-1], "n2")
    assert (conn["state"], conn["via"], conn["mtu"]) == ("UP", "wireguard", 1440)
    assert (conn["rx_bytes"], conn["tx_bytes"], conn["handshake_age_seconds"]) == (2048, 1024, 4)
    assert topo["clients"] == [{"name": "nsc-n1", "node": "n1"}]
    assert [(e["name"], e["node"], e["registered"]) for e in topo["endpoints"]] == [
        (NAMES[-1], "n2", True), ("nse-far", None, True)]
    assert topo["taken_at"] == "2026-01-02T03:04:05Z"
    assert json.loads(json.dumps(topo)) == topo


def test_a_hop_reporting_down_makes_the_vwire_down_and_a_missing_endpoint_shows() -> None:
    snap = snapshot(state_at_n1="DOWN")
    snap.endpoints = []
    snap.nodes[1] = NodeView(snap.nodes[1].source, up=False, error="does not answer")
    topo = graph.build(snap)
    [conn] = topo["connections"]
    assert conn["state"] == "DOWN"
    assert topo["nodes"][1]["nsmgr"] == {"name": "", "url": "unix:///lab/n2/nsmgr.sock",
                                         "up": False, "error": "does not answer"}
    assert [(e["name"], e["registered"]) for e in topo["endpoints"]] == [(NAMES[-1], False)]
    assert topo["domain"]["name"] == graph.DEFAULT_DOMAIN


def test_a_local_vwire_ends_on_the_clients_node() -> None:
    local = {"id": "c-local", "network_service": "cache", "network_service_endpoint_name": "nse-c",
             "path": {"index": 1, "path_segments": [
                 {"id": "c-local", "name": "nsc-n1"}, {"id": "m", "name": "nsmgr-n1"},
                 {"id": "f", "name": "forwarder-n1"}, {"id": "e", "name": "nse-c"}]}}
    snap = snapshot()
    snap.nodes[0].connections.append(local)
    conn = next(c for c in graph.build(snap)["connections"] if c["id"] == "c-local")
    assert (conn["client_node"], conn["endpoint"], conn["endpoint_node"]) == ("n1", "nse-c", "n1")


def _text(renderable: Any) -> str:
    console = Console(width=200, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


def test_tree_shows_domain_nodes_components_and_vwires() -> None:
    text = _text(graph_render.tree(graph.build(snapshot())))
    lines = [line.rstrip() for line in text.splitlines()]
    assert lines[0] == "domain lab.vwire: registry unix:///lab/registry.sock up"
    assert any("node n1: nsmgr nsmgr-n1 up" in line for line in lines)
    assert any("forwarder forwarder-n2 up wireguard-go, underlay 10.250.0.2" in line
               for line in lines)
    assert any(f'vWire 0fe67980 secure-db → {NAMES[-1]} (n2) UP' in line and
               "handshake 4s ago, rx/tx 2.0KiB/1.0KiB" in line for line in lines)
    assert any("endpoint nse-far: other at tcp://192.0.2.9:5001" in line for line in lines)
    down = _text(graph_render.tree(graph.build(snapshot(state_at_n1="DOWN"))))
    assert "secure-db → " in down and "(n2) DOWN" in down


def test_dot_escapes_names_and_renders_with_graphviz() -> None:
    text = graph_render.dot(graph.build(snapshot(state_at_n1="DOWN")))
    assert text.startswith("digraph vwire {") and text.rstrip().endswith("}")
    assert 'nse \\"db\\" <n2>' in text
    assert 'label="0fe67980 secure-db DOWN", color=red, style=dashed' in text
    assert text.count("subgraph cluster_node") == 2
    if shutil.which("dot") is None:
        pytest.skip("graphviz's dot is missing (scripts/setup.sh --test installs it)")
    svg = subprocess.run(["dot", "-Tsvg"], input=text, capture_output=True, text=True,
                         check=True, timeout=30).stdout
    assert "<svg" in svg and "0fe67980" in svg and "&lt;n2&gt;" in svg


def test_mermaid_quotes_labels_and_styles_down_links() -> None:
    text = graph_render.mermaid(graph.build(snapshot(state_at_n1="DOWN")))
    lines = text.splitlines()
    assert lines[0] == "flowchart LR"
    assert 'subgraph node0["node n1"]' in text and 'subgraph node1["node n2"]' in text
    assert "nse #quot;db#quot; #lt;n2#gt;" in text and '"db"' not in text
    assert any(line.strip().startswith("c") and '-.->|"0fe67980 secure-db DOWN"|' in line
               for line in lines)
    assert lines[-1].strip() == "linkStyle 0 stroke:red"
    assert text.count("subgraph") == text.count("\n    end") + text.count("\n  end")


@pytest.mark.parametrize(("text", "expected"), [
    ("127.0.0.1:8080", ("127.0.0.1", 8080)), ("[::1]:0", ("::1", 0)),
    ("0.0.0.0:9000", ("0.0.0.0", 9000)),
])
def test_listen_addresses(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize("text", ["8080", ":8080", "host:http", "host:70000"])
def test_bad_listen_addresses_say_how(text: str) -> None:
    with pytest.raises(ValueError, match="give HOST:PORT"):
        parse_listen(text)
