"""Pods in the lab: ``nsmctl lab pod apply/delete`` play API server and kubelet for one pod.

:func:`apply` takes a Pod manifest and

1. sends it as an ``admission.k8s.io/v1`` AdmissionReview (CREATE) over HTTPS to the lab's real
   admission webhook (``python -m webhook``, lab process ``webhook`` on 127.0.0.1, serving an
   SVID of the lab CA with an IP SAN; started on first use), and refuses the pod when it is
   denied;
2. applies the returned JSON Patch and validates the result against the current Kubernetes
   schema (``kubernetes-validate``, when installed; otherwise it says it skipped that);
3. runs it on lab node N as a kubelet would: a fresh pod network namespace
   (``<prefix>nN-pod-<name>``, loopback up, the pod's sysctls), the pod record the node agent
   attests by (``<state>/pods/<name>.json``: name, namespace, service account, netns), init
   containers in order and each to completion, then sidecars (init containers with
   ``restartPolicy: Always``, started in order, each counted as started once it printed its
   first line, as a startup probe would tell) and the app containers. Each container is its
   own command and args (``$(VAR)`` expanded) with its own environment (``value`` and the
   downward API's ``fieldRef``), a lab process ``pod-<name>-<container>`` inside the pod's
   namespace, with a private ``/run`` (a tmpfs, as a container has) where its volume mounts
   appear: ``hostPath`` of the node's nsmgr socket directory (the webhook's default
   ``/var/run/vwire``) → the lab node's directory, of the node agent's socket directory
   (``/var/run/vwire-agent``) → the node's agent socket directory (the agent, lab process
   ``nN-agent``, started on first use), ``emptyDir`` → a directory of the pod's own. The lab has
   no images and runs containers as root (``securityContext`` users are not applied); mounts
   must be under ``/run`` or ``/var/run``.

:func:`delete` stops it as a kubelet does: app containers, then sidecars in reverse order, each
SIGTERM then SIGKILL after ``terminationGracePeriodSeconds`` (the sidecar closes its vWires on
SIGTERM), then removes the namespace, the record, the volumes and the processes' files.
:func:`pods` lists them for ``nsmctl lab status``. A failed apply removes what it made.

``python -m lab.pods exec SPEC`` is the container launcher (mounts, then ``exec``); not for users.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import re
import secrets
import shutil
import socket
import ssl
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

from lab import network
from lab.fabric import Fabric
from lab.processes import Processes
from lab.topology import DEFAULT, Node, Topology, netns_path
from sdk.errors import FabricError, FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from sdk.security.ca import CertificateAuthority
from sdk.security.svid import write_svid

WEBHOOK = "webhook"
NSMGR_SOCKET_DIR = "/var/run/vwire"  # the webhook's defaults, mapped to the lab node's dirs
AGENT_SOCKET_DIR = "/var/run/vwire-agent"
SVID_TTL = 3600.0
READY_TIMEOUT = 30.0
SIDECAR_STARTUP = 15.0
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")

__all__ = ["agent_socket", "apply", "delete", "pods", "status_lines"]


def _pods_dir(topology: Topology) -> Path:
    return topology.state_dir / "pods"


def _volumes_dir(topology: Topology, name: str) -> Path:
    return topology.state_dir / "pod-volumes" / name


def agent_socket(node: Node) -> Path:
    """The node agent's socket of lab node ``node``."""
    return node.dir / "agent" / "agent.sock"


def _process(pod: str, container: str) -> str:
    return f"pod-{pod}-{container}"


# -- the lab's services: webhook and node agents --------------------------------------------------


