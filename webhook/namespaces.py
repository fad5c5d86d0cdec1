"""Where the webhook learns a namespace's annotations and labels.

An AdmissionReview carries the object, not its namespace; the webhook needs the namespace for
the annotation fallback of pods and for its Pod Security level. Sources:

* :class:`InCluster`: ``GET /api/v1/namespaces/NAME`` on the API server with the pod's service
  account (token and CA from ``/var/run/secrets/kubernetes.io/serviceaccount``, address from
  ``KUBERNETES_SERVICE_HOST``/``_PORT``; :mod:`sdk.kubeapi`), bounded by a 3 s timeout and cached
  for 30 s; the webhook's RBAC allows exactly ``get`` on namespaces.
* :class:`FileNamespaces`: a YAML/JSON file, re-read when it changes — a ``kind: List`` or
  ``NamespaceList`` (``kubectl get ns -o yaml``), one Namespace, several YAML documents, or a
  plain mapping ``NAME: {annotations: {...}, labels: {...}}``. For tests and clusterless runs.
* :data:`NO_NAMESPACES`: nothing is known.

A lookup returns :class:`Namespace` or None (no such namespace) and raises
:class:`LookupFailed` when the source cannot answer.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sdk import kubeapi


class LookupFailed(Exception):
    """The source of namespaces could not answer (the message says why)."""


@dataclass(frozen=True)
class Namespace:
    name: str
    annotations: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)


NamespaceLookup = Callable[[str], Namespace | None]


def NO_NAMESPACES(name: str) -> Namespace | None:
    """Knows no namespace."""
    return None


def _strings(value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping):
        return {}
    return {str(k): str(v) for k, v in value.items() if isinstance(v, str | int | float | bool)}


def from_object(doc: Mapping[str, Any]) -> Namespace | None:
    """A Namespace object (``kind: Namespace``) as :class:`Namespace`; None for anything else."""
    meta = doc.get("metadata")
    if doc.get("kind") != "Namespace" or not isinstance(meta, Mapping):
        return None
    name = meta.get("name")
    if not isinstance(name, str):
        return None
    return Namespace(name, _strings(meta.get("annotations")), _strings(meta.get("labels")))


def parse_documents(text: str) -> dict[str, Namespace]:
    """Namespaces from the text of a namespaces file (see the module docstring)."""
    found: dict[str, Namespace] = {}
    for doc in yaml.safe_load_all(text):
        if not isinstance(doc, Mapping):
            continue
        items = doc.get("items") if doc.get("kind") in ("List", "NamespaceList") else [doc]
        if doc.get("kind") is None:  # a plain mapping NAME -> {annotations, labels}
            items = [{"kind": "Namespace", "metadata": {"name": str(name), **value}}
                     for name, value in doc.items() if isinstance(value, Mapping)]
        for item in items if isinstance(items, list) else []:
            ns = from_object(item) if isinstance(item, Mapping) else None
            if ns is not None:
                found[ns.name] = ns
    return found


class FileNamespaces:
    """Namespaces from a file, re-read when its modification time changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: float | None = None
        self._known: dict[str, Namespace] = {}
        self._lock = threading.Lock()

    def __call__(self, name: str) -> Namespace | None:
        with self._lock:
            try:
                stamp = self.path.stat().st_mtime_ns
                if stamp != self._stamp:
                    self._known = parse_documents(self.path.read_text())
                    self._stamp = stamp
            except (OSError, yaml.YAMLError, UnicodeDecodeError) as exc:
                raise LookupFailed(f"cannot read namespaces file {self.path}: {exc}") from None
            return self._known.get(name)


class InCluster:
    """Namespaces from the API server, with the pod's service account (see the module)."""

    def __init__(self, api: kubeapi.ApiServer, ttl: float = 30.0) -> None:
        self.api = api
        self.ttl = ttl
        self._cache: dict[str, tuple[float, Namespace | None]] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_environment(cls) -> InCluster:
        try:
            return cls(kubeapi.ApiServer.in_cluster())
        except kubeapi.ApiError as exc:
            raise LookupFailed(str(exc)) from None

    def __call__(self, name: str) -> Namespace | None:
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(name)
            if hit is not None and now - hit[0] < self.ttl:
                return hit[1]
        found = self._get(name)
        with self._lock:
            if len(self._cache) > 4096:
                self._cache.clear()
            self._cache[name] = (now, found)
        return found

    def _get(self, name: str) -> Namespace | None:
        try:
            doc = self.api.get(kubeapi.path("api", "v1", "namespaces", name))
        except kubeapi.ApiError as exc:
            raise LookupFailed(str(exc)) from None
        return None if doc is None else from_object(doc)


def lookup_from(setting: str) -> NamespaceLookup:
    """The lookup a ``namespaces`` setting names (see :class:`webhook.settings`)."""
    if setting == "none":
        return NO_NAMESPACES
    if setting == "in-cluster":
        return InCluster.from_environment()
    if setting == "auto":
        in_cluster = bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
        return InCluster.from_environment() if in_cluster else NO_NAMESPACES
    return FileNamespaces(Path(setting))
