"""Namespace tricks against the forwarder (issue 12, item 4), with real namespaces, FIFOs and
device nodes: the forwarder opens only network-namespace files, never blocks on or opens
anything else, and refuses its own and the host's namespace unless configured to allow them.

Every namespace is named ``vwt-<pid>-...`` and removed at teardown even when a test fails; every
helper process is killed and reaped.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import os
import secrets
import stat
import struct
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from api.mechanisms.kernel import KernelMechanism
from api.proto.connection_pb2 import Connection
from api.proto.networkservice_pb2 import NetworkServiceRequest
from forwarder.kernel import FakeKernel, KernelPort, real_kernel
from forwarder.ports import PortPool
from forwarder.settings import PREFIX, ForwarderSettings
from forwarder.specs import Node
from forwarder.wireguard.fake import FakeWireGuard
from forwarder.xconnect import Xconnect
from sdk.errors import FabricError, InvalidArgument, NotFound, PermissionDenied
from sdk.netns import open_netns
from sdk.networkservice.core import NetworkServiceChain
from sdk.networkservice.metadata import Metadata
from sdk.settings import load
from tests.privileged.conftest import NETNS_PREFIX, netns_path, run
from tests.unit.far_side import FarSide

pytestmark = pytest.mark.privileged

#: Seconds after which the watchdog unblocks an open() stuck on a FIFO (old code: forever).
WATCHDOG = 5.0
FIELD = "mechanism_preferences[KERNEL].parameters[inodeURL]"
_IN_OPEN, _IN_NONBLOCK = 0x20, 0o4000
_libc = ctypes.CDLL(None, use_errno=True)


@pytest.fixture
def netns() -> Iterator[Callable[[str], str]]:
    """Factory of fresh named namespaces (``vwt-<pid>-<role>-<hex>``), removed at teardown."""
    made: list[str] = []

    def make(role: str) -> str:
        name = f"{NETNS_PREFIX}{os.getpid()}-{role[:6]}-{secrets.token_hex(3)}"
        run("ip", "netns", "add", name)
        made.append(name)
        return name

    yield make
    for name in reversed(made):
        run("ip", "netns", "del", name, check=False)


@pytest.fixture
def processes() -> Iterator[Callable[[list[str]], subprocess.Popen[bytes]]]:
    """Factory of helper processes that wait on stdin; all are killed and reaped at teardown."""
    started: list[subprocess.Popen[bytes]] = []

    def start(argv: list[str]) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()
        process.wait(timeout=10)


def in_netns_pid(process: subprocess.Popen[bytes], name: str) -> int:
    """The pid of ``ip netns exec NAME cat`` once it has exec'd into ``cat`` inside ``name``
    (it writes a line first, so reading that line is the synchronisation)."""
    assert process.stdout is not None
    line = process.stdout.readline().decode().strip()
    assert line == "ready", line
    target = os.stat(netns_path(name)).st_ino
    assert os.stat(f"/proc/{process.pid}/ns/net").st_ino == target
    return process.pid


def kernel() -> KernelPort:
    return real_kernel()  # the default guard: own and host namespaces refused


def inode_url(path: str) -> str:
    st = os.stat(path)
    return f"inode://{st.st_dev}/{st.st_ino}"


class OpenWatch:
    """inotify IN_OPEN events in one directory: an ``O_PATH`` open makes none, a real open one."""

    def __init__(self, directory: Path) -> None:
        self.fd = _libc.inotify_init1(_IN_NONBLOCK | os.O_CLOEXEC)
        assert self.fd >= 0
        assert _libc.inotify_add_watch(self.fd, str(directory).encode(), _IN_OPEN) >= 0

    def opened(self) -> list[str]:
        try:
            data = os.read(self.fd, 65536)
        except BlockingIOError:
            return []
        names, i = [], 0
        while i < len(data):
            _, _, _, size = struct.unpack_from("iIII", data, i)
            names.append(data[i + 16:i + 16 + size].rstrip(b"\0").decode())
            i += 16 + size
        return names

    def close(self) -> None:
        os.close(self.fd)


class Watchdog:
    """Opens the FIFO's writing end after ``WATCHDOG`` seconds, which frees an ``open()`` stuck
    on its reading end; ``fired`` says whether that was needed (then the loop was blocked)."""

    def __init__(self, fifo: Path) -> None:
        self.fifo = fifo
        self.fired = False
        self._timer = threading.Timer(WATCHDOG, self._unblock)
        self._writer: int | None = None

    def _unblock(self) -> None:
        try:
            self._writer = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as err:  # ENXIO: nobody is reading, i.e. nobody is stuck
            assert err.errno == errno.ENXIO
            return
        self.fired = True

    def __enter__(self) -> Watchdog:
        self._timer.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._timer.cancel()
        self._timer.join()
        if self._writer is not None:
            os.close(self._writer)


def chain_with(port: KernelPort, far: FarSide) -> NetworkServiceChain:
    node = Node("fwd-attack", "192.0.2.1", "lo")
    unused = FakeWireGuard(FakeKernel())  # refused requests never reach a tunnel
    xconnect = Xconnect(port, unused, node, PortPool(range(51820, 51822)))
    return NetworkServiceChain([Metadata(), xconnect, far])


def kernel_request(inode: str, conn_id: str) -> NetworkServiceRequest:
    return NetworkServiceRequest(
        connection=Connection(id=conn_id),
        mechanism_preferences=[KernelMechanism(inode, "nsm0").to_proto()],
    )


async def test_a_fifo_as_inode_url_neither_blocks_the_loop_nor_is_opened(
    tmp_path: Path,
) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    watch = OpenWatch(tmp_path)
    far = FarSide(KernelMechanism().to_proto())
    chain = chain_with(kernel(), far)
    loop = asyncio.get_running_loop()
    try:
        with Watchdog(fifo) as watchdog:
            started = loop.time()
            with pytest.raises(InvalidArgument) as direct:
                await kernel().resolve_netns(f"file://{fifo}")
            with pytest.raises(InvalidArgument) as failure:
                await chain.run_request(kernel_request(str(fifo), "fifo-1"))
            blocked = loop.time() - started
        # Old code: open() waited for a writer, the whole loop stood still until the watchdog.
        assert not watchdog.fired, f"the FIFO blocked the event loop for {blocked:.1f} s"
        assert blocked < WATCHDOG
        assert "is not a network namespace file (it is a FIFO)" in str(direct.value)
        assert failure.value.field == FIELD
        assert "FIFO" in failure.value.problem and "/var/run/netns/NAME" in failure.value.problem
        assert failure.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert watch.opened() == []  # looked at, never opened
    finally:
        watch.close()


async def test_device_nodes_and_other_files_are_never_opened(tmp_path: Path) -> None:
    os.mknod(tmp_path / "null", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    os.mknod(tmp_path / "loop", 0o600 | stat.S_IFBLK, os.makedev(7, 200))
    (tmp_path / "plain").write_text("not a namespace")
    (tmp_path / "dir").mkdir()
    watch = OpenWatch(tmp_path)
    port = kernel()
    try:
        for name, kind in (("null", "a character device"), ("loop", "a block device"),
                           ("plain", "a file outside nsfs"), ("dir", "a directory")):
            with pytest.raises(InvalidArgument, match=f"not a network namespace file.*{kind}"):
                await port.resolve_netns(str(tmp_path / name))
            with pytest.raises(InvalidArgument, match="not a network namespace file"):
                await port.list_links(str(tmp_path / name))
        assert watch.opened() == []
    finally:
        watch.close()
    with pytest.raises(InvalidArgument, match="another kind of namespace"):
        await port.resolve_netns("/proc/self/ns/uts")
    with pytest.raises(NotFound, match="does not exist"):
        await port.resolve_netns(str(tmp_path / "missing"))


@pytest.mark.parametrize(
    "reference",
    ["/proc/self/ns/net", "self-pid", "file:///proc/self/ns/net", "inode-own", "symlink",
     "/proc/2/ns/net", "inode-host"],
)
async def test_the_forwarders_own_and_the_host_namespace_are_refused(
    reference: str, tmp_path: Path
) -> None:
    (tmp_path / "link").symlink_to("/proc/self/ns/net")
    ref = {
        "self-pid": f"/proc/{os.getpid()}/ns/net",
        "inode-own": inode_url("/proc/self/ns/net"),
        "symlink": str(tmp_path / "link"),
        "inode-host": inode_url("/proc/2/ns/net"),  # kthreadd: the kernel's initial namespace
    }.get(reference, reference)
    with pytest.raises(PermissionDenied) as failure:
        await kernel().resolve_netns(ref)
    message = str(failure.value)
    assert failure.value.code == grpc.StatusCode.PERMISSION_DENIED
    assert message.startswith("inodeURL: ")
    assert "network namespace" in message and "VWIRE_FORWARDER_ALLOW_HOST_NETNS=true" in message


async def test_the_kernel_port_checks_again_at_every_open(netns: Callable[[str], str]) -> None:
    """A path resolved once is opened again later: the check holds there too (a /proc/PID
    whose process was replaced by one in the host namespace must not slip through)."""
    port = kernel()
    with pytest.raises(PermissionDenied):
        await port.list_links("/proc/self/ns/net")
    with pytest.raises(PermissionDenied):
        await port.create_veth("vwt-a0", netns_path(netns("veth")), "vwt-b0", "/proc/2/ns/net")
    assert "vwt-b0" not in run("ip", "link", "show").stdout
    with pytest.raises(PermissionDenied):
        await port.move_link(None, "lo", "/proc/self/ns/net")


async def test_another_process_counts_by_its_namespace(
    netns: Callable[[str], str],
    processes: Callable[[list[str]], subprocess.Popen[bytes]],
) -> None:
    """``/proc/<other pid>/ns/net`` names whatever namespace that process is in: a process in
    the host's namespace is refused, one in a workload namespace is accepted (also by inode)."""
    port = kernel()
    host = processes(["cat"])
    with pytest.raises(PermissionDenied, match=r"host's network namespace|own network namespace"):
        await port.resolve_netns(f"/proc/{host.pid}/ns/net")
    name = netns("work")
    workload = processes(["ip", "netns", "exec", name, "sh", "-c", "echo ready; exec cat"])
    pid = in_netns_pid(workload, name)
    assert await port.resolve_netns(f"file:///proc/{pid}/ns/net") == f"/proc/{pid}/ns/net"
    assert await port.resolve_netns(inode_url(f"/proc/{pid}/ns/net")) == netns_path(name)
    listed = await port.list_namespaces()
    assert netns_path(name) in listed
    own = os.stat("/proc/self/ns/net").st_ino
    assert all(os.stat(path).st_ino != own for path in listed)


