"""Settings of the admission webhook (environment prefix ``VWIRE_WEBHOOK_``)."""

from __future__ import annotations

from dataclasses import dataclass

from sdk.settings import setting

PREFIX = "VWIRE_WEBHOOK_"


@dataclass(frozen=True)
class WebhookSettings:
    listen: str = setting("0.0.0.0:8443", "host:port to serve HTTPS on")
    cert_file: str = setting(
        "/etc/vwire/webhook/tls.crt",
        "serving certificate (PEM, chain first); re-read when the file changes",
    )
    key_file: str = setting("/etc/vwire/webhook/tls.key", "its private key (PEM)")
    image: str = setting("vwire-fabric:0.1.0", "image of the injected client containers")
    image_pull_policy: str = setting(
        "IfNotPresent", "pull policy of the injected containers",
        choices=("IfNotPresent", "Always", "Never"),
    )
    nsmgr_socket_dir: str = setting(
        "/var/run/vwire", "the node's directory holding nsmgr.sock (mounted read-only)"
    )
    identity_socket_dir: str = setting(
        "/var/run/vwire-agent",
        "the node's directory of the node agent's Workload API socket (mounted read-only)",
    )
    socket_volume: str = setting(
        "hostPath", "how the node's sockets reach the pod: hostPath, or csi (a CSI driver "
        "exposing them; allowed in namespaces that enforce Pod Security baseline/restricted)",
        choices=("hostPath", "csi"),
    )
    csi_driver: str = setting("csi.vwire.io", "the CSI driver's name with socket-volume csi")
    sidecar: str = setting(
        "native", "native: the keeping client is an init container with restartPolicy Always "
        "(Kubernetes >= 1.29; Jobs complete); container: a plain container",
        choices=("native", "container"),
    )
    cpu_request: str = setting("20m", "CPU request of each injected container")
    cpu_limit: str = setting("200m", "CPU limit of each injected container")
    memory_request: str = setting("48Mi", "memory request of each injected container")
    memory_limit: str = setting("128Mi", "memory limit of each injected container")
    run_as_user: int = setting(65532, "UID of the injected containers (not root)")
    run_as_group: int = setting(
        0, "GID of the injected containers: the group that may open nsmgr.sock (mode 0660)"
    )
    ready_timeout: int = setting(
        60, "seconds the init container waits for every vWire to pass traffic"
    )
    namespaces: str = setting(
        "auto", "where namespaces' annotations and labels come from: auto (the API server when "
        "running in a cluster, else none), in-cluster, none, or a YAML/JSON file path"
    )
    metrics_listen: str = setting(
        "", "serve Prometheus metrics on host:port (/metrics); off when empty"
    )
    log_level: str = setting("info", "debug, info, warning or error")
