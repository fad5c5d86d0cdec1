"""A local etcd cluster on loopback for the lab, the tests, the docs and the benchmark.

:class:`EtcdCluster` runs ``members`` etcd processes (Debian's ``etcd-server``, v3 API) in one
directory: member ``i`` keeps its data in ``<dir>/m<i>``, its log in ``<dir>/m<i>.log``, and
listens on two free loopback ports (clients, peers). :meth:`EtcdCluster.start` returns once a
linearizable read succeeds, i.e. the cluster has elected a leader and serves clients.
:attr:`EtcdCluster.url` is the registry's ``--store`` value for it
(``etcd://127.0.0.1:P1,127.0.0.1:P2,...``). Members can be killed (SIGKILL) and started again
with their data (:meth:`kill`, :meth:`restart`) to inject faults; :meth:`leader` names the
current leader. :meth:`stop` kills every member and waits for it, whatever state it is in
(idempotent), and removes the data unless ``keep`` is set; use the cluster as a context manager
so a failing test never leaks a process.

The lab (``nsmctl lab up --registry-store etcd``) needs its members to outlive the command that
started them and to be stopped by ``nsmctl lab down`` like its other processes, by pid file: it
starts each member as ``python -m lab.etcd -- ARGS`` through :class:`lab.processes.Processes`
(:func:`start_in_lab`), and this module's ``main`` replaces itself with ``etcd ARGS`` (same pid,
same process group). ``python -m lab.etcd --listen tcp://127.0.0.1:PORT`` runs a throw-away
one-member etcd for trying the registry on etcd (docs/registry.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc
from aetcd import rpc

from sdk.errors import FailedPrecondition, Unavailable

ETCD_BINARY = "etcd"
HOST = "127.0.0.1"


#: Ports are picked below the kernel's ephemeral range (32768+ by default): a port of that range
#: is also handed out as the source port of outgoing connections, and etcd, binding it a moment
#: later, would find it taken.
PORTS = range(20000, 32000)


def free_port(host: str = HOST) -> int:
    """A TCP port on ``host`` (outside the ephemeral range) nobody uses right now."""
    for _ in range(200):
        port = random.choice(PORTS)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    raise Unavailable(f"no free TCP port on {host} in {PORTS.start}-{PORTS.stop - 1}")


@dataclass
class Member:
    """One etcd process of the cluster."""

    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    log: Path
    process: subprocess.Popen[bytes] | None = None
    member_id: int = 0
    tls: bool = False

    @property
    def client_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{HOST}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{HOST}:{self.peer_port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class EtcdCluster:
    """See the module docstring."""

    directory: Path
    members: int = 1
    keep: bool = False
    client_port: int = 0  #: the first member's client port (0: any free one)
    #: Clients speak TLS: ``ca.crt``, ``server.crt``/``server.key`` (for 127.0.0.1) and a client
    #: certificate ``tls.crt``/``tls.key`` the cluster requires (the lab's own checks use it).
    tls_dir: Path | None = None
    nodes: list[Member] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.members < 1:
            raise FailedPrecondition(f"an etcd cluster needs at least one member ({self.members})")
        if shutil.which(ETCD_BINARY) is None:
            raise FailedPrecondition(
                "etcd is not installed: apt-get install etcd-server (scripts/setup.sh does)"
            )
        for i in range(self.members):
            name = f"m{i}"
            port = self.client_port if i == 0 and self.client_port else free_port()
            self.nodes.append(Member(
                name, port, free_port(), self.directory / name,
                self.directory / f"{name}.log", tls=self.tls_dir is not None,
            ))

    @property
    def endpoints(self) -> list[str]:
        """``host:port`` of every member's client listener."""
        return [f"{HOST}:{m.client_port}" for m in self.nodes]

    @property
    def url(self) -> str:
        """The registry's ``--store`` URL for this cluster."""
        return "etcd://" + ",".join(self.endpoints)

    def _command(self, member: Member) -> list[str]:
        cluster = ",".join(f"{m.name}={m.peer_url}" for m in self.nodes)
        return [
            ETCD_BINARY, "--name", member.name, "--data-dir", str(member.data_dir),
            "--listen-client-urls", member.client_url,
            "--advertise-client-urls", member.client_url,
            "--listen-peer-urls", member.peer_url,
            "--initial-advertise-peer-urls", member.peer_url,
            "--initial-cluster", cluster, "--initial-cluster-state", "new",
            "--initial-cluster-token", f"vwire-{self.nodes[0].client_port}",
            "--heartbeat-interval", "50", "--election-timeout", "500",
            "--logger", "zap", "--log-outputs", "stderr",
            *self._tls_arguments(),
        ]

    def _tls_arguments(self) -> list[str]:
        if self.tls_dir is None:
            return []
        return ["--cert-file", str(self.tls_dir / "server.crt"),
                "--key-file", str(self.tls_dir / "server.key"),
                "--trusted-ca-file", str(self.tls_dir / "ca.crt"), "--client-cert-auth"]

    def channel(self, member: Member) -> grpc.aio.Channel:
        """A channel to ``member``'s client port (TLS with the client certificate if set)."""
        target = f"{HOST}:{member.client_port}"
        if self.tls_dir is None:
            return grpc.aio.insecure_channel(target)
        files = [(self.tls_dir / name).read_bytes() for name in ("ca.crt", "tls.key", "tls.crt")]
        return grpc.aio.secure_channel(target, grpc.ssl_channel_credentials(*files))

    def arguments(self, member: Member) -> list[str]:
        """etcd's arguments (without the program) for ``member``."""
        return self._command(member)[1:]

    def _spawn(self, member: Member) -> None:
        member.data_dir.parent.mkdir(parents=True, exist_ok=True)
        with member.log.open("ab") as log:
            member.process = subprocess.Popen(
                self._command(member), stdout=subprocess.DEVNULL, stderr=log,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )

    async def start(self, timeout: float = 20.0) -> None:
        """Start every member; return once the cluster serves linearizable reads."""
        try:
            for member in self.nodes:
                self._spawn(member)
            for member in self.nodes:
                await self.wait_member(member, timeout)
        except BaseException:
            self.stop()
            raise

    async def wait_member(self, member: Member, timeout: float = 20.0) -> None:
        """Wait until ``member`` answers a linearizable read (it is in a cluster with a leader).

        Transient refusals while a leader is elected ("leader changed", "no leader") are retried
        until ``timeout``."""
        deadline = time.monotonic() + timeout
        async with self.channel(member) as channel:
            for attempt in itertools.count():
                left = deadline - time.monotonic()
                try:
                    await rpc.KVStub(channel).Range(
                        rpc.RangeRequest(key=b"\0", limit=1), timeout=max(left, 0.01),
                        wait_for_ready=True,
                    )
                    status: Any = await rpc.MaintenanceStub(channel).Status(
                        rpc.StatusRequest(), timeout=max(left, 0.01)
                    )
                    member.member_id = int(status.header.member_id)
                    return
                except grpc.aio.AioRpcError as e:
                    if e.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() >= deadline:
                        raise Unavailable(
                            f"etcd member {member.name} not ready within {timeout:g} s "
                            f"({e.details()}); see {member.log}"
                        ) from e
                    await asyncio.sleep(min(0.05 * (attempt + 1), 0.5))  # retry backoff

    async def leader(self, timeout: float = 2.0) -> Member:
        """The member that leads now, as the first member that answers knows it (members this
        object did not start, e.g. the lab's, are asked too)."""
        for member in self.nodes:
            if member.process is not None and not member.running:
                continue
            async with self.channel(member) as channel:
                try:
                    status: Any = await rpc.MaintenanceStub(channel).Status(
                        rpc.StatusRequest(), timeout=timeout
                    )
                except grpc.aio.AioRpcError:
                    continue
            for candidate in self.nodes:
                if candidate.member_id == int(status.leader):
                    return candidate
        raise Unavailable("no etcd member answering knows a leader")

    def kill(self, member: Member) -> None:
        """SIGKILL one member (its data stays for :meth:`restart`)."""
        if member.process is not None:
            with contextlib.suppress(ProcessLookupError):
                member.process.send_signal(signal.SIGKILL)
            member.process.wait(timeout=10)
            member.process = None

    async def restart(self, member: Member, timeout: float = 20.0) -> None:
        """Start a killed member again with its data; return once it serves."""
        self.kill(member)
        self._spawn(member)
        await self.wait_member(member, timeout)

    def pids(self) -> list[int]:
        """Process ids of the members that run."""
        return [m.process.pid for m in self.nodes if m.process is not None and m.running]

    def stop(self) -> None:
        """Kill every member, wait for each, and remove the data (unless ``keep``)."""
        for member in self.nodes:
            self.kill(member)
        if not self.keep:
            for member in self.nodes:
                shutil.rmtree(member.data_dir, ignore_errors=True)

    async def __aenter__(self) -> EtcdCluster:
        await self.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