def _wait(what: str, ready: Any, log: Path, timeout: float = READY_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise FailedPrecondition(f"{what} did not start within {timeout:g} s: see {log}")
        time.sleep(0.05)  # polling for a process to serve, bounded by the deadline


def _webhook(topology: Topology) -> tuple[int, Path]:
    """(port, CA bundle) of the lab's webhook, started when it does not run."""
    processes = Processes(topology)
    info = topology.state_dir / "webhook.json"
    bundle = topology.state_dir / "ca" / "bundle.pem"
    if processes.pid_of(WEBHOOK) is not None and info.is_file():
        return int(json.loads(info.read_text())["port"]), bundle
    ca = CertificateAuthority.load(topology.state_dir / "ca")
    svid_dir = topology.state_dir / "identities" / "webhook" / "vwire-webhook"
    spiffe_id = Fabric.spiffe_id("webhook", "vwire-webhook")
    write_svid(svid_dir, ca.issue(spiffe_id, ["127.0.0.1", "localhost"], ttl=SVID_TTL),
               ca.bundle)
    ca.assign(svid_dir, spiffe_id, ["127.0.0.1", "localhost"])  # renewed by the lab's ca-agent
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    processes.start(WEBHOOK, [
        "webhook", "--listen", f"127.0.0.1:{port}", "--cert-file", str(svid_dir / "svid.crt"),
        "--key-file", str(svid_dir / "svid.key"), "--namespaces", "none",
        "--nsmgr-socket-dir", NSMGR_SOCKET_DIR, "--identity-socket-dir", AGENT_SOCKET_DIR,
    ])
    info.write_text(json.dumps({"port": port}))

    def ready() -> bool:
        if processes.pid_of(WEBHOOK) is None:
            raise FailedPrecondition(f"the webhook exited: see {processes.log(WEBHOOK)}")
        try:
            return _https(port, bundle, "GET", "/ready")[0] == 200
        except OSError:
            return False

    _wait("the webhook", ready, processes.log(WEBHOOK))
    return port, bundle


def _agent(topology: Topology, node: Node) -> None:
    """Start node ``node``'s agent unless it runs."""
    processes = Processes(topology)
    name = f"{node.name}-agent"
    sock = agent_socket(node)
    if processes.pid_of(name) is not None and sock.exists():
        return
    pods_dir = _pods_dir(topology)
    pods_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
    processes.start(name, [
        "agent", "--socket", str(sock), "--ca-dir", str(topology.state_dir / "ca"),
        "--pods", f"lab:{pods_dir}",
        "--nsmgr-id", Fabric.spiffe_id("nsmgr", f"nsmgr-{node.name}"),
    ])
    _wait(f"the agent of {node.name}", sock.exists, processes.log(name))


def _https(port: int, bundle: Path, method: str, path: str, body: bytes | None = None
           ) -> tuple[int, bytes]:
    context = ssl.create_default_context(cafile=str(bundle))
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=15)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


# -- API server: admission -------------------------------------------------------------------------


def _load_manifest(text: str) -> dict[str, Any]:
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise InvalidArgument("file", f"not YAML: {exc}") from None
    if len(docs) != 1 or not isinstance(docs[0], dict) or docs[0].get("kind") != "Pod":
        raise InvalidArgument("file", "give exactly one object of kind Pod (apiVersion v1)")
    pod: dict[str, Any] = docs[0]
    meta = pod.setdefault("metadata", {})
    if not meta.get("name"):
        if not meta.get("generateName"):
            raise InvalidArgument("metadata.name", "give the pod a name (or generateName)")
        meta["name"] = f"{meta['generateName']}{secrets.token_hex(3)[:5]}"
    meta.setdefault("namespace", "default")
    meta["uid"] = str(uuid.uuid4())
    if not _NAME.match(meta["name"]) or len(meta["name"]) > 40:
        raise InvalidArgument("metadata.name", f"{meta['name']!r}: use at most 40 lower-case "
                              "letters, digits and '-' (a lab pod's name is part of its "
                              "namespace's name)")
    return pod


def _admit(topology: Topology, pod: dict[str, Any]) -> dict[str, Any]:
    """The pod as the webhook mutated it (PermissionDenied when it denies it)."""
    import jsonpatch

    port, bundle = _webhook(topology)
    meta = pod["metadata"]
    review = {
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "name": meta["name"], "namespace": meta["namespace"], "operation": "CREATE",
            "userInfo": {"username": "nsmctl-lab"}, "object": pod, "oldObject": None,
            "dryRun": False, "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        },
    }
    status, body = _https(port, bundle, "POST", "/mutate", json.dumps(review).encode())
    if status != 200:
        raise FailedPrecondition(f"the webhook answered HTTP {status}: {body[:200]!r}")
    response = json.loads(body)["response"]
    if not response.get("allowed"):
        message = response.get("status", {}).get("message", "no reason given")
        raise PermissionDenied(f"admission webhook denied the request: {message}")
    if not response.get("patch"):
        return pod
    ops = json.loads(base64.b64decode(response["patch"]))
    mutated: dict[str, Any] = jsonpatch.apply_patch(pod, ops)
    return mutated


