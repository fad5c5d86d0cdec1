"""The admission decision, as a pure function of an ``admission.k8s.io/v1`` AdmissionReview.

:func:`review` answers every input with an AdmissionReview response (it raises nothing; a body
that is not a review is denied with a reason). The rules:

* only ``CREATE`` is patched (UPDATE, DELETE, CONNECT are allowed unchanged: a running pod's
  containers cannot change);
* objects: Pods, and the pod templates of Deployments, StatefulSets, DaemonSets, ReplicaSets and
  Jobs; anything else is allowed unchanged;
* the annotation ``networkservicemesh.io`` (NSM's: comma-separated NSM URLs) on the object, or
  for a workload on its pod template — on both is denied (which one would win?);
* a ReplicaSet owned by a Deployment is skipped (the Deployment's template was patched);
* a pod without the annotation takes its namespace's annotation (from the namespace lookup; an
  unavailable lookup then denies, so the controller retries rather than a pod silently starting
  without its vWire);
* a pod or template that has the injected containers already is allowed unchanged (pods made
  from a patched template);
* the URLs are parsed by :func:`sdk.nsmurl.parse_list`: a bad URL, an interface name longer than
  15 characters or an unknown mechanism is denied with the parser's message;
* in a namespace that enforces Pod Security ``baseline`` or ``restricted`` the node sockets
  cannot be hostPath volumes: denied with the fix, unless ``socket_volume`` is ``csi``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

import structlog

from sdk.errors import InvalidArgument
from sdk.metrics import WEBHOOK_REVIEWS
from sdk.nsmurl import NsmUrl, parse_list
from webhook.inject import ANNOTATION, INIT_NAME, SIDECAR_NAME, VOLUMES, InjectConfig, patch
from webhook.namespaces import LookupFailed, Namespace, NamespaceLookup

log = structlog.get_logger("webhook")

API_VERSION = "admission.k8s.io/v1"
#: Kinds whose ``spec.template`` is a pod template, by API group.
WORKLOADS = {
    ("apps", "Deployment"), ("apps", "StatefulSet"), ("apps", "DaemonSet"),
    ("apps", "ReplicaSet"), ("batch", "Job"),
}
PSA_ENFORCE = "pod-security.kubernetes.io/enforce"


class Denied(Exception):
    """The object is refused; the message is shown to the user by kubectl."""

    def __init__(self, message: str, code: int = 400) -> None:
        super().__init__(message)
        self.code = code


def _mapping(value: Any, where: str, optional: bool = False) -> Mapping[str, Any]:
    if value is None and optional:
        return {}
    if not isinstance(value, Mapping):
        raise Denied(f"{where} must be an object")
    return value


def _annotation(meta: Mapping[str, Any], where: str) -> str | None:
    annotations = _mapping(meta.get("annotations"), f"{where}.annotations", optional=True)
    value = annotations.get(ANNOTATION)
    if value is not None and not isinstance(value, str):
        raise Denied(f"{where}.annotations[{ANNOTATION}] must be a string")
    return value


def _urls(value: str, where: str) -> list[NsmUrl]:
    try:
        return parse_list(value, "urls")
    except InvalidArgument as exc:
        raise Denied(f"annotation {ANNOTATION} on {where}: {exc}") from None


def _injected(spec: Mapping[str, Any]) -> bool:
    for key in ("initContainers", "containers"):
        items = spec.get(key)
        if isinstance(items, list) and any(
            isinstance(c, Mapping) and c.get("name") in (INIT_NAME, SIDECAR_NAME) for c in items
        ):
            return True
    return False


def _check_collisions(spec: Mapping[str, Any], where: str) -> None:
    volumes = spec.get("volumes")
    if not isinstance(volumes, list):
        return
    taken = {str(v.get("name")) for v in volumes if isinstance(v, Mapping)} & set(VOLUMES)
    if taken:
        raise Denied(f"{where}.volumes already has {', '.join(sorted(taken))}: names the "
                     "injected client needs; rename the pod's volume")


def _namespace(lookup: NamespaceLookup, name: str) -> Namespace | None:
    """The namespace, or None when unknown or when the lookup cannot answer (used where the
    answer only refines a decision the API server makes again)."""
    try:
        return lookup(name) if name else None
    except LookupFailed:
        return None


def _check_pod_security(ns: Namespace | None, config: InjectConfig) -> None:
    if ns is None or config.socket_volume != "hostPath":
        return
    level = ns.labels.get(PSA_ENFORCE, "privileged")
    if level in ("baseline", "restricted"):
        raise Denied(
            f"namespace {ns.name} enforces Pod Security {level!r}, which forbids the hostPath "
            "volumes of the node's nsmgr and identity sockets that the injected client needs: "
            "run the webhook with --socket-volume csi (a CSI driver exposing them), or label the "
            f"namespace {PSA_ENFORCE}=privileged"
        )


def _pod_annotation(obj: Mapping[str, Any], meta: Mapping[str, Any], namespace: str,
                    lookup: NamespaceLookup) -> tuple[str | None, str]:
    """The pod's annotation, else its namespace's: (value, where it was found)."""
    value = _annotation(meta, "metadata")
    if value is not None:
        return value, "the pod"
    if not namespace:
        return None, ""
    try:
        ns = lookup(namespace)
    except LookupFailed as exc:
        raise Denied(f"cannot read the annotations of namespace {namespace}: {exc}",
                     code=500) from None
    if ns is None or ns.annotations.get(ANNOTATION) is None:
        return None, ""
    return ns.annotations[ANNOTATION], f"namespace {namespace}"


def _owned_by_deployment(meta: Mapping[str, Any]) -> bool:
    owners = meta.get("ownerReferences")
    return isinstance(owners, list) and any(
        isinstance(o, Mapping) and o.get("kind") == "Deployment" and o.get("controller") is True
        for o in owners
    )


def _workload(obj: Mapping[str, Any], meta: Mapping[str, Any], kind: str
              ) -> tuple[str | None, Mapping[str, Any], str]:
    """(annotation, pod spec, its JSON pointer) of a workload's template."""
    spec = _mapping(obj.get("spec"), "object.spec")
    template = _mapping(spec.get("template"), "object.spec.template")
    tmeta = _mapping(template.get("metadata"), "object.spec.template.metadata", optional=True)
    outer = _annotation(meta, "metadata")
    inner = _annotation(tmeta, "spec.template.metadata")
    if outer is not None and inner is not None:
        raise Denied(f"annotation {ANNOTATION} is on both the {kind} and its pod template: "
                     "keep one (the template's)")
    pod_spec = _mapping(template.get("spec"), "object.spec.template.spec")
    return (outer if outer is not None else inner), pod_spec, "/spec/template/spec"