async def test_a_refused_namespace_reaches_nothing_beyond_the_forwarder() -> None:
    far = FarSide(KernelMechanism().to_proto())
    chain = chain_with(kernel(), far)
    before = run("ip", "-o", "link", "show").stdout
    for i, ref in enumerate(["/proc/self/ns/net", "/proc/2/ns/net",
                             inode_url("/proc/self/ns/net")]):
        with pytest.raises(FabricError) as failure:
            await chain.run_request(kernel_request(ref, f"own-{i}"))
        assert failure.value.code == grpc.StatusCode.PERMISSION_DENIED
        assert "VWIRE_FORWARDER_ALLOW_HOST_NETNS" in str(failure.value)
    assert far.closes == 0
    assert run("ip", "-o", "link", "show").stdout == before


async def test_the_setting_allows_them(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ForwarderSettings().allow_host_netns is False
    monkeypatch.setenv(f"{PREFIX}ALLOW_HOST_NETNS", "true")
    assert load(ForwarderSettings, PREFIX).allow_host_netns is True
    from forwarder.kernel.netlink import NetlinkKernel
    from forwarder.kernel.netns import NamespaceGuard

    port = NetlinkKernel(NamespaceGuard(allow_host=True))
    assert await port.resolve_netns("/proc/self/ns/net") == "/proc/self/ns/net"
    assert await port.resolve_netns(inode_url("/proc/self/ns/net")) == (
        f"/proc/{os.getpid()}/ns/net"
    )
    assert [link.name for link in await port.list_links("/proc/self/ns/net") if link.name == "lo"]


def test_open_netns_refuses_an_embedded_nul() -> None:
    with pytest.raises(InvalidArgument, match="cannot open"):
        open_netns("/var/run/netns/x\0y")


async def test_client_brought_addresses_and_routes_are_never_installed(
    netns: Callable[[str], str],
) -> None:
    """A client claims an address outside the endpoint's pool (another workload's, say: the
    endpoint side would route it into the client's vWire) and routes of its own (a default
    route), and addresses and routes for the endpoint's side. With the real endpoint IPAM and a
    real local vWire, only what the IPAM assigned is installed, on both ends; a close removes it
    all."""
    from nse.kernel import AcceptKernel
    from sdk.ipam import PointToPointIpam
    from sdk.networkservice.ipam import Ipam

    client_ns, endpoint_ns = netns_path(netns("cli")), netns_path(netns("nse"))
    chain = NetworkServiceChain([
        Metadata(),
        Xconnect(kernel(), FakeWireGuard(FakeKernel()), Node("fwd-attack", "192.0.2.1", "lo"),
                 PortPool(range(51820, 51822))),
        Ipam(PointToPointIpam(["10.60.0.0/24"]), routes=["10.61.0.0/16"]),
        AcceptKernel(endpoint_ns),
    ])
    request = kernel_request(client_ns, "claims-1")
    ip = request.connection.context.ip_context
    request.connection.path.path_segments.add(name="fwd-attack", id="claims-1")
    ip.src_ip_addrs.append("10.99.0.1/32")
    ip.src_routes.add(prefix="0.0.0.0/0")
    ip.src_routes.add(prefix="192.0.2.0/24", nextHop="10.60.0.1")
    ip.dst_ip_addrs.append("10.99.0.2/32")
    ip.dst_routes.add(prefix="0.0.0.0/0")
    conn = await chain.run_request(request)
    try:
        answer = conn.context.ip_context
        assert list(answer.src_ip_addrs) == ["10.60.0.2/32"]
        assert [r.prefix for r in answer.src_routes] == ["10.60.0.1/32", "10.61.0.0/16"]
        assert list(answer.dst_ip_addrs) == ["10.60.0.1/32"]
        assert [r.prefix for r in answer.dst_routes] == ["10.60.0.2/32"]
        client_dump = run("ip", "-o", "addr", "show", "dev", "nsm0", netns=Path(client_ns).name)
        assert "10.60.0.2/32" in client_dump.stdout
        assert "10.99.0.1" not in client_dump.stdout
        client_routes = run("ip", "route", "show", netns=Path(client_ns).name).stdout
        assert "default" not in client_routes and "192.0.2.0" not in client_routes
        assert "10.61.0.0/16" in client_routes
        endpoint_all = run("ip", "-o", "addr", "show", netns=Path(endpoint_ns).name).stdout
        endpoint_routes = run("ip", "route", "show", netns=Path(endpoint_ns).name).stdout
        for claimed in ("10.99.0.1", "10.99.0.2", "default"):
            assert claimed not in endpoint_routes and claimed not in endpoint_all
        assert "10.60.0.2" in endpoint_routes
    finally:
        await chain.run_close(conn)
    for path in (client_ns, endpoint_ns):
        assert "vwire:" not in run("ip", "-d", "link", "show", netns=Path(path).name).stdout