def validate(pod: dict[str, Any]) -> str:
    """Validate ``pod`` against the current Kubernetes schema; what was done, as a sentence.
    InvalidArgument when it is not a valid Pod."""
    try:
        import kubernetes_validate  # type: ignore[import-untyped]
    except ImportError:
        return ("not validated: kubernetes-validate is not installed "
                "(pip install kubernetes-validate)")
    version = kubernetes_validate.latest_version()
    try:
        kubernetes_validate.validate(pod, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        raise InvalidArgument("file", f"the mutated pod is not valid for Kubernetes {version}: "
                              f"{exc.message}") from None
    return f"validated against Kubernetes {version}"


# -- kubelet ---------------------------------------------------------------------------------------


def _field(pod: dict[str, Any], path: str, node: Node) -> str:
    values = {
        "metadata.name": pod["metadata"]["name"],
        "metadata.namespace": pod["metadata"]["namespace"],
        "metadata.uid": pod["metadata"]["uid"],
        "spec.nodeName": node.name,
        "spec.serviceAccountName": _service_account(pod),
    }
    if path not in values:
        raise InvalidArgument("env", f"fieldRef {path!r} is not supported in the lab (use one of "
                              f"{', '.join(values)})")
    return str(values[path])


def _service_account(pod: dict[str, Any]) -> str:
    return str(pod["spec"].get("serviceAccountName") or "default")


def _env(pod: dict[str, Any], container: dict[str, Any], node: Node) -> dict[str, str]:
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/local/sbin:/usr/local/bin:/usr/sbin:"
                   "/usr/bin:/sbin:/bin",
           "HOSTNAME": pod["metadata"]["name"], "HOME": "/", "PYTHONUNBUFFERED": "1"}
    for item in container.get("env") or []:
        if "value" in item:
            env[item["name"]] = _expand(str(item["value"]), env)
        elif "fieldRef" in (item.get("valueFrom") or {}):
            env[item["name"]] = _field(pod, item["valueFrom"]["fieldRef"]["fieldPath"], node)
        else:
            raise InvalidArgument("env", f"{item.get('name')!r}: only value and fieldRef are "
                                  "supported in the lab")
    return env


def _expand(text: str, env: dict[str, str]) -> str:
    return _VAR.sub(lambda m: env.get(m.group(1), m.group(0)), text)


def _volume_sources(topology: Topology, pod: dict[str, Any], node: Node) -> dict[str, str]:
    """Pod volume name → the directory it is in the lab."""
    sources = {}
    for volume in pod["spec"].get("volumes") or []:
        name = volume["name"]
        if "hostPath" in volume:
            host = os.path.normpath(volume["hostPath"]["path"])
            mapped = {NSMGR_SOCKET_DIR: node.dir, AGENT_SOCKET_DIR: agent_socket(node).parent}
            if host not in mapped:
                raise InvalidArgument("volumes", f"hostPath {host!r}: the lab maps only the "
                                      f"node's {NSMGR_SOCKET_DIR} and {AGENT_SOCKET_DIR}")
            sources[name] = str(mapped[host])
        elif "emptyDir" in volume:
            directory = _volumes_dir(topology, pod["metadata"]["name"]) / name
            directory.mkdir(parents=True, exist_ok=True)
            sources[name] = str(directory)
        else:
            raise InvalidArgument("volumes", f"{name!r}: only hostPath and emptyDir in the lab")
    return sources


def _mounts(container: dict[str, Any], sources: dict[str, str]) -> list[dict[str, Any]]:
    mounts = []
    for mount in container.get("volumeMounts") or []:
        target = os.path.normpath(mount["mountPath"])
        under_run = target.startswith(("/run/", "/var/run/"))
        if mount["name"] not in sources or not under_run:
            raise InvalidArgument("volumeMounts", f"{container['name']}: {target!r} of volume "
                                  f"{mount['name']!r}: mounts must be volumes of the pod, under "
                                  "/run or /var/run in the lab")
        mounts.append({"source": sources[mount["name"]],
                       "target": "/run/" + target.split("/run/", 1)[1],
                       "read_only": bool(mount.get("readOnly"))})
    return mounts


def _spec(topology: Topology, pod: dict[str, Any], container: dict[str, Any], node: Node,
          sources: dict[str, str]) -> list[str]:
    """The launcher's argument (a JSON file) for ``container``."""
    if not container.get("command"):
        raise InvalidArgument("containers", f"{container['name']}: the lab has no images: give "
                              "the command to run")
    env = _env(pod, container, node)
    argv = [_expand(str(a), env) for a in [*container["command"], *(container.get("args") or [])]]
    spec = {"argv": argv, "env": env, "mounts": _mounts(container, sources)}
    path = _volumes_dir(topology, pod["metadata"]["name"]) / f".{container['name']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(spec))
    return ["lab.pods", "exec", str(path)]


