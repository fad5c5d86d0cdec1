"""Registry store backends: one contract suite over every backend, plus SQLite durability
(a real SIGKILL right after ``put`` returns), URL parsing and corrupt-file handling."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from registry.store import default_store_url, open_store
from registry.store.etcd import EtcdStore
from registry.store.sqlite import SCHEMA_VERSION, SqliteStore
from sdk.errors import FailedPrecondition, InvalidArgument
from sdk.registry.memory import MemoryStore
from sdk.registry.store import Store, StoredRecord

NOW = 1_000_000.0


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


@pytest.fixture(params=["memory", "sqlite", "etcd"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[MemoryStore | SqliteStore | EtcdStore]:
    if request.param == "etcd":  # a real etcd (tests/etcd_fixture.py), a prefix of its own
        url = request.getfixturevalue("etcd_url")
    else:
        url = "memory://" if request.param == "memory" else sqlite_url(tmp_path / "r.db")
    s = open_store(url)
    assert isinstance(s, MemoryStore | SqliteStore | EtcdStore)
    if isinstance(s, EtcdStore):
        s.clock = lambda: NOW  # leases sized from the records' test times, not from 1970
    yield s
    await s.close()


def rec(
    name: str, data: bytes = b"x", kind: str = "nse", expires_at: float | None = None
) -> StoredRecord:
    return StoredRecord(kind=kind, name=name, data=data, expires_at=expires_at)


# -- contract, every backend -------------------------------------------------------------------


async def test_put_then_load(store: Store) -> None:
    await store.put(rec("b", b"\x00\xffB", expires_at=NOW + 10))
    await store.put(rec("a", b"A"))
    assert await store.load("nse", NOW) == [
        rec("a", b"A"),
        rec("b", b"\x00\xffB", expires_at=NOW + 10),
    ]


async def test_put_replaces(store: Store) -> None:
    await store.put(rec("a", b"old", expires_at=NOW + 1))
    await store.put(rec("a", b"new"))
    assert await store.load("nse", NOW) == [rec("a", b"new")]


async def test_delete_reports_existence(store: Store) -> None:
    await store.put(rec("a"))
    assert await store.delete("nse", "a") is True
    assert await store.delete("nse", "a") is False
    assert await store.delete("nse", "never") is False
    assert await store.load("nse", NOW) == []


async def test_load_filters_expired(store: Store) -> None:
    await store.put(rec("past", expires_at=NOW - 1))
    await store.put(rec("edge", expires_at=NOW))
    await store.put(rec("future", expires_at=NOW + 1))
    await store.put(rec("forever"))
    names = [r.name for r in await store.load("nse", NOW)]
    assert names == ["forever", "future"]
    assert [r.name for r in await store.load("nse", NOW - 10)] == [
        "edge",
        "forever",
        "future",
        "past",
    ]


async def test_purge_expired(store: Store) -> None:
    await store.put(rec("past", expires_at=NOW - 1))
    await store.put(rec("ns-past", kind="ns", expires_at=NOW))
    await store.put(rec("future", expires_at=NOW + 1))
    assert await store.purge_expired(NOW) == 2
    assert [r.name for r in await store.load("nse", NOW - 10)] == ["future"]
    assert await store.load("ns", NOW - 10) == []


async def test_kinds_are_separate(store: Store) -> None:
    await store.put(rec("same", b"service", kind="ns"))
    await store.put(rec("same", b"endpoint", kind="nse"))
    assert await store.load("ns", NOW) == [rec("same", b"service", kind="ns")]
    assert await store.delete("ns", "same") is True
    assert await store.load("nse", NOW) == [rec("same", b"endpoint", kind="nse")]
    assert await store.load("other", NOW) == []


async def test_concurrent_puts_from_many_tasks(store: Store) -> None:
    async def writer(i: int) -> None:
        await store.put(rec(f"nse-{i:03}", str(i).encode()))
        await store.put(rec("shared", str(i).encode()))

    await asyncio.gather(*(writer(i) for i in range(200)))
    loaded = await store.load("nse", NOW)
    assert [r.name for r in loaded if r.name != "shared"] == [f"nse-{i:03}" for i in range(200)]
    assert all(r.data == str(int(r.name[4:])).encode() for r in loaded if r.name != "shared")
    (shared,) = [r for r in loaded if r.name == "shared"]
    assert 0 <= int(shared.data) < 200


async def test_close_is_idempotent_and_final(store: Store) -> None:
    await store.put(rec("a"))
    await asyncio.gather(store.close(), store.close())
    await store.close()
    with pytest.raises(FailedPrecondition, match="closed"):
        await store.put(rec("b"))
    with pytest.raises(FailedPrecondition, match="closed"):
        await store.load("nse", NOW)


# -- SQLite persistence ------------------------------------------------------------------------


async def test_sqlite_persists_across_close_and_reopen(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "deep" / "dir" / "r.db")
    s = open_store(url)
    await s.put(rec("a", b"A", expires_at=NOW + 5))
    await s.put(rec("svc", b"S", kind="ns"))
    await s.close()
    s = open_store(url)
    try:
        assert await s.load("nse", NOW) == [rec("a", b"A", expires_at=NOW + 5)]
        assert await s.load("ns", NOW) == [rec("svc", b"S", kind="ns")]
    finally:
        await s.close()


_KILLED_WRITER = """
import asyncio, os, signal, sys
from registry.store import open_store
from sdk.registry.store import StoredRecord

