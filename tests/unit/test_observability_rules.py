"""The shipped alert rules and dashboard: promtool accepts the rules and their unit tests pass,
and every metric they and the dashboard use is one the fabric exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client.metrics import MetricWrapperBase

import sdk.limits.inflight
import sdk.metrics
import sdk.security.audit
from forwarder.metrics import VWireMetrics

HERE = Path(__file__).resolve().parents[2] / "deploy" / "observability"
METRIC = re.compile(r"\bvwire_[a-z_]+")
SUFFIXES = ("_bucket", "_sum", "_count", "_total")


async def _nothing() -> dict[str, dict[str, str]]:
    return {}


def exported() -> set[str]:
    names = {family.name for family in VWireMetrics(_nothing).describe()}
    for module in (sdk.metrics, sdk.limits.inflight, sdk.security.audit):
        for value in vars(module).values():
            if isinstance(value, MetricWrapperBase):
                names.update(family.name for family in value.describe())
    return names


def base(name: str) -> str:
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is missing: run the README's setup command (Debian's prometheus)")
    return found


def test_promtool_accepts_the_rules_and_their_tests_pass() -> None:
    tool = promtool()
    for args in (["check", "rules", "alerts.yml"], ["test", "rules", "alerts-test.yml"]):
        done = subprocess.run([tool, *args], cwd=HERE, capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, f"promtool {' '.join(args)}: {done.stdout}{done.stderr}"


def test_rules_and_dashboard_use_only_exported_metrics() -> None:
    known = exported()
    dashboard = json.loads((HERE / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    rules = (HERE / "alerts.yml").read_text()
    used = {base(m) for text in [*exprs, rules] for m in METRIC.findall(text)}
    assert used and used <= known, f"not exported: {sorted(used - known)}"
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