def _record_path(topology: Topology, name: str) -> Path:
    return _pods_dir(topology) / f"{name}.json"


def _write_record(topology: Topology, pod: dict[str, Any], node: Node, netns: str,
                  started: list[str]) -> None:
    meta = pod["metadata"]
    record = {"name": meta["name"], "namespace": meta["namespace"],
              "service_account": _service_account(pod), "uid": meta["uid"],
              "netns": netns_path(netns), "netns_name": netns, "node": node.index,
              "containers": started,
              "grace": float(pod["spec"].get("terminationGracePeriodSeconds", 30)),
              "pod": pod}
    path = _record_path(topology, meta["name"])
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record))
    tmp.chmod(0o644)
    tmp.replace(path)


def _run_init(processes: Processes, name: str, args: list[str], netns: str,
              timeout: float) -> None:
    """Run an init container to completion (its output in the lab's log files)."""
    processes.dir.mkdir(parents=True, exist_ok=True)
    with open(processes.log(name), "ab") as log, open(processes.out(name), "ab") as out:
        try:
            done = subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-m", *args],
                                  stdout=out, stderr=log, stdin=subprocess.DEVNULL,
                                  timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise FailedPrecondition(f"init container {name} did not finish within "
                                     f"{timeout:g} s: see {processes.log(name)}") from None
    if done.returncode != 0:
        raise FailedPrecondition(f"init container {name} failed (exit {done.returncode}): see "
                                 f"{processes.log(name)}")


def _start(topology: Topology, pod: dict[str, Any], node: Node, netns: str,
           timeout: float) -> list[str]:
    """Run the containers (see the module docstring); the lab process names started."""
    processes = Processes(topology)
    name = pod["metadata"]["name"]
    sources = _volume_sources(topology, pod, node)
    init = pod["spec"].get("initContainers") or []
    plans = [(c, _spec(topology, pod, c, node, sources)) for c in
             [*init, *pod["spec"]["containers"]]]
    started: list[str] = []
    for container, args in plans:
        process = _process(name, container["name"])
        sidecar = container in init and container.get("restartPolicy") == "Always"
        if container in init and not sidecar:
            _run_init(processes, process, args, netns, timeout)
            continue
        processes.start(process, args, netns=netns)
        started.append(process)
        _write_record(topology, pod, node, netns, started)
        if sidecar:
            _wait_started(processes, process)
    return started


def _wait_started(processes: Processes, process: str, timeout: float = SIDECAR_STARTUP) -> None:
    """A sidecar counts as started once it wrote its first line on stdout (the injected client:
    its first ``connected`` line, after it took the connections over), as a startup probe
    would tell; at most ``timeout`` seconds. An exited sidecar is an error."""
    deadline = time.monotonic() + timeout
    while not processes.out(process).stat().st_size and time.monotonic() < deadline:
        if processes.pid_of(process) is None:
            raise FailedPrecondition(f"sidecar {process} exited: see {processes.log(process)}")
        time.sleep(0.05)  # polling for the first output, bounded by the deadline


def apply(manifest: str, node_index: int = 1, topology: Topology = DEFAULT,
          progress: Any = lambda _m: None, timeout: float = 90.0) -> dict[str, Any]:
    """Admit and run the pod of ``manifest`` (YAML text) on lab node ``node_index``; returns its
    record. See the module docstring."""
    pod = _load_manifest(manifest)
    node = topology.node(node_index)
    if not node.nsmgr_socket.exists():
        raise FailedPrecondition(f"lab node {node.name} is not up ({node.nsmgr_socket} is "
                                 "missing): run 'nsmctl lab up' first")
    name = pod["metadata"]["name"]
    if _record_path(topology, name).exists():
        raise InvalidArgument("metadata.name", f"pod {name!r} exists: delete it first")
    mutated = _admit(topology, pod)
    progress(f"admitted by the webhook ({len(mutated['spec'].get('initContainers') or [])} "
             "init containers)")
    progress(validate(mutated))
    _agent(topology, node)
    netns = node.workload_netns(f"pod-{name}")
    network.add_netns(netns)
    try:
        _write_record(topology, mutated, node, netns, [])
        _sysctls(mutated, netns)
        started = _start(topology, mutated, node, netns, timeout)
    except BaseException:
        with contextlib.suppress(FabricError):
            delete(name, topology, grace=2.0)
        network.ip("netns", "del", netns, check=False)
        raise
    progress(f"pod {name} runs on {node.name} in namespace {netns}: {', '.join(started)}")
    return json.loads(_record_path(topology, name).read_text())  # type: ignore[no-any-return]


