"""``nsmctl lab``: where a failed ``up`` keeps its logs, and ``lab env`` (issue 19, items 1, 2)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lab import run
from lab.fabric import Fabric
from lab.topology import Topology
from sdk.errors import FabricError


@pytest.fixture
def topology(tmp_path: Path) -> Topology:
    return Topology(f"vwu{tmp_path.name[-6:].replace('_', '').lower()}-", tmp_path / "state")


def test_a_failed_up_names_a_log_that_still_exists(
    topology: Topology, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """It once named ``<state>/nsc.log``, which the lab had just removed with its state."""

    async def fails(fabric: Fabric, config: run.LabConfig, progress: run.Progress) -> None:
        fabric.topology.state_dir.mkdir(parents=True)
        (fabric.topology.state_dir / "nsc.log").write_text("the client's last words\n")
        raise FabricError(f"client nsc exited: see {fabric.processes.log('nsc')}")

    monkeypatch.setattr(run, "_build", fails)
    with pytest.raises(FabricError) as failure:
        run.up(run.LabConfig(), topology=topology)
    message = " ".join([str(failure.value), *getattr(failure.value, "__notes__", [])])
    named = Path(message.split("see ", 1)[1].split()[0])
    try:
        assert not topology.state_dir.exists()
        assert named.read_text() == "the client's last words\n", message
        assert f"kept in {named.parent}" in message
    finally:
        if named.parent != topology.state_dir:
            shutil.rmtree(named.parent, ignore_errors=True)


def test_lab_env_points_nsmctl_at_the_lab(topology: Topology) -> None:
    environment = {**os.environ, "VWIRE_LAB_PREFIX": topology.prefix,
                   "VWIRE_LAB_STATE_DIR": str(topology.state_dir)}

    def lab_env(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "nsmctl", "lab", "env", *args],
                              env=environment, capture_output=True, text=True, timeout=60)

    down = lab_env()
    assert down.returncode == 1 and "nsmctl lab up" in down.stderr  # down: says so
    topology.state_dir.mkdir(parents=True)
    (topology.state_dir / "lab.json").write_text(json.dumps({"nodes": 2, "services": ["s"]}))
    shown = lab_env("--node", "2")
    assert shown.returncode == 0, shown.stderr
    state = topology.state_dir
    assert shown.stdout.splitlines() == [
        f"export NSMCTL_REGISTRY=unix://{state}/registry.sock",
        f"export NSMCTL_NSMGR=unix://{state}/n2/nsmgr.sock",
        f"export VWIRE_CA_DIR={state}/ca",
    ]
