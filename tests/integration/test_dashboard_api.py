"""``nsmctl dashboard``'s HTTP API and page against real servers.

The node is the one of :mod:`tests.integration.test_nsmctl_status`: a real registry, the
forwarder's real live-counters service (its xconnect on the fake kernel) and an nsmgr stand-in
serving NSM's connection monitor and the forwarder's registration. The dashboard runs in a
thread of the test (:class:`nsmctl.dashboard.Dashboard`, as the command builds it) and is read
over HTTP: ``/api/topology`` is what ``nsmctl graph -o json`` prints, counters are live, a
forwarder that stops answering shows as down.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from nsmctl import dashboard, graph
from sdk.grpcutil import parse_address, stop
from tests.cli import nsmctl
from tests.integration.test_nsmctl_status import CLIENT_ID, FabricNode
from tests.integration.test_nsmctl_status import node as node  # the fixture


@pytest.fixture
def board(node: FabricNode, monkeypatch: pytest.MonkeyPatch) -> Iterator[dashboard.Dashboard]:
    monkeypatch.setattr(dashboard, "FRESH_SECONDS", 0.0)  # every request gathers anew

    async def gather() -> dict[str, Any]:
        return await graph.topology(node.registry, [graph.NodeSource(node.nsmgr)], 3.0)

    served = dashboard.Dashboard(gather, "127.0.0.1:0", 3.0)
    thread = threading.Thread(target=served.serve, name="dashboard")
    thread.start()
    try:
        yield served
    finally:
        served.shutdown()
        thread.join(10)
        assert not thread.is_alive(), "the dashboard stops when asked"


def get(board: dashboard.Dashboard, path: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(board.url + path.lstrip("/"), timeout=15) as reply:
            return reply.status, dict(reply.headers), reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def topology(board: dashboard.Dashboard) -> dict[str, Any]:
    status, headers, body = get(board, "/api/topology")
    assert status == 200 and headers["Content-Type"] == "application/json"
    data: dict[str, Any] = json.loads(body)
    return data


def test_api_topology_has_components_and_the_connection_with_live_counters(
    node: FabricNode, board: dashboard.Dashboard
) -> None:
    node.traffic(1024, 2048)
    topo = topology(board)
    assert topo["domain"]["registry"] == {"url": node.registry, "up": True, "error": ""}
    [n1] = topo["nodes"]
    assert n1["name"] == "nsmgr-n1" and n1["nsmgr"]["up"] is True
    assert [(f["name"], f["up"]) for f in n1["forwarders"]] == [("fwd-n1", True)]
    [conn] = topo["connections"]
    assert conn["id"] == CLIENT_ID and conn["state"] == "UP" and conn["client_node"] == "nsmgr-n1"
    assert (conn["via"], conn["rx_bytes"], conn["tx_bytes"]) == ("veth", 1024, 2048)

    node.traffic(10 * 1024, 20 * 1024)  # no refresh happened: the counters are read now
    assert topology(board)["connections"][0]["rx_bytes"] == 10 * 1024

    shown = nsmctl("--registry", node.registry, "graph", "--nsmgr", node.nsmgr, "-o", "json")
    assert shown.code == 0, shown.err
    from_cli = json.loads(shown.out)
    served = topology(board)
    for data in (from_cli, served):
        data.pop("taken_at")
    assert from_cli == served, "graph -o json and the dashboard serve the same data"


def test_a_forwarder_that_stops_answering_is_shown_down(
    node: FabricNode, board: dashboard.Dashboard
) -> None:
    node.background.run(stop(node.servers[0][0], [parse_address(node.forwarder)], 0))
    topo = topology(board)
    assert [(f["name"], f["up"]) for f in topo["nodes"][0]["forwarders"]] == [("fwd-n1", False)]
    assert topo["nodes"][0]["nsmgr"]["up"] is True


def test_page_and_assets_are_served_locally_with_a_strict_policy(
    board: dashboard.Dashboard
) -> None:
    status, headers, body = get(board, "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    page = body.decode()
    assert 'src="/dashboard.js"' in page and "http" not in page.replace(
        'http://www.w3.org', '').split("<body>", 1)[0]
    for asset in ("/dashboard.js", "/dashboard.css"):
        status, _, body = get(board, asset)
        assert status == 200 and b"https://" not in body
    assert b"/api/topology" in get(board, "/dashboard.js")[2]
    assert get(board, "/nope")[0] == 404


def test_an_unreachable_fabric_is_reported_not_fatal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dashboard, "FRESH_SECONDS", 0.0)

    async def gather() -> dict[str, Any]:
        return await graph.topology("unix:///nonexistent/registry.sock",
                                    [graph.NodeSource("unix:///nonexistent/nsmgr.sock")], 1.0)

    served = dashboard.Dashboard(gather, "127.0.0.1:0", 1.0)
    thread = threading.Thread(target=served.serve)
    thread.start()
    try:
        topo = topology(served)
    finally:
        served.shutdown()
        thread.join(10)
    assert topo["domain"]["registry"]["up"] is False
    assert topo["nodes"][0]["nsmgr"] == {"name": "", "url": "unix:///nonexistent/nsmgr.sock",
                                         "up": False, "error": "does not answer"}