def _sysctls(pod: dict[str, Any], netns: str) -> None:
    for item in (pod["spec"].get("securityContext") or {}).get("sysctls") or []:
        subprocess.run(["ip", "netns", "exec", netns, "sysctl", "-q", "-w",
                        f"{item['name']}={item['value']}"], check=True, capture_output=True,
                       timeout=10)


def delete(name: str, topology: Topology = DEFAULT, grace: float | None = None) -> None:
    """Stop pod ``name`` as a kubelet does and remove everything of it (see the module
    docstring). NotFound when there is no such pod."""
    path = _record_path(topology, name)
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        raise NotFound(f"no lab pod {name!r}: see 'nsmctl lab status'") from None
    processes = Processes(topology)
    wait = float(record.get("grace", 30)) if grace is None else grace
    pod = record["pod"]
    apps = {_process(name, c["name"]) for c in pod["spec"]["containers"]}
    started = list(record.get("containers", []))
    order = [p for p in started if p in apps] + [p for p in reversed(started) if p not in apps]
    try:
        for process in order:
            processes.stop(process, grace=wait)
    finally:
        netns = str(record.get("netns_name", ""))
        if netns:
            network.ip("netns", "del", netns, check=False)
        for container in [*(pod["spec"].get("initContainers") or []), *pod["spec"]["containers"]]:
            process = _process(name, container["name"])
            for suffix in ("pid", "cmd", "log", "out"):
                (topology.state_dir / f"{process}.{suffix}").unlink(missing_ok=True)
        shutil.rmtree(_volumes_dir(topology, name), ignore_errors=True)
        path.unlink(missing_ok=True)


def pods(topology: Topology = DEFAULT) -> list[dict[str, Any]]:
    """The lab's pods: name, namespace, node, netns, and each started container's state."""
    found = []
    processes = Processes(topology)
    for path in sorted(_pods_dir(topology).glob("*.json")) if _pods_dir(topology).is_dir() else []:
        with contextlib.suppress(OSError, ValueError, KeyError):
            record = json.loads(path.read_text())
            states = {p.removeprefix(f"pod-{record['name']}-"):
                      "running" if processes.pid_of(p) is not None else "exited"
                      for p in record.get("containers", [])}
            found.append({"name": record["name"], "namespace": record["namespace"],
                          "node": record["node"], "netns": record["netns_name"],
                          "containers": states,
                          "phase": "Running" if states and all(
                              s == "running" for s in states.values()) else "Pending"})
    return found


def status_lines(topology: Topology = DEFAULT) -> list[str]:
    """One line per pod for ``nsmctl lab status`` (none without pods)."""
    return [f"pod {p['namespace']}/{p['name']} on n{p['node']}: {p['phase']} ("
            + ", ".join(f"{c} {s}" for c, s in p["containers"].items()) + ")"
            for p in pods(topology)]


# -- the container launcher ----------------------------------------------------------------------


def _exec(spec_file: str) -> None:
    """Inside the pod's namespace (``ip netns exec`` gave this process a private mount
    namespace): a tmpfs on /run, the volume mounts in it, then exec the command."""
    spec = json.loads(Path(spec_file).read_text())
    fds = [os.open(m["source"], os.O_PATH | os.O_DIRECTORY) for m in spec["mounts"]]
    subprocess.run(["mount", "--make-rprivate", "/"], check=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755,size=4m", "vwire-pod", "/run"],
                   check=True)
    for fd, mount in zip(fds, spec["mounts"], strict=True):
        os.makedirs(mount["target"], exist_ok=True)
        subprocess.run(["mount", "--bind", f"/proc/self/fd/{fd}", mount["target"]], check=True,
                       pass_fds=[fd])
        if mount["read_only"]:
            subprocess.run(["mount", "-o", "remount,bind,ro", mount["target"]], check=True)
        os.close(fd)
    argv = spec["argv"]
    os.execvpe(argv[0], argv, spec["env"])


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "exec":
        try:
            _exec(sys.argv[2])
        except (OSError, subprocess.CalledProcessError, FabricError) as exc:
            print(f"lab.pods exec: {exc}", file=sys.stderr)
            sys.exit(127)
    sys.exit("usage: python -m lab.pods exec SPEC (the lab's container launcher)")
