"""Which pod a local process belongs to: the agent's workload attestation.

Contract: :func:`peer_of` reads the kernel's credentials of a unix-socket peer (``SO_PEERCRED``:
pid, uid, gid as of ``connect()``) and a pidfd of that very process (``SO_PEERPIDFD``, Linux ≥
6.5; older kernels: ``pidfd_open(pid)``, which leaves the pid-reuse race documented in
docs/kubernetes.md). A :class:`PodResolver` maps a pid to the :class:`Pod` it runs in, or None;
:func:`attest` runs it and then checks the pidfd's process is still alive, so the answer was read
from the process that connected and not from a later one that reused its pid. Nothing the caller
*says* is used.

Resolvers:

* :class:`LabPods` (``lab:DIR``): the lab's pod records, one ``<pod>.json`` per pod with
  ``name``, ``namespace``, ``service_account``, ``uid`` and ``netns`` (the file of the pod's
  network namespace). A process belongs to the pod whose network namespace it is in (compared by
  device and inode of ``/proc/PID/ns/net``). Records must be owned by root (or the agent's user)
  and writable by nobody else; others are ignored (logged): whoever could write one could claim
  any pod's namespace.
* :class:`agent.kubepods.KubernetesPods` (``kubernetes``): the pod UID from
  ``/proc/PID/cgroup``, the pod's namespace and service account from the API server's list of
  this node's pods; see that module and docs/kubernetes.md.

Which resolver a ``pods`` setting names: :func:`agent.__main__.resolver`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import structlog

from sdk.errors import PermissionDenied
from sdk.security.spiffe import SpiffeId

SO_PEERPIDFD = getattr(socket, "SO_PEERPIDFD", 77)
_CRED = struct.Struct("3i")
_log = structlog.get_logger("agent")


@dataclass(frozen=True)
class Peer:
    """The process at the other end of a connection, as the kernel saw it at ``connect()``."""

    pid: int
    uid: int
    gid: int
    pidfd: int  # owned by whoever called peer_of: close it


@dataclass(frozen=True)
class Pod:
    """What an identity is made from."""

    name: str
    namespace: str
    service_account: str
    uid: str = ""

    def spiffe_id(self, trust_domain: str) -> SpiffeId:
        """``spiffe://<trust-domain>/ns/<namespace>/sa/<service account>``."""
        return SpiffeId.parse(
            f"spiffe://{trust_domain}/ns/{self.namespace}/sa/{self.service_account}", "pod"
        )


class PodResolver(Protocol):
    def pod_of(self, pid: int) -> Pod | None:
        """The pod process ``pid`` runs in; None when it is in no pod."""
        ...


def peer_of(sock: socket.socket) -> Peer:
    """The kernel's credentials of ``sock``'s peer (see the module docstring)."""
    pid, uid, gid = _CRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                 _CRED.size))
    if pid <= 0:
        raise PermissionDenied("the caller's process is unknown (it is in another PID "
                               "namespace than the agent)")
    try:
        pidfd = int.from_bytes(sock.getsockopt(socket.SOL_SOCKET, SO_PEERPIDFD, 4), "little")
    except OSError:  # kernels before 6.5
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            raise PermissionDenied(f"the calling process {pid} is gone") from None
    return Peer(pid, uid, gid, pidfd)


def attest(peer: Peer, resolver: PodResolver) -> Pod:
    """The pod of ``peer``; PermissionDenied when it is in none (or exited meanwhile)."""
    pod = resolver.pod_of(peer.pid)
    try:
        signal.pidfd_send_signal(peer.pidfd, 0)
    except OSError:
        raise PermissionDenied(f"the calling process {peer.pid} exited before it was "
                               "attested") from None
    if pod is None:
        raise PermissionDenied(f"process {peer.pid} (uid {peer.uid}) runs in no pod this "
                               "node's agent knows: only pods get identities")
    return pod


def _netns_of(pid: int) -> tuple[int, int] | None:
    try:
        st = os.stat(f"/proc/{pid}/ns/net")
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _trusted(path: Path) -> bool:
    st = path.stat()
    return st.st_uid in (0, os.geteuid()) and not st.st_mode & 0o022


class LabPods:
    """See the module docstring."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def __repr__(self) -> str:
        return f"<LabPods {self.directory}>"

    def _records(self) -> list[tuple[Pod, str]]:
        if not self.directory.is_dir() or not _trusted(self.directory):
            _log.warning("pod records directory missing or writable by others",
                         directory=str(self.directory))
            return []
        found = []
        for path in sorted(self.directory.glob("*.json")):
            try:
                if not _trusted(path):
                    _log.warning("pod record writable by others: ignored", record=str(path))
                    continue
                data = json.loads(path.read_text())
                pod = Pod(str(data["name"]), str(data["namespace"]),
                          str(data.get("service_account") or "default"), str(data.get("uid", "")))
                found.append((pod, str(data["netns"])))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                _log.warning("pod record unreadable: ignored", record=str(path), error=str(exc))
        return found

    def pod_of(self, pid: int) -> Pod | None:
        netns = _netns_of(pid)
        if netns is None:
            return None
        for pod, path in self._records():
            with contextlib.suppress(OSError):
                st = os.stat(path)
                if (st.st_dev, st.st_ino) == netns:
                    return pod
        return None
