"""``nsmctl lab up|status`` (issue 19): the lab's status shows one connection ID per connection,
its path under that ID and counters read now from the forwarders; ``lab up`` checks every
option before it touches a running lab; progress lines count in the singular and plural.
Nothing here builds a lab: the lab's functions are replaced."""

from __future__ import annotations

import asyncio
import io
import json
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from lab import run as lab
from lab.topology import Topology
from nsmctl import node_cmds
from nsmctl.app import main
from sdk.errors import InvalidArgument

CLIENT_ID = "c0ffee00-1111-2222-3333-444455556666"
FORWARDER_ID = "fwd-conn-n1"


def nsmctl(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


def _status() -> dict[str, Any]:
    """A two-node lab's status as :func:`lab.run.status` gives it, counters as of the last
    refresh (10 B each way, handshake 99 s ago)."""
    stale = {"wireguard_rx_bytes": "10", "wireguard_tx_bytes": "10",
             "wireguard_last_handshake_age_seconds": "99"}
    client = {
        "id": "nsmgr-side-id", "network_service": "secure-db",
        "network_service_endpoint_name": "nse-secure-db-n2",
        "context": {"ip_context": {"src_ip_addrs": ["10.60.0.1/32"],
                                   "dst_ip_addrs": ["10.60.0.0/32"]}},
        "path": {"index": 0, "path_segments": [
            {"id": CLIENT_ID, "name": "nsc-n1"},
            {"id": "mgr-1", "name": "nsmgr-n1"},
            {"id": FORWARDER_ID, "name": "forwarder-n1", "metrics": stale},
            {"id": "nse-1", "name": "nse-secure-db-n2"},
        ]},
    }
    nodes = [{"name": n, "netns": f"vw-{n}", "underlay_ip": "192.0.2.1",
              "nsmgr_socket": f"/run/{n}/nsmgr.sock", "forwarder_socket": f"/run/{n}/fwd.sock",
              "nsmgr": True, "forwarder": True} for n in ("n1", "n2")]
    return {"up": True, "registry_socket": "/run/registry.sock", "ca_dir": "/run/ca",
            "nodes": nodes, "connections": [], "client": [client], "client_netns": "vw-n1-nsc"}


@pytest.fixture
def asked(monkeypatch: pytest.MonkeyPatch) -> list[list[dict[str, str]]]:
    """The lab's status is :func:`_status`; the forwarder of n1 answers with fresh counters
    (6.9 KiB received, handshake 14 s ago), the one of n2 does not answer."""
    calls: list[list[dict[str, str]]] = []

    async def counters(forwarders: list[dict[str, str]], timeout: float
                       ) -> tuple[dict[str, dict[str, str]], list[str]]:
        calls.append(forwarders)
        fresh = {"wireguard_rx_bytes": "7066", "wireguard_tx_bytes": "2048",
                 "wireguard_last_handshake_age_seconds": "14"}
        return {FORWARDER_ID: fresh}, ["n2"]

    monkeypatch.setattr(lab, "status", _status)
    monkeypatch.setattr(node_cmds, "forwarder_counters", counters)
    return calls


def test_lab_status_reads_counters_from_the_forwarders_now(
    asked: list[list[dict[str, str]]],
) -> None:
    code, out, err = nsmctl("lab", "status")
    assert code == 0, err
    assert asked == [[{"name": "n1", "url": "unix:///run/n1/fwd.sock"},
                      {"name": "n2", "url": "unix:///run/n2/fwd.sock"}]]
    assert "6.9KiB/2.0KiB" in out and "14s ago" in out
    assert "10B/10B" not in out and "99s ago" not in out
    assert "counters of node n2's forwarder are as of the last refresh" in out


def test_lab_status_shows_one_id_for_the_row_and_its_path(
    asked: list[list[dict[str, str]]],
) -> None:
    code, out, err = nsmctl("lab", "status")
    assert code == 0, err
    short = CLIENT_ID[:8]
    row = next(line for line in out.splitlines() if "secure-db" in line and "nse-" in line)
    assert row.split()[0] == short
    assert f"  {short}: nsc-n1 → nsmgr-n1 → forwarder-n1 → nse-secure-db-n2" in out
    assert "path:" not in out and "nsmgr-side-id" not in out


def test_lab_status_json_has_the_live_counters(asked: list[list[dict[str, str]]]) -> None:
    code, out, err = nsmctl("lab", "status", "-o", "json")
    assert code == 0, err
    shown = json.loads(out)
    assert shown["counters_stale"] == ["n2"]
    metrics = shown["client"][0]["path"]["path_segments"][2]["metrics"]
    assert metrics["wireguard_rx_bytes"] == "7066"


def test_lab_up_help_names_its_values() -> None:
    code, out, _ = nsmctl("lab", "up", "--help")
    assert code == 0
    assert "--nodes N " in out and "--service NAME " in out


# -- lab up checks everything before it touches a running lab ----------------------------------


class TornDown(Exception):
    """``lab.down`` was called: a running lab would have been removed."""


@pytest.fixture
def running_lab(monkeypatch: pytest.MonkeyPatch) -> None:
    """A lab is up; taking it down or building one is an error of the test."""

    def down(*_args: Any, **_kwargs: Any) -> None:
        raise TornDown

    async def build(*_args: Any) -> None:
        raise AssertionError("lab up built a lab")

    monkeypatch.setattr(lab, "down", down)
    monkeypatch.setattr(lab, "_build", build)
    monkeypatch.setattr(lab, "running", lambda *_a, **_k: True)
    monkeypatch.setattr(lab, "load_config", lambda *_a, **_k: lab.LabConfig())


@pytest.mark.usefixtures("running_lab")
@pytest.mark.parametrize(("args", "says"), [
    (("--service", "bad name!"), "'bad name!' is not a valid name"),
    (("--service", "a", "--service", "a"), "'a' given twice"),
    (("--service", "x" * 250), "at most"),
])
def test_a_bad_service_is_a_usage_error_and_the_lab_stays(
    args: tuple[str, ...], says: str,
) -> None:
    code, out, err = nsmctl("lab", "up", *args)
    assert code == 2, err
    assert err.startswith("error: Invalid value for '--service'"), err
    assert says in err
    assert "stopping" not in out


@pytest.mark.usefixtures("running_lab")
def test_up_checks_the_config_before_taking_a_lab_down(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="is not a valid name"):
        lab.up(lab.LabConfig(services=["Secure_DB"]), topology=Topology("vwx-", tmp_path))
    with pytest.raises(InvalidArgument, match="nodes"):
        lab.up(lab.LabConfig(nodes=0), topology=Topology("vwx-", tmp_path))
    lab.check(lab.LabConfig(nodes=16, services=["secure-db", "a.b-c"]))  # good ones pass


@pytest.mark.usefixtures("running_lab")
def test_the_wireguard_device_is_checked_and_reaches_every_forwarder(tmp_path: Path) -> None:
    code, out, err = nsmctl("lab", "up", "--wireguard-device", "bogus")
    assert code == 2 and "'--wireguard-device'" in err and "stopping" not in out
    code, _, err = nsmctl("lab", "up", "--wireguard-device", "shared", "--topology", "x.yaml")
    assert code == 2 and "--wireguard-device" in err and "single-domain" in err
    with pytest.raises(InvalidArgument, match="wireguard_device"):
        lab.check(lab.LabConfig(wireguard_device="one-per-pod"))
    fabric = lab._fabric(Topology("vwx-", tmp_path),
                             lab.LabConfig(nodes=3, wireguard_device="shared"))
    assert fabric.forwarder_args == {i: ["--wireguard-device", "shared"] for i in (1, 2, 3)}


# -- progress -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("nodes", "said"), [(1, "creating 1 node namespace joined"),
                                             (3, "creating 3 node namespaces joined")])
def test_progress_counts_nodes_in_singular_and_plural(nodes: int, said: str) -> None:
    class Stop(Exception):
        pass

    async def up() -> None:
        raise Stop

    fabric = SimpleNamespace(nodes=[SimpleNamespace(name=f"n{i}") for i in range(nodes)], up=up)
    lines: list[str] = []
    config = lab.LabConfig(nodes=nodes)
    with pytest.raises(Stop):
        asyncio.run(lab._build(fabric, config, lines.append))  # type: ignore[arg-type]
    assert lines[0].startswith(said), lines

