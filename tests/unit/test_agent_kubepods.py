"""The agent's ``kubernetes`` resolver: the pod UID from ``/proc/PID/cgroup`` (the kubelet's
cgroup shapes, both drivers, cgroup v1 and v2, seen from the host's or a private cgroup
namespace), then the pod from a real HTTPS stand-in API server: token and CA, the field selector,
the cache and its refresh on a miss, and every refusal (other node, not running, unknown).
End to end: a real connection to the agent, attested by SO_PEERCRED, answered with the SVID of
the pod the API server names for this process's cgroup."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

import pytest

from agent.kubepods import KubernetesPods, pod_uid
from agent.server import AgentServer
from sdk.errors import PermissionDenied, Unavailable
from sdk.kubeapi import ApiServer
from sdk.security.ca import CertificateAuthority
from sdk.security.workload import fetch
from tests.https_stub import api_server

UID = "0d2b6c5e-5e0f-4f7e-9d0a-3f1e2d4c5b6a"
SYSTEMD_UID = UID.replace("-", "_")
CTR = "4f1c2b3a" * 8

SHAPES = {
    "v2 systemd containerd burstable": f"0::/kubepods.slice/kubepods-burstable.slice/"
    f"kubepods-burstable-pod{SYSTEMD_UID}.slice/cri-containerd-{CTR}.scope\n",
    "v2 systemd guaranteed": f"0::/kubepods.slice/kubepods-pod{SYSTEMD_UID}.slice/"
    f"cri-containerd-{CTR}.scope\n",
    "v2 systemd cri-o besteffort": f"0::/kubepods.slice/kubepods-besteffort.slice/"
    f"kubepods-besteffort-pod{SYSTEMD_UID}.slice/crio-{CTR}.scope\n",
    "v2 kind (kubelet.slice)": f"0::/kubelet.slice/kubelet-kubepods.slice/"
    f"kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{SYSTEMD_UID}.slice/"
    f"cri-containerd-{CTR}.scope\n",
    "v2 private cgroup namespace": f"0::/../../kubepods-burstable-pod{SYSTEMD_UID}.slice/"
    f"cri-containerd-{CTR}.scope\n",
    "v2 cgroupfs": f"0::/kubepods/burstable/pod{UID}/{CTR}\n",
    "v2 cgroupfs private cgroup namespace": f"0::/../../pod{UID}/{CTR}\n",
    "v1 cgroupfs docker": "".join(
        f"{i}:{c}:/kubepods/burstable/pod{UID}/{CTR}\n" for i, c in enumerate(
            ["name=systemd", "cpuset", "cpu,cpuacct", "blkio", "memory", "devices", "freezer",
             "net_cls,net_prio", "perf_event", "hugetlb", "pids"], start=1)) + "0::/\n",
    "v1 cgroupfs guaranteed": f"4:memory:/kubepods/pod{UID}/{CTR}\n"
    f"1:name=systemd:/kubepods/pod{UID}/{CTR}\n",
    "v1 systemd": f"11:cpu,cpuacct:/kubepods.slice/kubepods-besteffort.slice/"
    f"kubepods-besteffort-pod{SYSTEMD_UID}.slice/docker-{CTR}.scope\n"
    f"1:name=systemd:/kubepods.slice/kubepods-besteffort.slice/"
    f"kubepods-besteffort-pod{SYSTEMD_UID}.slice/docker-{CTR}.scope\n0::/\n",
}

NOT_PODS = {
    "a service": "0::/system.slice/containerd.service\n",
    "a login session": "0::/user.slice/user-1000.slice/session-3.scope\n",
    "init": "0::/init.scope\n",
    "a QoS slice itself": "0::/kubepods.slice/kubepods-burstable.slice\n",
    "v1 host process": "4:memory:/system.slice/kubelet.service\n1:name=systemd:/\n0::/\n",
    "pod dir not below kubepods": f"0::/system.slice/pod{UID}/x\n",
    "not a UID": "0::/kubepods/burstable/podnot-a-uid-at-all/x\n",
    "empty": "",
    "two pods": f"4:memory:/kubepods/pod{UID}/{CTR}\n"
    f"1:name=systemd:/kubepods/pod{UID[:-1]}0/{CTR}\n",
}


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_the_pod_uid_of_every_kubelet_cgroup_shape(shape: str) -> None:
    assert pod_uid(SHAPES[shape]) == UID


@pytest.mark.parametrize("shape", sorted(NOT_PODS))
def test_no_pod_uid_where_there_is_no_single_pod(shape: str) -> None:
    assert pod_uid(NOT_PODS[shape]) is None


def _pod(name: str, uid: str, node: str, phase: str = "Running", sa: str | None = "frontend",
         ) -> dict[str, Any]:
    spec: dict[str, Any] = {"nodeName": node}
    if sa:
        spec["serviceAccountName"] = sa
    return {"metadata": {"name": name, "namespace": "shop", "uid": uid}, "spec": spec,
            "status": {"phase": phase}}


class _Api(BaseHTTPRequestHandler):
    pods: ClassVar[list[dict[str, Any]]] = []
    calls: ClassVar[list[str]] = []
    honour_selector: ClassVar[bool] = True

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _answer(self, status: int, doc: Any = None) -> None:
        body = json.dumps(doc).encode() if doc is not None else b""
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self.calls.append(self.path)
        url = urlsplit(self.path)
        if self.headers.get("Authorization") != "Bearer agent-token":
            return self._answer(401, {"kind": "Status", "code": 401})
        if url.path != "/api/v1/pods":
            return self._answer(404, {"kind": "Status", "code": 404})
        [selector] = parse_qs(url.query).get("fieldSelector", [""])
        node = selector.removeprefix("spec.nodeName=")
        items = [p for p in self.pods
                 if not self.honour_selector or p["spec"]["nodeName"] == node]
        return self._answer(200, {"kind": "PodList", "apiVersion": "v1", "items": items})


@pytest.fixture
def api(tmp_path: Path) -> Iterator[ApiServer]:
    _Api.pods, _Api.calls, _Api.honour_selector = [], [], True
    with api_server(tmp_path, _Api, "agent-token") as port:
        yield ApiServer("localhost", port, tmp_path / "token", tmp_path / "api" / "bundle.pem")


def _proc(root: Path, pid: int, cgroup: str) -> None:
    (root / str(pid)).mkdir(parents=True, exist_ok=True)
    (root / str(pid) / "cgroup").write_text(cgroup)


OTHER = "9a8b7c6d-1111-4222-8333-444455556666"
DONE = "9a8b7c6d-2222-4222-8333-444455556666"
NEW = "9a8b7c6d-3333-4222-8333-444455556666"


def test_resolves_and_refuses_with_the_reason(api: ApiServer, tmp_path: Path) -> None:
    _Api.pods = [_pod("web", UID, "node-a"), _pod("db", OTHER, "node-b"),
                 _pod("job", DONE, "node-a", phase="Succeeded"),
                 _pod("init", NEW, "node-a", phase="Pending", sa=None)]
    proc = tmp_path / "proc"
    for pid, uid in ((10, UID), (11, OTHER), (12, DONE), (13, NEW)):
        _proc(proc, pid, f"0::/kubepods/burstable/pod{uid}/{CTR}\n")
    _proc(proc, 14, "0::/system.slice/sshd.service\n")
    pods = KubernetesPods(api, "node-a", proc=proc)

    web = pods.pod_of(10)
    assert web is not None and (web.namespace, web.service_account, web.uid) == (
        "shop", "frontend", UID)
    init = pods.pod_of(13)  # init containers run while their pod is Pending
    assert init is not None and init.service_account == "default"
    with pytest.raises(PermissionDenied, match=f"pod {OTHER}, which is not among the pods the "
                                               "API server has for node node-a"):
        pods.pod_of(11)
    with pytest.raises(PermissionDenied, match=r"shop/job .* is not running \(phase Succeeded"):
        pods.pod_of(12)
    assert pods.pod_of(14) is None and pods.pod_of(99) is None  # in no pod; no such process
    assert _Api.calls[0] == "/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-a"


def test_a_pod_the_api_server_places_on_another_node_is_refused(api: ApiServer,
                                                                tmp_path: Path) -> None:
    _Api.honour_selector = False  # even if the list held other nodes' pods
    _Api.pods = [_pod("db", OTHER, "node-b")]
    _proc(tmp_path, 11, f"0::/kubepods.slice/kubepods-pod{OTHER.replace('-', '_')}.slice/x\n")
    with pytest.raises(PermissionDenied, match=r"shop/db .* runs on node node-b, not on this "
                                               r"node node-a"):
        KubernetesPods(api, "node-a", proc=tmp_path).pod_of(11)


def test_the_list_is_cached_and_listed_again_on_a_miss(api: ApiServer, tmp_path: Path) -> None:
    now = [100.0]
    pods = KubernetesPods(api, "node-a", ttl=5.0, min_refresh=1.0, proc=tmp_path,
                          clock=lambda: now[0])
    _Api.pods = [_pod("web", UID, "node-a")]
    _proc(tmp_path, 10, f"0::/kubepods/pod{UID}/{CTR}\n")
    _proc(tmp_path, 13, f"0::/kubepods/pod{NEW}/{CTR}\n")
    assert pods.pod_of(10) and pods.pod_of(10) and pods.lists == 1  # cached
    with pytest.raises(PermissionDenied, match="not among"):
        pods.pod_of(13)  # a miss within min_refresh of the last list: not listed again
    assert pods.lists == 1
    _Api.pods.append(_pod("new", NEW, "node-a", phase="Pending"))
    now[0] += 1.5
    new = pods.pod_of(13)  # a miss: listed again, the new pod is found
    assert new is not None and new.name == "new" and pods.lists == 2
    now[0] += 3
    assert pods.pod_of(10) and pods.lists == 2  # a hit in a fresh list
    _Api.pods = [_pod("new", NEW, "node-a")]
    now[0] += 5
    with pytest.raises(PermissionDenied, match="not among"):
        pods.pod_of(10)  # the list aged: listed again, web is gone
    assert pods.lists == 3


def test_token_and_ca_are_checked(api: ApiServer, tmp_path: Path) -> None:
    _proc(tmp_path / "proc", 10, f"0::/kubepods/pod{UID}/{CTR}\n")
    (tmp_path / "token").write_text("stolen\n")  # re-read on every list: rotation works
    pods = KubernetesPods(api, "node-a", proc=tmp_path / "proc")
    with pytest.raises(Unavailable, match="cannot list the pods of node node-a: the API server "
                                          "answered 401"):
        pods.pod_of(10)
    CertificateAuthority.init(tmp_path / "other", "other.local")
    stranger = ApiServer(api.host, api.port, api.token_file, tmp_path / "other" / "bundle.pem")
    with pytest.raises(Unavailable, match="CERTIFICATE_VERIFY_FAILED"):
        KubernetesPods(stranger, "node-a", proc=tmp_path / "proc").pod_of(10)


async def test_the_agent_issues_the_svid_of_the_callers_pod(api: ApiServer,
                                                            tmp_path: Path) -> None:
    """This test process's cgroup (a fake /proc) says pod web: the agent, asked over its
    socket, attests this process by SO_PEERCRED and answers with web's identity."""
    _Api.pods = [_pod("web", UID, "node-a")]
    _proc(tmp_path / "proc", os.getpid(), SHAPES["v2 systemd containerd burstable"])
    pods = KubernetesPods(api, "node-a", proc=tmp_path / "proc")
    server = AgentServer(tmp_path / "a" / "agent.sock",
                         CertificateAuthority.create("cluster.local"), pods)
    await server.start()
    try:
        got = await asyncio.to_thread(fetch, str(server.path))
        assert str(got.svid.spiffe_id) == "spiffe://cluster.local/ns/shop/sa/frontend"
        _Api.pods = []
        pods.min_refresh = pods.ttl = 0
        with pytest.raises(PermissionDenied, match="not among the pods"):
            await asyncio.to_thread(fetch, str(server.path))
    finally:
        await server.stop()
