"""What is injected into a pod spec, and the JSON Patch (RFC 6902) that injects it.

Injected (names are fixed, so a pod that has them is recognised as injected already):

* init container ``vwire-nsc-init``: ``vwire-nsc --init`` connects every URL, waits until each
  vWire answers pings, writes the pod's state file and exits, leaving the connections open; it
  comes first, so the pod's own init containers already have the vWires;
* the keeping client ``vwire-nsc``: ``vwire-nsc --resume`` refreshes those very connections,
  heals them and closes them on SIGTERM — a native sidecar (init container with
  ``restartPolicy: Always``: started before the app, stopped after it, and a Job completes) or a
  plain container (``sidecar=container``, clusters before 1.29);
* volumes: the node's nsmgr socket directory and the node agent's Workload API socket directory
  (read-only), and a small in-memory ``emptyDir`` for the state file the two clients share;
* the pod sysctl ``net.ipv4.ping_group_range`` (a "safe" sysctl, allowed by every Pod Security
  level) so the clients can ping without ``CAP_NET_RAW``.

Both clients run as a non-root user, with no privilege escalation, every capability dropped, a
read-only root file system and the runtime's default seccomp profile: Pod Security "restricted"
for the containers. The forwarder does the privileged work on the node. Their name is the pod's
``<name>.<namespace>`` through the downward API (``NSM_NAME``), so a pod made from
``generateName`` (no name yet at admission) gets its real name.

The patch only ever *adds*: an absent array is added whole, an existing one gets elements
(``/-``, or ``/0`` for the init container), so the pod's own init containers, containers,
volumes and sysctls stay as they are.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sdk.nsmurl import NsmUrl
from webhook.settings import WebhookSettings

#: NSM's annotation key: its users' manifests work unchanged.
ANNOTATION = "networkservicemesh.io"
INIT_NAME = "vwire-nsc-init"
SIDECAR_NAME = "vwire-nsc"
SOCKET_VOLUME = "vwire-nsmgr-socket"
IDENTITY_VOLUME = "vwire-identity"
STATE_VOLUME = "vwire-state"
VOLUMES = (SOCKET_VOLUME, IDENTITY_VOLUME, STATE_VOLUME)
SOCKET_MOUNT = "/var/run/vwire"
IDENTITY_MOUNT = "/var/run/vwire-agent"
STATE_MOUNT = "/var/run/vwire-pod"
PING_SYSCTL = {"name": "net.ipv4.ping_group_range", "value": "0 2147483647"}


@dataclass(frozen=True)
class InjectConfig:
    """The webhook settings that shape what is injected."""

    image: str = "vwire-fabric:0.1.0"
    image_pull_policy: str = "IfNotPresent"
    nsmgr_socket_dir: str = "/var/run/vwire"
    identity_socket_dir: str = "/var/run/vwire-agent"
    socket_volume: str = "hostPath"
    csi_driver: str = "csi.vwire.io"
    sidecar: str = "native"
    cpu_request: str = "20m"
    cpu_limit: str = "200m"
    memory_request: str = "48Mi"
    memory_limit: str = "128Mi"
    run_as_user: int = 65532
    run_as_group: int = 0
    ready_timeout: int = 60

    @classmethod
    def of(cls, settings: WebhookSettings) -> InjectConfig:
        names = [name for name in cls.__dataclass_fields__ if hasattr(settings, name)]
        return cls(**{name: getattr(settings, name) for name in names})


def _env() -> list[dict[str, Any]]:
    def field(name: str, path: str) -> dict[str, Any]:
        return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}

    return [
        field("NSM_NAME", "metadata.name"),
        field("NSM_NAMESPACE", "metadata.namespace"),
        {"name": "SPIFFE_ENDPOINT_SOCKET", "value": f"unix://{IDENTITY_MOUNT}/agent.sock"},
    ]


def _container(config: InjectConfig, name: str, mode: list[str], urls: Sequence[NsmUrl]
               ) -> dict[str, Any]:
    state = f"{STATE_MOUNT}/state.json"
    return {
        "name": name,
        "image": config.image,
        "imagePullPolicy": config.image_pull_policy,
        "command": ["vwire-nsc"],
        "args": [*mode, "--name", "$(NSM_NAME).$(NSM_NAMESPACE)",
                 "--nsmgr", f"unix://{SOCKET_MOUNT}/nsmgr.sock", "--netns-inode",
                 "--state-file", state, *(str(url) for url in urls)],
        "env": [*_env(), {"name": "NSM_NETWORK_SERVICES",
                          "value": ",".join(str(url) for url in urls)}],
        "resources": {
            "requests": {"cpu": config.cpu_request, "memory": config.memory_request},
            "limits": {"cpu": config.cpu_limit, "memory": config.memory_limit},
        },
        "securityContext": {
            "privileged": False,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "runAsUser": config.run_as_user,
            "runAsGroup": config.run_as_group,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [
            {"name": SOCKET_VOLUME, "mountPath": SOCKET_MOUNT, "readOnly": True},
            {"name": IDENTITY_VOLUME, "mountPath": IDENTITY_MOUNT, "readOnly": True},
            {"name": STATE_VOLUME, "mountPath": STATE_MOUNT},
        ],
    }


def containers(config: InjectConfig, urls: Sequence[NsmUrl]) -> tuple[dict[str, Any],
                                                                      dict[str, Any]]:
    """(the init container, the keeping client) for ``urls``."""
    init = _container(config, INIT_NAME, ["--init", "--ready-timeout",
                                           str(config.ready_timeout)], urls)
    keeper = _container(config, SIDECAR_NAME, ["--resume", f"{STATE_MOUNT}/state.json"], urls)
    if config.sidecar == "native":
        keeper["restartPolicy"] = "Always"
    return init, keeper


def volumes(config: InjectConfig) -> list[dict[str, Any]]:
    """The pod volumes the injected containers mount."""
    def node_dir(name: str, path: str) -> dict[str, Any]:
        if config.socket_volume == "csi":
            return {"name": name, "csi": {"driver": config.csi_driver, "readOnly": True,
                                          "volumeAttributes": {"path": path}}}
        return {"name": name, "hostPath": {"path": path, "type": "DirectoryOrCreate"}}

    return [
        node_dir(SOCKET_VOLUME, config.nsmgr_socket_dir),
        node_dir(IDENTITY_VOLUME, config.identity_socket_dir),
        {"name": STATE_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
    ]


def _append(ops: list[dict[str, Any]], spec: Mapping[str, Any], path: str, key: str,
            items: Sequence[dict[str, Any]], first: bool = False) -> None:
    """Add ``items`` to the array ``spec[key]``: the whole array when absent (or null), else
    element by element (at the front when ``first``), keeping what is there."""
    if not isinstance(spec.get(key), list):
        ops.append({"op": "add", "path": f"{path}/{key}", "value": list(items)})
        return
    for index, item in enumerate(items):
        where = str(index) if first else "-"
        ops.append({"op": "add", "path": f"{path}/{key}/{where}", "value": item})


def _sysctl(ops: list[dict[str, Any]], spec: Mapping[str, Any], path: str) -> None:
    context = spec.get("securityContext")
    if not isinstance(context, Mapping):
        ops.append({"op": "add", "path": f"{path}/securityContext",
                    "value": {"sysctls": [PING_SYSCTL]}})
        return
    sysctls = context.get("sysctls")
    if isinstance(sysctls, list) and any(
        isinstance(item, Mapping) and item.get("name") == PING_SYSCTL["name"] for item in sysctls
    ):
        return  # the pod sets it itself
    _append(ops, context, f"{path}/securityContext", "sysctls", [PING_SYSCTL])


def patch(config: InjectConfig, spec: Mapping[str, Any], path: str,
          urls: Sequence[NsmUrl]) -> list[dict[str, Any]]:
    """JSON Patch operations injecting the client for ``urls`` into the pod ``spec`` found at
    JSON pointer ``path`` (``/spec`` for a pod, ``/spec/template/spec`` for a workload)."""
    init, keeper = containers(config, urls)
    ops: list[dict[str, Any]] = []
    if config.sidecar == "native":
        _append(ops, spec, path, "initContainers", [init, keeper], first=True)
    else:
        _append(ops, spec, path, "initContainers", [init], first=True)
        _append(ops, spec, path, "containers", [keeper])
    _append(ops, spec, path, "volumes", volumes(config))
    _sysctl(ops, spec, path)
    return ops