def _decide(request: Mapping[str, Any], config: InjectConfig, lookup: NamespaceLookup
            ) -> list[dict[str, Any]]:
    """The patch for ``request`` ([] when nothing is to be injected); Denied when refused."""
    if request.get("operation") != "CREATE":
        return []
    kind = _mapping(request.get("kind"), "request.kind")
    group, name = kind.get("group", ""), kind.get("kind")
    if not isinstance(group, str) or not isinstance(name, str):
        raise Denied("request.kind.group and request.kind.kind must be strings")
    obj = _mapping(request.get("object"), "request.object")
    meta = _mapping(obj.get("metadata"), "object.metadata", optional=True)
    namespace = request.get("namespace") or meta.get("namespace") or ""
    if not isinstance(namespace, str):
        raise Denied("request.namespace must be a string")
    if (group, name) == ("", "Pod"):
        value, where = _pod_annotation(obj, meta, namespace, lookup)
        spec, path = _mapping(obj.get("spec"), "object.spec"), "/spec"
    elif (group, name) in WORKLOADS:
        if name == "ReplicaSet" and _owned_by_deployment(meta):
            return []
        value, spec, path = _workload(obj, meta, name)
        where = f"the {name}"
    else:
        return []
    if value is None or _injected(spec):
        return []
    urls = _urls(value, where)
    _check_collisions(spec, path.replace("/", ".").lstrip("."))
    _check_pod_security(_namespace(lookup, namespace), config)
    return patch(config, spec, path, urls)


def response(uid: str, ops: list[dict[str, Any]] | None = None,
             denied: Denied | None = None) -> dict[str, Any]:
    """An AdmissionReview v1 response."""
    answer: dict[str, Any] = {"uid": uid, "allowed": denied is None}
    if denied is not None:
        answer["status"] = {"code": denied.code, "message": str(denied)}
    elif ops:
        answer["patchType"] = "JSONPatch"
        answer["patch"] = base64.b64encode(json.dumps(ops).encode()).decode()
    return {"apiVersion": API_VERSION, "kind": "AdmissionReview", "response": answer}


def review(doc: Any, config: InjectConfig, lookup: NamespaceLookup) -> dict[str, Any]:
    """The AdmissionReview response to ``doc`` (any JSON value); never raises."""
    uid = ""
    try:
        body = _mapping(doc, "the body (an AdmissionReview)")
        if body.get("apiVersion") != API_VERSION or body.get("kind") != "AdmissionReview":
            raise Denied(f"expected apiVersion {API_VERSION} kind AdmissionReview")
        request = _mapping(body.get("request"), "request")
        raw_uid = request.get("uid")
        if not isinstance(raw_uid, str) or not raw_uid:
            raise Denied("request.uid must be a non-empty string")
        uid = raw_uid
        ops = _decide(request, config, lookup)
    except Denied as denied:
        log.info("denied", uid=uid, reason=str(denied))
        WEBHOOK_REVIEWS.labels("denied").inc()
        return response(uid, denied=denied)
    except Exception as exc:  # the webhook must answer whatever it is sent
        log.exception("review failed", uid=uid)
        WEBHOOK_REVIEWS.labels("error").inc()
        return response(uid, denied=Denied(f"internal error: {type(exc).__name__}", 500))
    if ops:
        log.info("injected", uid=uid, operations=len(ops))
    WEBHOOK_REVIEWS.labels("patched" if ops else "allowed").inc()
    return response(uid, ops)
