"""A minimal Kubernetes API client: ``GET`` of JSON with the pod's service account.

Contract: :class:`ApiServer` speaks HTTPS to one API server (plain ``http.client``, no client
library), verifying it with ``ca_file`` and authenticating with the bearer token in
``token_file``, which is re-read on every request (projected tokens rotate).
:meth:`ApiServer.in_cluster` takes the in-cluster configuration: ``KUBERNETES_SERVICE_HOST`` and
``_PORT`` and the files of :data:`SERVICE_ACCOUNT`. :meth:`ApiServer.get` returns the decoded
JSON object, None for 404, and raises :class:`ApiError` (the message says why) when the server
cannot be reached, answers another status, sends more than ``limit`` bytes or no JSON object.
Used by the webhook (namespaces) and the node agent (the pods of its node).
"""

from __future__ import annotations

import http.client
import json
import os
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class ApiError(Exception):
    """The API server could not answer (the message says why)."""


def path(*segments: str, **query: str) -> str:
    """An API path from unescaped ``segments`` and a query: ``path("api", "v1", "pods")``."""
    text = "/" + "/".join(quote(s, safe="") for s in segments)
    return f"{text}?{urlencode(query)}" if query else text


class ApiServer:
    """See the module docstring."""

    def __init__(self, host: str, port: int, token_file: Path, ca_file: Path,
                 timeout: float = 3.0) -> None:
        self.host, self.port = host, port
        self.token_file = token_file
        self.timeout = timeout
        try:
            self.context = ssl.create_default_context(cafile=str(ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise ApiError(f"cannot read the API server's CA {ca_file}: {exc}") from None

    def __repr__(self) -> str:
        return f"<ApiServer https://{self.host}:{self.port}>"

    @classmethod
    def in_cluster(cls, timeout: float = 3.0) -> ApiServer:
        host = os.environ.get("KUBERNETES_SERVICE_HOST", "")
        if not host:
            raise ApiError("not running in a cluster: KUBERNETES_SERVICE_HOST is not set")
        port = int(os.environ.get("KUBERNETES_SERVICE_PORT", "443"))
        return cls(host, port, SERVICE_ACCOUNT / "token", SERVICE_ACCOUNT / "ca.crt", timeout)

    def get(self, target: str, limit: int = 1 << 20) -> Mapping[str, Any] | None:
        """The JSON object at ``target`` (a path with query); None when the server says 404."""
        try:
            token = self.token_file.read_text().strip()
            conn = http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout,
                                               context=self.context)
            try:
                conn.request("GET", target, headers={"Authorization": f"Bearer {token}",
                                                     "Accept": "application/json"})
                reply = conn.getresponse()
                body = reply.read(limit + 1)
            finally:
                conn.close()
        except (OSError, http.client.HTTPException) as exc:
            raise ApiError(f"cannot reach the API server: {exc}") from None
        if reply.status == 404:
            return None
        if reply.status != 200:
            raise ApiError(f"the API server answered {reply.status} for {target}")
        if len(body) > limit:
            raise ApiError(f"the API server's answer for {target} exceeds {limit} bytes")
        try:
            doc = json.loads(body)
        except ValueError:
            raise ApiError("the API server's answer is not JSON") from None
        if not isinstance(doc, Mapping):
            raise ApiError("the API server's answer is not a JSON object")
        return doc
