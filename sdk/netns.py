"""Network-namespace files and sockets created inside a namespace, without forking.

* :func:`open_netns` opens a namespace file and checks that it really is a network namespace;
  it never creates anything (a typo gives ``NotFound``, not a new namespace), never blocks and
  has no side effects: the path is first opened with ``O_PATH`` (no FIFO waits for a writer, no
  device driver's ``open`` runs), the file must be on nsfs (``fstatfs``) and a regular file; only
  then is it re-opened read-only through ``/proc/self/fd`` (the same inode, whatever happens to
  the path meanwhile) and ``NS_GET_NSTYPE`` must say ``CLONE_NEWNET``. Symbolic links are
  followed on purpose: ``/proc/PID/ns/net`` is one (``O_NOFOLLOW`` would refuse it); callers
  that care *which* namespace it is look at the opened fd (:func:`netns_identity`), not at the
  path.
* :func:`new_netns` makes a namespace held only by a file descriptor (no name, no mount: it
  ends with its holder).
* :func:`socket_in` / :func:`socket_in_fd` create a socket that belongs to a namespace by
  calling ``setns()`` in a dedicated, short-lived thread (a socket stays bound to the namespace
  it was created in). No process is forked, which keeps it safe in processes that run grpcio.
"""

from __future__ import annotations

import asyncio
import ctypes
import fcntl
import os
import socket
import stat
import threading
from collections.abc import Callable

from sdk.errors import DataplaneError, InvalidArgument, NotFound, quoted

CLONE_NEWNET = 0x40000000
NSFS_MAGIC = 0x6E736673  # statfs f_type of namespace files
_NS_GET_NSTYPE = 0xB703  # ioctl on a namespace fd: returns its CLONE_NEW* type
SHOWN = 60  # characters of a path quoted in a message

_libc = ctypes.CDLL(None, use_errno=True)
_HINT = "name /var/run/netns/NAME, /proc/PID/ns/net or its file:// or inode:// URL"


def _fs_type(fd: int) -> int | None:
    """The ``f_type`` of the file system holding ``fd`` (None if fstatfs fails)."""
    buf = ctypes.create_string_buffer(256)  # struct statfs is 120 bytes on 64-bit Linux
    if _libc.fstatfs(fd, buf) != 0:
        return None
    return int.from_bytes(buf.raw[: ctypes.sizeof(ctypes.c_long)], "little", signed=True)


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISDIR, "directory"),
        (stat.S_ISREG, "regular file"),
    ):
        if test(mode):
            return name
    return "special file"


def open_netns(path: str, field: str = "netns") -> int:
    """Open a network-namespace file read-only; the caller closes the returned fd.

    Raises ``NotFound`` when the file does not exist and ``InvalidArgument`` naming ``field``
    when it is not a network namespace. Never blocks, never opens anything but a namespace file
    (see the module docstring).
    """
    shown = quoted(path, SHOWN)
    try:
        probe = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NotFound(
            f"{field}: network namespace {shown} does not exist (create it or pass an existing "
            "/var/run/netns/NAME or /proc/PID/ns/net)"
        ) from None
    except (OSError, ValueError) as err:  # ValueError: an embedded NUL
        reason = err.strerror if isinstance(err, OSError) else str(err)
        raise InvalidArgument(field, f"cannot open {shown}: {reason}; {_HINT}") from None
    try:
        mode = os.fstat(probe).st_mode
        if not stat.S_ISREG(mode) or _fs_type(probe) != NSFS_MAGIC:
            kind = "a " + _kind(mode) if not stat.S_ISREG(mode) else "a file outside nsfs"
            raise InvalidArgument(
                field, f"{shown} is not a network namespace file (it is {kind}); {_HINT}"
            )
        # Known to be a namespace file now: opening it has no side effect and cannot block.
        fd = os.open(f"/proc/self/fd/{probe}", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    finally:
        os.close(probe)
    try:
        kind_ns = fcntl.ioctl(fd, _NS_GET_NSTYPE)
    except OSError:
        kind_ns = -1
    if kind_ns != CLONE_NEWNET:
        os.close(fd)
        raise InvalidArgument(
            field, f"{shown} is not a network namespace file (another kind of namespace); {_HINT}"
        )
    return fd


def netns_identity(fd: int) -> tuple[int, int]:
    """(device, inode) of the namespace open at ``fd``: equal for every file of one namespace."""
    st = os.fstat(fd)
    return (st.st_dev, st.st_ino)


def setns(fd: int) -> None:
    """Move the calling thread into the network namespace open at ``fd``."""
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))


def new_netns() -> int:
    """A new, empty network namespace, held by the returned fd (the caller closes it; the
    namespace ends when nothing holds it any more, with every device in it). A short-lived thread
    unshares its own network namespace and opens it: nothing is forked or mounted."""
    made: list[int] = []
    failed: list[OSError] = []

    def in_thread() -> None:
        if _libc.unshare(CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            failed.append(OSError(errno, f"unshare(CLONE_NEWNET): {os.strerror(errno)}"))
            return
        made.append(os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC))

    thread = threading.Thread(target=in_thread, name="netns-new", daemon=True)
    thread.start()
    thread.join()
    if failed:
        raise DataplaneError(f"cannot make a network namespace: {failed[0]}")
    return made[0]


async def socket_in(path: str | None, make: Callable[[], socket.socket]) -> socket.socket:
    """The socket ``make()`` returns, created in the namespace at ``path`` (None: current)."""
    if path is None:
        return make()
    fd = open_netns(path)
    try:
        return await socket_in_fd(fd, make, path)
    finally:
        os.close(fd)


async def socket_in_fd(
    fd: int, make: Callable[[], socket.socket], where: str = "the namespace"
) -> socket.socket:
    """The socket ``make()`` returns, created in the namespace open at ``fd`` (the caller keeps
    and closes ``fd``, even while this is still waiting; ``where`` names it in errors)."""
    loop = asyncio.get_running_loop()
    own = os.dup(fd)  # the thread's own reference: a cancelled caller may close ``fd`` early
    done: asyncio.Future[socket.socket] = loop.create_future()

    def deliver(result: socket.socket | None, error: BaseException | None) -> None:
        if done.cancelled():
            if result is not None:
                result.close()
        elif error is not None:
            done.set_exception(error)
        else:
            done.set_result(result)  # type: ignore[arg-type]

    def in_thread() -> None:
        # setns() only switches this thread, which ends right after making the socket. Its
        # reference is closed before the hand-back: the caller never resumes with it open.
        try:
            try:
                setns(own)
                sock = make()
            finally:
                os.close(own)
        except OSError as err:
            loop.call_soon_threadsafe(
                deliver, None, DataplaneError(f"cannot enter network namespace {where}: {err}")
            )
        else:
            loop.call_soon_threadsafe(deliver, sock, None)

    threading.Thread(target=in_thread, name="netns-socket", daemon=True).start()
    return await done
