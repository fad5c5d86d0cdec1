"""Parsing of namespace references, shared by every kernel port implementation.

A reference is one of:

* a path to a namespace file: ``/var/run/netns/NAME``, ``/proc/PID/ns/net``;
* a ``file://`` URL of such a path (what NSM puts in the KERNEL mechanism's ``inodeURL``);
* ``inode://<dev>/<ino>``: the device and inode numbers of the namespace file.

:func:`parse_ns_ref` only checks the syntax; whether the namespace exists is the port's business.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlparse

from sdk.errors import InvalidArgument, quoted

NAMED_NETNS_DIR = "/var/run/netns"
SHOWN = 60  # characters of a rejected reference quoted in a message (paths run long)


@dataclass(frozen=True)
class PathRef:
    """A reference by file path (absolute, normalised)."""

    path: str


@dataclass(frozen=True)
class InodeRef:
    """A reference by device and inode numbers."""

    dev: int
    ino: int


def parse_ns_ref(ref: str, field: str = "netns") -> PathRef | InodeRef:
    """Parse ``ref``; raise ``InvalidArgument`` naming ``field`` when it is not a reference."""
    if not ref:
        raise InvalidArgument(
            field, "must name a network namespace (a path, file:// or inode:// URL)"
        )
    if ref.startswith("/"):
        return PathRef(_clean_path(ref, field))
    try:
        url = urlparse(ref)
    except ValueError as exc:  # e.g. an unclosed '[' of an IPv6 host
        raise InvalidArgument(field, f"{quoted(ref, SHOWN)} is not a valid URL ({exc})") from None
    if url.scheme == "file" and url.netloc in ("", "localhost"):
        return PathRef(_clean_path(unquote(url.path), field))
    if url.scheme == "inode":
        parts = (url.netloc + url.path).strip("/").split("/")
        if len(parts) == 2 and all(p.isascii() and p.isdigit() for p in parts):
            return InodeRef(int(parts[0]), int(parts[1]))
        raise InvalidArgument(
            field, f"inode URL must be inode://<dev>/<ino> (got {quoted(ref, SHOWN)})"
        )
    raise InvalidArgument(
        field,
        f"{quoted(ref, SHOWN)} is not a namespace reference: use /var/run/netns/NAME, "
        "/proc/PID/ns/net, file:///proc/PID/ns/net or inode://DEV/INO",
    )


def _clean_path(path: str, field: str) -> str:
    if not path.startswith("/") or "\0" in path:
        raise InvalidArgument(
            field, f"namespace path must be absolute (got {quoted(path, SHOWN)})"
        )
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise InvalidArgument(
            field, f"namespace path must not contain '..' (got {quoted(path, SHOWN)})"
        )
    return "/" + "/".join(parts)
