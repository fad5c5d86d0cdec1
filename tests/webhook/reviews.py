"""AdmissionReview v1 requests as the API server sends them (fields and shapes of real ones:
``kind``/``resource``/``requestKind``, ``userInfo``, ``options``, ``dryRun``, objects with
defaults filled in), one builder per kind of object."""

from __future__ import annotations

import copy
import uuid
from typing import Any

ANNOTATION = "networkservicemesh.io"


def pod_spec(**extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "containers": [{
            "name": "app", "image": "nginx:1.27", "imagePullPolicy": "IfNotPresent",
            "resources": {}, "terminationMessagePath": "/dev/termination-log",
            "terminationMessagePolicy": "File",
            "volumeMounts": [{"name": "kube-api-access-x2v9f", "readOnly": True,
                              "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}],
        }],
        "restartPolicy": "Always", "terminationGracePeriodSeconds": 30,
        "dnsPolicy": "ClusterFirst", "serviceAccountName": "default",
        "serviceAccount": "default", "securityContext": {}, "schedulerName": "default-scheduler",
        "enableServiceLinks": True, "preemptionPolicy": "PreemptLowerPriority",
        "volumes": [{"name": "kube-api-access-x2v9f", "projected": {"defaultMode": 420, "sources": [
            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}}]}}],
    }
    spec.update(extra)
    return spec


def _request(group: str, version: str, kind: str, resource: str, obj: dict[str, Any],
             namespace: str, operation: str = "CREATE", name: str = "") -> dict[str, Any]:
    gvk = {"group": group, "version": version, "kind": kind}
    request: dict[str, Any] = {
        "uid": str(uuid.uuid4()),
        "kind": gvk, "resource": {"group": group, "version": version, "resource": resource},
        "requestKind": gvk,
        "requestResource": {"group": group, "version": version, "resource": resource},
        "namespace": namespace, "operation": operation,
        "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller",
                     "uid": "5b4c0f9e-1d2e-4d8a-9c61-0f7f3a9d2b11",
                     "groups": ["system:serviceaccounts", "system:serviceaccounts:kube-system",
                                "system:authenticated"]},
        "object": obj, "oldObject": None, "dryRun": False,
        "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"},
    }
    if name:
        request["name"] = name
    if operation == "UPDATE":
        request["oldObject"] = copy.deepcopy(obj)
        request["options"] = {"kind": "UpdateOptions", "apiVersion": "meta.k8s.io/v1"}
    return {"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1", "request": request}


def pod(namespace: str = "default", annotation: str | None = None, name: str = "",
        generate_name: str = "", owner: dict[str, Any] | None = None,
        operation: str = "CREATE", spec: dict[str, Any] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"namespace": namespace, "labels": {"app": "web"}}
    if name:
        meta["name"] = name
    if generate_name:
        meta["generateName"] = generate_name
    if annotation is not None:
        meta["annotations"] = {ANNOTATION: annotation}
    if owner is not None:
        meta["ownerReferences"] = [owner]
    obj = {"kind": "Pod", "apiVersion": "v1", "metadata": meta,
           "spec": pod_spec() if spec is None else spec}
    return _request("", "v1", "Pod", "pods", obj, namespace, operation, name)


def _template(annotation: str | None) -> dict[str, Any]:
    meta: dict[str, Any] = {"labels": {"app": "web"}}
    if annotation is not None:
        meta["annotations"] = {ANNOTATION: annotation}
    spec = pod_spec()
    del spec["volumes"]
    spec["containers"][0].pop("volumeMounts")
    spec.pop("serviceAccount")
    return {"metadata": meta, "spec": spec}


_WORKLOADS = {
    "Deployment": ("apps", "deployments"), "StatefulSet": ("apps", "statefulsets"),
    "DaemonSet": ("apps", "daemonsets"), "ReplicaSet": ("apps", "replicasets"),
    "Job": ("batch", "jobs"),
}


def workload(kind: str, namespace: str = "default", template_annotation: str | None = None,
             annotation: str | None = None, owner: dict[str, Any] | None = None,
             operation: str = "CREATE") -> dict[str, Any]:
    group, resource = _WORKLOADS[kind]
    meta: dict[str, Any] = {"name": "web", "namespace": namespace}
    if annotation is not None:
        meta["annotations"] = {ANNOTATION: annotation}
    if owner is not None:
        meta["ownerReferences"] = [owner]
    template = _template(template_annotation)
    spec: dict[str, Any] = {"template": template}
    if kind != "Job":
        spec["selector"] = {"matchLabels": {"app": "web"}}
    if kind in ("Deployment", "ReplicaSet", "StatefulSet"):
        spec["replicas"] = 2
    if kind == "StatefulSet":
        spec["serviceName"] = "web"
    if kind == "Job":
        template["spec"]["restartPolicy"] = "Never"
        spec["backoffLimit"] = 2
    obj = {"kind": kind, "apiVersion": f"{group}/v1", "metadata": meta, "spec": spec}
    return _request(group, "v1", kind, resource, obj, namespace, operation, "web")


def owner(kind: str, name: str) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": kind, "name": name, "controller": True,
            "blockOwnerDeletion": True, "uid": "3f1b2c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d"}
