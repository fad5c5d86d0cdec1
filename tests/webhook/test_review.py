"""The review logic (``webhook.review.review``, a pure function) on AdmissionReview v1 requests
as the API server sends them: what is patched, what is skipped, what is denied and why; every
patched object validates against the current Kubernetes schemas."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.webhook import reviews
from tests.webhook.conftest import patched, validate
from webhook.inject import INIT_NAME, SIDECAR_NAME, InjectConfig
from webhook.namespaces import LookupFailed, Namespace
from webhook.review import review

URL = "kernel://secure-db/nsm-1?app=web"
CONFIG = InjectConfig()
NAMESPACES = {
    "default": Namespace("default"),
    "meshed": Namespace("meshed", {"networkservicemesh.io": "kernel://cache/nsm-c"}),
    "locked": Namespace("locked", {}, {"pod-security.kubernetes.io/enforce": "restricted"}),
}


def lookup(name: str) -> Namespace | None:
    return NAMESPACES.get(name)


def answer_to(doc: dict[str, Any], config: InjectConfig = CONFIG,
              namespaces: Callable[[str], Namespace | None] = lookup) -> dict[str, Any]:
    answer = review(doc, config, namespaces)
    assert answer["apiVersion"] == "admission.k8s.io/v1" and answer["kind"] == "AdmissionReview"
    assert answer["response"]["uid"] == doc["request"]["uid"]
    return answer["response"]


def spec_of(obj: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = obj["spec"]
    return spec["template"]["spec"] if "template" in spec else spec


def names(items: list[dict[str, Any]] | None) -> list[str]:
    return [item["name"] for item in items or []]


def injected(doc: dict[str, Any], config: InjectConfig = CONFIG,
             namespaces: Callable[[str], Namespace | None] = lookup) -> dict[str, Any]:
    """Review ``doc``, expect an allowed patch, apply it, validate, return the pod spec."""
    response = answer_to(doc, config, namespaces)
    assert response["allowed"] is True and response["patchType"] == "JSONPatch", response
    obj = patched(doc, {"response": response})
    validate(obj)
    return spec_of(obj)


# --- what is injected -------------------------------------------------------------------------


def test_controller_made_pod_with_generate_name() -> None:
    doc = reviews.pod(annotation=URL, generate_name="web-7d9f8c6b5-",
                      owner=reviews.owner("ReplicaSet", "web-7d9f8c6b5"))
    spec = injected(doc)
    assert names(spec["initContainers"]) == [INIT_NAME, SIDECAR_NAME]
    assert names(spec["containers"]) == ["app"]
    init, keeper = spec["initContainers"]
    assert keeper["restartPolicy"] == "Always" and "restartPolicy" not in init
    # no name yet at admission: the downward API gives the real one
    env = {e["name"]: e for e in init["env"]}
    assert env["NSM_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert "$(NSM_NAME).$(NSM_NAMESPACE)" in init["args"] and URL in init["args"]
    assert init["args"][:3] == ["--init", "--ready-timeout", "60"]
    assert keeper["args"][:2] == ["--resume", "/var/run/vwire-pod/state.json"]
    assert "--netns-inode" in keeper["args"]
    assert names(spec["volumes"]) == ["kube-api-access-x2v9f", "vwire-nsmgr-socket",
                                      "vwire-identity", "vwire-state"]
    assert spec["securityContext"]["sysctls"] == [
        {"name": "net.ipv4.ping_group_range", "value": "0 2147483647"}]


def test_injected_containers_meet_pod_security_restricted() -> None:
    spec = injected(reviews.pod(annotation=URL, name="web"))
    for container in spec["initContainers"]:
        context = container["securityContext"]
        assert context["privileged"] is False and context["allowPrivilegeEscalation"] is False
        assert context["capabilities"] == {"drop": ["ALL"]} and context["runAsNonRoot"] is True
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}
        assert context["runAsUser"] != 0 and context["readOnlyRootFilesystem"] is True
        assert set(container["resources"]) == {"requests", "limits"}
        assert all(m["readOnly"] for m in container["volumeMounts"] if m["name"] != "vwire-state")


def test_pod_without_init_containers_volumes_or_security_context() -> None:
    spec = reviews.pod_spec()
    del spec["volumes"], spec["securityContext"]
    spec["containers"][0].pop("volumeMounts")
    out = injected(reviews.pod(annotation=URL, name="web", spec=spec))
    assert names(out["initContainers"]) == [INIT_NAME, SIDECAR_NAME]
    assert names(out["volumes"]) == ["vwire-nsmgr-socket", "vwire-identity", "vwire-state"]


def test_pod_with_existing_init_containers_volumes_and_sysctls_keeps_them() -> None:
    spec = reviews.pod_spec(
        initContainers=[{"name": "migrate", "image": "migrate:1"}],
        securityContext={"sysctls": [{"name": "net.ipv4.ip_local_port_range",
                                      "value": "1024 65000"}]},
    )
    out = injected(reviews.pod(annotation=URL, name="web", spec=spec))
    # ours first: the pod's own init containers already have the vWire
    assert names(out["initContainers"]) == [INIT_NAME, SIDECAR_NAME, "migrate"]
    assert names(out["volumes"])[0] == "kube-api-access-x2v9f" and len(out["volumes"]) == 4
    assert [s["name"] for s in out["securityContext"]["sysctls"]] == [
        "net.ipv4.ip_local_port_range", "net.ipv4.ping_group_range"]


def test_plain_sidecar_container_mode_appends_to_existing_and_absent_containers() -> None:
    config = InjectConfig(sidecar="container")
    out = injected(reviews.pod(annotation=URL, name="web"), config)
    assert names(out["initContainers"]) == [INIT_NAME]
    assert names(out["containers"]) == ["app", SIDECAR_NAME]
    assert "restartPolicy" not in out["containers"][1]
    bare = reviews.pod(annotation=URL, name="web", spec={})  # containers absent
    response = answer_to(bare, config)
    assert names(spec_of(patched(bare, {"response": response}))["containers"]) == [SIDECAR_NAME]


def test_multiple_services_one_client_pair() -> None:
    value = "kernel://secure-db/nsm-1?app=web, kernel://cache@cloud-b/nsm-2"
    spec = injected(reviews.pod(annotation=value, name="web"))
    init = spec["initContainers"][0]
    assert init["args"][-2:] == ["kernel://secure-db/nsm-1?app=web",
                                 "kernel://cache@cloud-b/nsm-2"]
    env = {e["name"]: e.get("value") for e in init["env"]}
    assert env["NSM_NETWORK_SERVICES"] == ",".join(init["args"][-2:])


@pytest.mark.parametrize("kind", ["Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"])
def test_workload_templates_are_patched(kind: str) -> None:
    spec = injected(reviews.workload(kind, template_annotation=URL))
    assert names(spec["initContainers"]) == [INIT_NAME, SIDECAR_NAME]


def test_annotation_on_the_deployment_itself_patches_its_template() -> None:
    spec = injected(reviews.workload("Deployment", annotation=URL))
    assert names(spec["initContainers"]) == [INIT_NAME, SIDECAR_NAME]


def test_namespace_annotation_is_the_fallback_for_pods() -> None:
    spec = injected(reviews.pod(namespace="meshed", name="web"))
    assert spec["initContainers"][0]["args"][-1] == "kernel://cache/nsm-c"
    own = injected(reviews.pod(namespace="meshed", name="web", annotation=URL))
    assert own["initContainers"][0]["args"][-1] == URL  # the pod's own wins


def test_psa_restricted_namespace_with_csi_sockets_is_patched() -> None:
    spec = injected(reviews.pod(namespace="locked", annotation=URL, name="web"),
                    InjectConfig(socket_volume="csi"))
    assert spec["volumes"][1]["csi"]["driver"] == "csi.vwire.io"


# --- what is left alone ----------------------------------------------------------------------


def unchanged(doc: dict[str, Any], namespaces: Callable[[str], Namespace | None] = lookup
              ) -> None:
    response = answer_to(doc, namespaces=namespaces)
    assert response == {"uid": doc["request"]["uid"], "allowed": True}


def test_replicaset_owned_by_a_deployment_is_skipped() -> None:
    unchanged(reviews.workload("ReplicaSet", template_annotation=URL,
                               owner=reviews.owner("Deployment", "web")))


def test_update_is_not_patched() -> None:
    unchanged(reviews.pod(annotation=URL, name="web", operation="UPDATE"))
    unchanged(reviews.workload("Deployment", template_annotation=URL, operation="UPDATE"))


def test_pods_and_workloads_without_annotation_are_unchanged() -> None:
    unchanged(reviews.pod(name="web"))
    unchanged(reviews.workload("Deployment"))
    unchanged(reviews.pod(namespace="unknown", name="web"))


def test_a_pod_made_from_a_patched_template_is_not_injected_twice() -> None:
    first = reviews.workload("Deployment", template_annotation=URL)
    template = spec_of(patched(first, {"response": answer_to(first)}))
    unchanged(reviews.pod(annotation=URL, generate_name="web-", spec=template))


def test_other_kinds_are_unchanged() -> None:
    doc = reviews.pod(annotation=URL, name="web")
    doc["request"]["kind"] = {"group": "", "version": "v1", "kind": "ConfigMap"}
    unchanged(doc)


# --- what is denied --------------------------------------------------------------------------


def denied(doc: dict[str, Any], *words: str, config: InjectConfig = CONFIG,
           namespaces: Callable[[str], Namespace | None] = lookup) -> str:
    response = answer_to(doc, config, namespaces)
    assert response["allowed"] is False and "patch" not in response, response
    message: str = response["status"]["message"]
    for word in words:
        assert word in message, message
    return message


def test_bad_url_is_denied_naming_it() -> None:
    denied(reviews.pod(annotation="secure-db", name="web"),
           "annotation networkservicemesh.io on the pod", "urls[0]", "no mechanism scheme")


def test_long_interface_name_is_denied() -> None:
    denied(reviews.workload("Deployment", template_annotation="kernel://db/averyverylongname0"),
           "on the Deployment", "urls[0].interface", "1-15")


def test_unknown_mechanism_is_denied() -> None:
    denied(reviews.pod(annotation="kernel://a/nsm0,memif://b", name="web"),
           "urls[1].mechanism", "unknown mechanism 'memif'")


def test_annotation_on_both_workload_and_template_is_denied() -> None:
    denied(reviews.workload("StatefulSet", annotation=URL, template_annotation=URL),
           "both the StatefulSet and its pod template", "keep one")


def test_psa_restricted_namespace_with_hostpath_sockets_is_denied_with_the_fix() -> None:
    denied(reviews.pod(namespace="locked", annotation=URL, name="web"),
           "namespace locked enforces Pod Security 'restricted'", "--socket-volume csi")


def test_volume_name_collision_is_denied() -> None:
    spec = reviews.pod_spec()
    spec["volumes"].append({"name": "vwire-state", "emptyDir": {}})
    denied(reviews.pod(annotation=URL, name="web", spec=spec), "vwire-state", "rename")


def test_unavailable_namespace_lookup_denies_only_the_fallback() -> None:
    def broken(name: str) -> Namespace | None:
        raise LookupFailed("cannot reach the API server: timed out")

    denied(reviews.pod(name="web"), "cannot read the annotations of namespace default",
           namespaces=broken)
    injected(reviews.pod(name="web", annotation=URL), namespaces=broken)


@pytest.mark.parametrize("body", [
    None, [], "x", {}, {"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1"},
    {"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1beta1", "request": {}},
    {"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1", "request": {"uid": 5}},
])
def test_bodies_that_are_not_reviews_are_denied(body: Any) -> None:
    answer = review(body, CONFIG, lookup)
    assert answer["response"]["allowed"] is False and answer["response"]["uid"] == ""
    assert "internal error" not in answer["response"]["status"]["message"]
