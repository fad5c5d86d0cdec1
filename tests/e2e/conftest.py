"""Fixtures for end-to-end tests: whole fabrics of real processes in real namespaces.

Every fabric a test builds has its own :class:`lab.topology.Topology`: namespaces named
``vwe<pid>-<n>-...`` and a state directory under ``/var/run/vwire-e2e/``, so tests never touch a
user's lab (``vwl-``) nor each other. :func:`make_fabric` tears every fabric down at teardown,
whether the test passed or failed (processes, stray wireguard-go and their sockets, namespaces,
files); a failed test's logs are copied to its ``tmp_path`` first and the path is printed. The
session also removes what runs that died left behind (their pid is gone).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lab import network
from lab.fabric import Fabric
from lab.topology import Topology

PREFIX = "vwe"
STATE_ROOT = Path("/var/run/vwire-e2e")
_counter = itertools.count(1)

MakeFabric = Callable[..., Awaitable[Fabric]]


def new_topology(tag: str = "") -> Topology:
    """A topology unique to this process and call."""
    n = f"{tag}{next(_counter)}"
    return Topology(f"{PREFIX}{os.getpid()}-{n}-", STATE_ROOT / f"{os.getpid()}-{n}")


def _remove_dead_runs() -> None:
    """Tear down fabrics of e2e runs whose process is gone (or of this process)."""
    prefixes = set()
    for name in network.ip("netns", "list").split():
        if not name.startswith(PREFIX) or name.count("-") < 2:
            continue
        pid, tag = name[len(PREFIX):].split("-")[:2]
        if pid.isdigit() and (int(pid) == os.getpid() or not Path(f"/proc/{pid}").exists()):
            prefixes.add(f"{PREFIX}{pid}-{tag}-")
    for prefix in sorted(prefixes):
        Fabric(Topology(prefix, STATE_ROOT / prefix.removeprefix(PREFIX).rstrip("-"))).down(1.0)


@pytest.fixture(scope="session", autouse=True)
def _e2e_session() -> Iterator[None]:
    if os.geteuid() != 0:
        pytest.fail("e2e tests need root: run them as root (CI does)")
    for tool in ("ip", "wireguard-go"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing: run the README's setup command to install it")
    _remove_dead_runs()
    yield
    _remove_dead_runs()
    with contextlib.suppress(OSError):
        STATE_ROOT.rmdir()  # only when no other run uses it


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Any:
    report = yield
    if report.when == "call":
        item.stash[_failed] = report.failed
    return report


_failed = pytest.StashKey[bool]()


@pytest.fixture
def make_fabric(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MakeFabric]:
    """Factory: ``fabric = await make_fabric(nodes=2, token_lifetime=..., select_policy=...)``
    builds a fabric that is up (registry, nsmgr and forwarder per node) and always torn down."""
    made: list[Fabric] = []

    async def make(nodes: int = 2, **options: Any) -> Fabric:
        fabric = Fabric(new_topology(), nodes, **options)
        made.append(fabric)
        await fabric.up()
        return fabric

    yield make
    for fabric in made:
        if request.node.stash.get(_failed, True):
            dest = tmp_path / f"logs-{fabric.topology.prefix.rstrip('-')}"
            fabric.save_logs(dest)
            print(f"fabric logs kept in {dest}")
        fabric.down(grace=3.0)
