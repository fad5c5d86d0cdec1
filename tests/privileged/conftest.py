"""Fixtures for privileged tests: real network namespaces that are always removed.

Every namespace a test makes is named ``vwt-<pid>-<role>-<tag>``: the prefix makes a leftover
recognisable, the pid says which test run made it. The session removes its own namespaces at
the end and leftovers of runs whose process is gone at the start (never those of a run still
going), and each fixture removes its namespaces at teardown whether the test passed or failed.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

NETNS_PREFIX = "vwt-"


def run(
    *cmd: str, netns: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run a command (inside ``netns`` when given), returning its captured output."""
    full = ["ip", "netns", "exec", netns, *cmd] if netns else list(cmd)
    return subprocess.run(full, check=check, capture_output=True, text=True, timeout=60)


def _owner_gone(name: str) -> bool:
    pid = name.removeprefix(NETNS_PREFIX).split("-", 1)[0]
    return not pid.isdigit() or not Path(f"/proc/{pid}").exists() or int(pid) == os.getpid()


def _remove_leftovers() -> None:
    """Remove test namespaces of this run and of runs that are no longer alive."""
    listing = run("ip", "netns", "list", check=False).stdout.split()
    for name in listing:
        if name.startswith(NETNS_PREFIX) and _owner_gone(name):
            run("ip", "netns", "del", name, check=False)


@pytest.fixture(scope="session", autouse=True)
def _privileged_session() -> Iterator[None]:
    if os.geteuid() != 0:
        pytest.fail("privileged tests need root: run them as root (CI does)")
    for tool in ("ip", "wireguard-go", "wg"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing: run the README's setup command to install it")
    _remove_leftovers()
    yield
    _remove_leftovers()


@pytest.fixture
def netns() -> Iterator[Callable[[str], str]]:
    """Factory: ``netns("client")`` creates a fresh namespace and returns its name.

    The returned name is unique per call; its file is ``/var/run/netns/<name>``. All namespaces
    made through the factory are deleted at teardown, even when the test fails.
    """
    made: list[str] = []

    def make(role: str) -> str:
        name = f"{NETNS_PREFIX}{os.getpid()}-{role[:6]}-{secrets.token_hex(3)}"
        run("ip", "netns", "add", name)
        run("ip", "link", "set", "lo", "up", netns=name)
        made.append(name)
        return name

    yield make
    for name in reversed(made):
        run("ip", "netns", "del", name, check=False)


def netns_path(name: str) -> str:
    """The filesystem path of a named namespace (what NSM's ``inodeURL`` points at)."""
    return str(Path("/var/run/netns") / name)
