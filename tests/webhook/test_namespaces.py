"""Where namespaces' annotations come from: a file (every shape ``kubectl get ns -o yaml``
gives, or a plain mapping) and the API server over HTTPS with a service-account token."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import ClassVar

import pytest

from sdk.kubeapi import ApiServer
from tests.https_stub import api_server
from webhook.namespaces import (
    NO_NAMESPACES,
    FileNamespaces,
    InCluster,
    LookupFailed,
    Namespace,
    lookup_from,
)

LIST = """apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Namespace
  metadata:
    name: meshed
    annotations: {networkservicemesh.io: "kernel://db"}
    labels: {pod-security.kubernetes.io/enforce: restricted}
"""


def test_file_shapes_and_reload(tmp_path: Path) -> None:
    path = tmp_path / "ns.yaml"
    path.write_text(LIST)
    lookup = FileNamespaces(path)
    assert lookup("meshed") == Namespace("meshed", {"networkservicemesh.io": "kernel://db"},
                                         {"pod-security.kubernetes.io/enforce": "restricted"})
    assert lookup("other") is None
    path.write_text("---\napiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\n"
                    "b: {annotations: {x: y}}\n")
    os.utime(path, ns=(0, path.stat().st_mtime_ns + 1))
    assert lookup("a") == Namespace("a") and lookup("b") == Namespace("b", {"x": "y"})
    path.write_text(": : bad yaml [")
    os.utime(path, ns=(0, path.stat().st_mtime_ns + 2))
    with pytest.raises(LookupFailed, match="cannot read namespaces file"):
        lookup("a")


def test_settings_choose_the_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert lookup_from("none") is NO_NAMESPACES and lookup_from("auto") is NO_NAMESPACES
    assert isinstance(lookup_from(str(tmp_path / "ns.yaml")), FileNamespaces)
    with pytest.raises(LookupFailed, match="not running in a cluster"):
        lookup_from("in-cluster")


class _Api(BaseHTTPRequestHandler):
    calls: ClassVar[list[str]] = []

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.calls.append(self.path)
        if self.headers.get("Authorization") != "Bearer sa-token":
            self.send_response(401)
            self.end_headers()
            return
        name = self.path.rsplit("/", 1)[-1]
        if name != "meshed":
            self.send_response(404)
            self.end_headers()
            return
        body = json.dumps({"kind": "Namespace", "apiVersion": "v1", "metadata": {
            "name": "meshed", "annotations": {"networkservicemesh.io": "kernel://db"}}}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    with api_server(tmp_path, _Api, "sa-token") as port:
        yield port, tmp_path


def test_in_cluster_lookup_over_https_with_the_token(api: tuple[int, Path]) -> None:
    port, root = api
    _Api.calls = []
    lookup = InCluster(ApiServer("localhost", port, root / "token", root / "api" / "bundle.pem"))
    assert lookup("meshed") == Namespace("meshed", {"networkservicemesh.io": "kernel://db"})
    assert lookup("meshed") is not None and lookup("gone") is None
    assert _Api.calls == ["/api/v1/namespaces/meshed", "/api/v1/namespaces/gone"]  # cached
    (root / "token").write_text("wrong")
    with pytest.raises(LookupFailed, match="answered 401"):
        lookup("new")


def test_in_cluster_lookup_fails_clearly_when_unreachable(tmp_path: Path,
                                                          api: tuple[int, Path]) -> None:
    _, root = api
    lookup = InCluster(ApiServer("localhost", 1, root / "token", root / "api" / "bundle.pem",
                                 timeout=1))
    with pytest.raises(LookupFailed, match="cannot reach the API server"):
        lookup("meshed")
