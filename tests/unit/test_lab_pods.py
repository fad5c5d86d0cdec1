"""The lab's kubelet without running anything: manifests, environment, volumes, validation.

The end-to-end run (webhook, namespaces, containers) is tests/e2e/test_lab_pod.py.
"""

from __future__ import annotations

import builtins
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from lab import pods
from lab.topology import Topology
from nsmctl import lab_pod_cmds
from sdk.errors import FailedPrecondition, InvalidArgument

TOPOLOGY = Topology("vwu-", Path("/nonexistent/vwire-unit"))


def test_manifest_must_be_one_named_pod() -> None:
    for text, field in (("kind: Deployment\n", "file"), ("a: [", "file"),
                        ("kind: Pod\nmetadata: {}\n", "metadata.name"),
                        ("kind: Pod\nmetadata: {name: Web_1}\n", "metadata.name")):
        with pytest.raises(InvalidArgument, match=field):
            pods._load_manifest(text)
    pod = pods._load_manifest("kind: Pod\nmetadata: {generateName: web-}\n")
    assert pod["metadata"]["name"].startswith("web-") and pod["metadata"]["namespace"] == "default"
    assert pod["metadata"]["uid"]


def _pod() -> dict[str, Any]:
    pod = pods._load_manifest("kind: Pod\nmetadata: {name: web, namespace: shop}\n"
                              "spec: {serviceAccountName: front, containers: []}\n")
    return pod


def test_environment_downward_api_and_expansion() -> None:
    container = {"name": "c", "env": [
        {"name": "NSM_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "WHO", "value": "$(NSM_NAME).$(NS)"},
        {"name": "SA", "valueFrom": {"fieldRef": {"fieldPath": "spec.serviceAccountName"}}},
    ]}
    env = pods._env(_pod(), container, TOPOLOGY.node(1))
    assert env["WHO"] == "web.shop" and env["SA"] == "front" and env["HOSTNAME"] == "web"
    assert pods._expand("--name $(WHO) $(UNSET)", env) == "--name web.shop $(UNSET)"
    with pytest.raises(InvalidArgument, match=r"status\.podIP"):
        pods._env(_pod(), {"env": [{"name": "IP", "valueFrom": {
            "fieldRef": {"fieldPath": "status.podIP"}}}]}, TOPOLOGY.node(1))


def test_host_paths_map_to_the_node_and_nothing_else() -> None:
    node = TOPOLOGY.node(2)
    pod = _pod()
    pod["spec"]["volumes"] = [{"name": "s", "hostPath": {"path": "/var/run/vwire/"}},
                              {"name": "i", "hostPath": {"path": "/var/run/vwire-agent"}}]
    assert pods._volume_sources(TOPOLOGY, pod, node) == {
        "s": str(node.dir), "i": str(pods.agent_socket(node).parent)}
    pod["spec"]["volumes"] = [{"name": "root", "hostPath": {"path": "/"}}]
    with pytest.raises(InvalidArgument, match="maps only"):
        pods._volume_sources(TOPOLOGY, pod, node)
    mounts = pods._mounts({"name": "c", "volumeMounts": [
        {"name": "s", "mountPath": "/var/run/vwire", "readOnly": True}]}, {"s": "/x"})
    assert mounts == [{"source": "/x", "target": "/run/vwire", "read_only": True}]
    with pytest.raises(InvalidArgument, match="under /run"):
        pods._mounts({"name": "c", "volumeMounts": [{"name": "s", "mountPath": "/etc"}]},
                     {"s": "/x"})


def test_validation_is_optional_with_a_clear_message(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_validator(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "kubernetes_validate":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_validator)
    assert "pip install kubernetes-validate" in pods.validate({"kind": "Pod"})


def test_validation_refuses_an_invalid_pod() -> None:
    with pytest.raises(InvalidArgument, match="not valid"):
        pods.validate({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"},
                       "spec": {"containers": [{"name": "c", "bogus": 1}]}})


def test_cli_apply_needs_a_running_node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = tmp_path / "pod.yaml"
    manifest.write_text("kind: Pod\nmetadata: {name: web}\nspec: {containers: []}\n")
    monkeypatch.setattr(lab_pod_cmds, "DEFAULT", Topology("vwu-", tmp_path / "lab"))
    with pytest.raises(FailedPrecondition, match="nsmctl lab up"):
        CliRunner().invoke(lab_pod_cmds.pod_app, ["apply", "-f", str(manifest)],
                           catch_exceptions=False)
    result = CliRunner().invoke(lab_pod_cmds.pod_app, ["list"])
    assert result.exit_code == 0 and "no pods" in result.output