async def main() -> None:
    store = open_store(sys.argv[1])
    for i in range(50):
        await store.put(StoredRecord("nse", f"nse-{i:02}", b"payload-%d" % i, None))
    os.kill(os.getpid(), signal.SIGKILL)  # no close, no flush, no atexit

asyncio.run(main())
"""


async def test_sqlite_put_survives_sigkill(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "r.db")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _KILLED_WRITER, url, cwd=Path(__file__).parents[2]
    )
    assert await proc.wait() == -9
    s = open_store(url)
    try:
        loaded = await s.load("nse", NOW)
    finally:
        await s.close()
    assert [(r.name, r.data) for r in loaded] == [
        (f"nse-{i:02}", b"payload-%d" % i) for i in range(50)
    ]


async def test_sqlite_relative_path_and_default_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    s = open_store("sqlite:///rel/r.db")
    await s.close()
    assert (tmp_path / "rel" / "r.db").is_file()
    url = default_store_url(tmp_path / "state")
    assert url == f"sqlite:///{tmp_path}/state/registry.db"
    s = open_store(url)
    await s.close()
    assert (tmp_path / "state" / "registry.db").is_file()


def test_sqlite_corrupt_file_is_failed_precondition(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    path.write_bytes(b"this is not a database, just garbage bytes\n" * 200)
    with pytest.raises(FailedPrecondition, match="move it away") as err:
        open_store(sqlite_url(path))
    assert str(path) in str(err.value)


def test_sqlite_directory_in_place_of_file_is_failed_precondition(tmp_path: Path) -> None:
    with pytest.raises(FailedPrecondition, match=str(tmp_path)):
        open_store(sqlite_url(tmp_path))


def test_sqlite_newer_schema_is_failed_precondition(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(FailedPrecondition, match="newer") as err:
        open_store(sqlite_url(path))
    assert str(path) in str(err.value)


# -- URLs -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("k8s://cluster", "not available yet"),
        ("etcd://", "needs at least one host:port"),
        ("etcd://127.0.0.1", "not host:port"),
        ("etcd://127.0.0.1:2379,127.0.0.1:0", "not host:port"),
        ("etcd://127.0.0.1:2379,[::1]:2379", "mix IPv4 and IPv6"),
        ("postgres://db/registry", "unknown scheme 'postgres'"),
        ("registry.db", "missing '://'"),
        ("", "missing '://'"),
        ("sqlite://", "needs a database file path"),
        ("sqlite:///", "needs a database file path"),
        ("sqlite://host/r.db", "takes no host"),
        ("sqlite:///r.db?mode=ro", "query"),
        ("memory://somewhere", "takes no host or path"),
        ("http://[::1/x", "malformed"),
    ],
)
def test_bad_urls_are_invalid_argument(
    url: str, problem: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # nothing may be created, but if it were, not in the repo
    with pytest.raises(InvalidArgument, match=problem) as err:
        open_store(url)
    assert err.value.field == "store"
    assert "sqlite:///path.db" in str(err.value) and "memory://" in str(err.value)
    assert list(tmp_path.iterdir()) == []