#: Starts ``python -m <args>`` as a recorded lab process (``lab.processes.Processes.start``).
StartProcess = Callable[[str, Sequence[str]], int]


async def start_in_lab(
    directory: Path, members: int, start: StartProcess, timeout: float = 30.0
) -> EtcdCluster:
    """Start a cluster whose members are lab processes ``etcd-m0``, ``etcd-m1``, ... (see the
    module docstring); return once it serves. The caller stops them with its other processes."""
    cluster = EtcdCluster(directory, members, keep=True)
    for member in cluster.nodes:
        start(f"etcd-{member.name}", ["lab.etcd", "--", *cluster.arguments(member)])
    for member in cluster.nodes:
        await cluster.wait_member(member, timeout)
    return cluster


def serve(listen: str) -> None:
    """Run one etcd member serving clients on ``listen`` (``tcp://127.0.0.1:PORT``) with its
    data in a temporary directory, until SIGTERM/SIGINT; then stop it and remove the data."""
    host, _, port = listen.removeprefix("tcp://").rpartition(":")
    if not listen.startswith("tcp://") or host != HOST or not port.isdigit():
        sys.exit(f"--listen must be tcp://{HOST}:PORT (got {listen!r})")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with tempfile.TemporaryDirectory(prefix="vwire-etcd-") as directory:
        cluster = EtcdCluster(Path(directory), 1, client_port=int(port))
        try:
            asyncio.run(cluster.start())
            print(f"etcd serving on {listen} (store URL etcd://{HOST}:{port})", flush=True)
            member = cluster.nodes[0]
            assert member.process is not None
            member.process.wait()
            sys.exit(f"etcd exited ({member.process.returncode}); see its log {member.log}")
        finally:
            cluster.stop()


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m lab.etcd --listen tcp://127.0.0.1:PORT``: a throw-away one-member etcd
    (:func:`serve`); ``python -m lab.etcd -- ARGS``: become ``etcd ARGS`` (same pid, for the
    lab's pid files)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) == 2 and args[0] == "--listen":
        serve(args[1])
        return
    binary = shutil.which(ETCD_BINARY)
    if binary is None or not args or args[0] != "--":
        sys.exit("usage: python -m lab.etcd --listen tcp://127.0.0.1:PORT | -- ETCD-ARGS "
                 "(etcd itself: apt-get install etcd-server, which scripts/setup.sh does)")
    os.execv(binary, [ETCD_BINARY, *args[1:]])


if __name__ == "__main__":
    main()
