"""The ``kubernetes`` pod resolver: a process's pod from its cgroup and the API server.

Contract: :func:`pod_uid` reads the pod UID from the text of ``/proc/PID/cgroup`` — the cgroups
the kubelet makes for pods, with either cgroup driver and cgroup v1 or v2:

* systemd driver: ``.../kubepods-burstable.slice/kubepods-burstable-pod<UID>.slice/<ctr>.scope``
  (also ``kubepods-besteffort-pod``, ``kubepods-pod`` for Guaranteed pods, and a prefix such as
  kind's ``kubelet-kubepods-...``), the UID's ``-`` written ``_``;
* cgroupfs driver: ``/kubepods/burstable/pod<UID>/<ctr>`` or ``/kubepods/pod<UID>/<ctr>``;
* seen from a private cgroup namespace (the agent's container on cgroup v2) paths are relative
  to the agent's own cgroup and start with ``/..``: the pod's component is still there.

No pod component, or lines naming different pods, is None (the process is in no pod). A process
cannot choose its cgroup: moving it needs write access to the host's cgroup file system.

:class:`KubernetesPods` maps the UID to the pod: ``GET /api/v1/pods?fieldSelector=spec.nodeName=
<node>`` with the agent's service account (RBAC: ``list`` on pods), the list kept ``ttl`` seconds
(5) and listed again on a miss (at most once per ``min_refresh`` second, one list at a time). It
refuses (PermissionDenied, naming the reason) a UID that is not among this node's pods, a pod
the API server places on another node, and a pod whose phase is not Pending or Running (init
containers, among them the injected ``vwire-nsc-init``, run while their pod is Pending). An API
server that cannot answer is Unavailable: nothing is issued from a stale list.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from agent.attest import Pod
from sdk import kubeapi
from sdk.errors import FailedPrecondition, PermissionDenied, Unavailable

_HEX_UID = r"[0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12}"
_SLICE = re.compile(rf"(?:[a-z0-9_-]+-)?kubepods(?:-burstable|-besteffort)?-pod({_HEX_UID})\.slice")
_POD_DIR = re.compile(rf"pod({_HEX_UID})")
_ALIVE = ("Pending", "Running")
LIST_LIMIT = 64 << 20  # bytes of one pod list (a node's pods: far less)
_log = structlog.get_logger("agent")


def _uid_in(path: str) -> str | None:
    anchored = False  # cgroupfs: pod<UID> only below kubepods (or above our own cgroup)
    for part in path.split("/"):
        found = _SLICE.fullmatch(part)
        if found is None and anchored:
            found = _POD_DIR.fullmatch(part)
        if found is not None:
            return found.group(1).replace("_", "-")
        anchored = anchored or part in ("kubepods", "..")
    return None


def pod_uid(cgroup: str) -> str | None:
    """The pod UID in the text of ``/proc/PID/cgroup``; None when in no (or no single) pod."""
    uids = set()
    for line in cgroup.splitlines():
        fields = line.split(":", 2)
        if len(fields) == 3:
            uid = _uid_in(fields[2])
            if uid is not None:
                uids.add(uid)
    if len(uids) > 1:
        _log.warning("process in the cgroups of several pods", pods=sorted(uids))
        return None
    return uids.pop() if uids else None


@dataclass(frozen=True)
class PodEntry:
    """A pod of the list and what decides whether it may have an identity."""

    pod: Pod
    node: str
    phase: str


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def entry_of(item: Any) -> PodEntry | None:
    """A pod of a PodList as :class:`PodEntry`; None when it has no UID, name or namespace."""
    if not isinstance(item, Mapping):
        return None
    meta, spec, status = (_mapping(item.get(k)) for k in ("metadata", "spec", "status"))
    name, namespace, uid = (meta.get(k) for k in ("name", "namespace", "uid"))
    if not (isinstance(name, str) and isinstance(namespace, str) and isinstance(uid, str)):
        return None
    pod = Pod(name, namespace, str(spec.get("serviceAccountName") or "default"), uid)
    return PodEntry(pod, str(spec.get("nodeName") or ""), str(status.get("phase") or ""))


class KubernetesPods:
    """See the module docstring."""

    def __init__(self, api: kubeapi.ApiServer, node: str, ttl: float = 5.0,
                 min_refresh: float = 1.0, proc: Path = Path("/proc"),
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.api, self.node = api, node
        self.ttl, self.min_refresh = ttl, min_refresh
        self.proc = proc
        self.clock = clock
        self.lists = 0  # how many times the pods were listed
        self._pods: dict[str, PodEntry] = {}
        self._listed: float | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<KubernetesPods node={self.node} {self.api!r}>"

    @classmethod
    def from_environment(cls, node: str = "") -> KubernetesPods:
        """In-cluster: the API server of the environment; ``node`` or ``$NODE_NAME``."""
        node = node or os.environ.get("NODE_NAME", "")
        if not node:
            raise FailedPrecondition("pods=kubernetes needs this node's name: set NODE_NAME "
                                     "(downward API: spec.nodeName) or use pods=kubernetes:NODE")
        try:
            return cls(kubeapi.ApiServer.in_cluster(), node)
        except kubeapi.ApiError as exc:
            raise FailedPrecondition(f"pods=kubernetes: {exc}") from None

    def pod_of(self, pid: int) -> Pod | None:
        try:
            uid = pod_uid((self.proc / str(pid) / "cgroup").read_text())
        except OSError:
            return None
        if uid is None:
            return None
        entry = self._lookup(uid)
        if entry is None:
            raise PermissionDenied(f"process {pid} is in pod {uid}, which is not among the pods "
                                   f"the API server has for node {self.node}")
        where = f"pod {entry.pod.namespace}/{entry.pod.name} ({uid})"
        if entry.node != self.node:
            raise PermissionDenied(f"{where} runs on node {entry.node or '(none)'}, not on this "
                                   f"node {self.node}")
        if entry.phase not in _ALIVE:
            raise PermissionDenied(f"{where} is not running (phase {entry.phase or 'unknown'})")
        return entry.pod

    def _lookup(self, uid: str) -> PodEntry | None:
        with self._lock:  # one list at a time; who waited uses the list just made
            age = None if self._listed is None else self.clock() - self._listed
            hit = self._pods.get(uid)
            if age is not None and (age < self.min_refresh or (hit is not None and age < self.ttl)):
                return hit
            self._refresh()
            return self._pods.get(uid)

    def _refresh(self) -> None:
        target = kubeapi.path("api", "v1", "pods", fieldSelector=f"spec.nodeName={self.node}")
        try:
            doc = self.api.get(target, limit=LIST_LIMIT)
        except kubeapi.ApiError as exc:
            raise Unavailable(f"cannot list the pods of node {self.node}: {exc}") from None
        items = doc.get("items") if doc is not None else None
        if not isinstance(items, list):
            raise Unavailable(f"the API server's answer for {target} is not a pod list")
        entries = (entry_of(item) for item in items)
        self._pods = {e.pod.uid: e for e in entries if e is not None}
        self._listed = self.clock()
        self.lists += 1
        _log.debug("pods listed", node=self.node, pods=len(self._pods))
