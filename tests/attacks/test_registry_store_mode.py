"""The registry's SQLite file is private (issue 12, item 10): the database and its -wal/-shm
files are 0600, a directory made for them is 0700, an existing file readable by others is
narrowed, and a directory anyone may write to (without the sticky bit) is refused. Real SQLite
files through a real registry, with the process umask opened wide (0000) so that nothing is
private by accident."""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from api.proto.registry_pb2 import NetworkServiceEndpoint
from registry.app import Registry
from registry.store import open_store
from sdk.errors import FailedPrecondition


@pytest.fixture
def wide_umask() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


@pytest.fixture
def tmp() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="vwt-mode-") as name:
        yield Path(name)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def fill(path: Path) -> None:
    registry = Registry(open_store(f"sqlite:///{path}"))
    await registry.service_records.load()
    await registry.endpoints.register(NetworkServiceEndpoint(
        name="e", url="tcp://10.0.0.1:1", network_service_names=["db"]))
    files = {p.name: mode(p) for p in path.parent.iterdir()}
    await registry.store.close()
    assert files == {"registry.db": 0o600, "registry.db-wal": 0o600, "registry.db-shm": 0o600}


async def test_the_database_and_its_journal_are_private(wide_umask: None, tmp: Path) -> None:
    path = tmp / "state" / "registry.db"
    await fill(path)
    assert mode(path.parent) == 0o700


async def test_an_existing_open_database_is_narrowed(wide_umask: None, tmp: Path) -> None:
    path = tmp / "registry.db"
    await fill(path)  # closed cleanly: SQLite removed the -wal and -shm files
    os.chmod(path, 0o666)  # as old versions left it (0644) or worse
    await fill(path)  # checks the database, -wal and -shm are 0600 again


def test_a_directory_anyone_may_write_is_refused(wide_umask: None, tmp: Path) -> None:
    shared = tmp / "shared"
    shared.mkdir(mode=0o777)
    with pytest.raises(FailedPrecondition) as err:
        open_store(f"sqlite:///{shared / 'registry.db'}")
    assert "writable by every user" in str(err.value) and "chmod o-w" in str(err.value)
    assert list(shared.iterdir()) == []  # nothing created there
