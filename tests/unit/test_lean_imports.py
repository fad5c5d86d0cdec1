"""Servers start without the modules they never use at start (they cost resident memory per
process, counted per node by bench.connect's control-plane RSS): rich (pulled in by structlog),
dnspython (only the gateway resolves domains by DNS), the etcd client (only an etcd:// store),
pyroute2 outside the forwarder (which imports it on first kernel use), the Kubernetes client and
PyYAML (only a policy or domains file is YAML; ~0.9 MB).
Each check runs a fresh interpreter, as ``python -m <process>`` would start."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

NEVER_AT_START = ("rich", "pygments", "dns", "aetcd", "pyroute2", "kubernetes", "yaml")


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c",
         f"import json, sys\n{code}\nprint(json.dumps(sorted(sys.modules)))"],
        capture_output=True, text=True, timeout=60, check=True,
    )
    return {name.split(".")[0] for name in json.loads(out.stdout.splitlines()[-1])}


@pytest.mark.parametrize("process", ["nsmgr", "forwarder", "registry"])
def test_server_starts_without_heavy_modules(process: str) -> None:
    loaded = _modules_after(f"import {process}.__main__")
    assert "structlog" in loaded and "grpc" in loaded  # the check sees a real start
    assert sorted(loaded & set(NEVER_AT_START)) == []


def test_rich_still_imports_after_a_lean_start() -> None:
    loaded = _modules_after("import nsmgr.__main__\nimport rich.console")
    assert "rich" in loaded


def test_children_are_waited_for_without_a_thread_each() -> None:
    code = """
import asyncio, os, sys
from sdk import lean

async def main():
    installed = lean.watch_children()
    procs = [await asyncio.create_subprocess_exec("sh", "-c", f"read x; exit {i}",
                                                  stdin=asyncio.subprocess.PIPE)
             for i in range(20)]
    threads = len(os.listdir("/proc/self/task"))
    codes = [(await p.communicate(b"go\\n"), p.returncode)[1] for p in procs]
    print(installed, threads, codes)

asyncio.run(main())
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout.split(maxsplit=2)
    installed, threads, codes = out[0] == "True", int(out[1]), out[2].strip()
    assert codes == str(list(range(20)))  # every child's exit status arrives
    if installed:  # Python 3.11; 3.12+ waits with pidfds by itself
        assert threads < 5  # 20 children alive: no thread each
