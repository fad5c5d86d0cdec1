"""Servers start without the modules they never use at start (they cost resident memory per
process, counted per node by bench.connect's control-plane RSS): rich (pulled in by structlog),
dnspython (only the gateway resolves domains by DNS), the etcd client (only an etcd:// store),
pyroute2 outside the forwarder (which imports it on first kernel use), the Kubernetes client and
PyYAML (only a policy or domains file is YAML; ~0.9 MB), prometheus_client's HTTP exposition
(only when metrics are served). The forwarder's kernel port loads the parts of pyroute2 it uses,
not the package's ``__init__`` with every netlink family.
Each check runs a fresh interpreter, as ``python -m <process>`` would start; the mechanism,
:func:`sdk.lean.package_init_on_demand`, is checked on a package made for the test."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sdk import lean

NEVER_AT_START = ("rich", "pygments", "dns", "aetcd", "pyroute2", "kubernetes", "yaml",
                  "http.server", "wsgiref", "prometheus_client.exposition")
#: Parts of pyroute2 the forwarder never uses; its package ``__init__`` imports them all.
PYROUTE2_UNUSED = ("pyroute2.ndb", "pyroute2.ipdb", "pyroute2.conntrack", "pyroute2.ipset",
                   "pyroute2.netlink.nl80211", "pyroute2.plan9", "pyroute2.wiset")


def _module_names_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c",
         f"import json, sys\n{code}\nprint(json.dumps(sorted(sys.modules)))"],
        capture_output=True, text=True, timeout=60, check=True,
    )
    return set(json.loads(out.stdout.splitlines()[-1]))


def _modules_after(code: str) -> set[str]:
    return {name.split(".")[0] for name in _module_names_after(code)}


def _loaded(names: set[str], modules: tuple[str, ...]) -> list[str]:
    """Which of ``modules`` (or modules inside them) are among ``names``."""
    return sorted(m for m in modules if any(n == m or n.startswith(m + ".") for n in names))


@pytest.mark.parametrize("process", ["nsmgr", "forwarder", "registry"])
def test_server_starts_without_heavy_modules(process: str) -> None:
    names = _module_names_after(f"import {process}.__main__")
    assert "structlog" in names and "grpc" in names  # the check sees a real start
    # pyroute2 may be there as the forwarder's package without its __init__, nothing in it
    assert _loaded(names - {"pyroute2"}, NEVER_AT_START) == []


@pytest.mark.parametrize("process", ["nsmgr", "registry"])
def test_the_heap_trim_loads_ctypes_only_when_it_first_trims(process: str) -> None:
    assert "ctypes" not in _modules_after(f"import {process}.__main__")  # sdk.heaptrim is in


def test_forwarder_kernel_port_loads_only_the_parts_of_pyroute2_it_uses() -> None:
    names = _module_names_after(
        "import forwarder.__main__, forwarder.kernel.netlink, forwarder.kernel.changes, "
        "forwarder.kernel.wireguard\nimport pyroute2\nassert 'IPRoute' not in vars(pyroute2)")
    assert "pyroute2.iproute.linux" in names and "pyroute2.netlink.generic.wireguard" in names
    assert _loaded(names, PYROUTE2_UNUSED) == []


def test_pyroute2_names_still_import_after_a_lean_forwarder_start() -> None:
    names = _module_names_after(
        "import forwarder.__main__, forwarder.kernel.netlink\n"
        "from pyroute2 import IPBatch, IPRoute, __version__\n"
        "from pyroute2.iproute.linux import IPRoute as Same\nassert IPRoute is Same")
    assert "pyroute2.ndb" in names  # the package's __init__ ran, once asked for its names


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


@pytest.fixture
def made_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A package ``vwlean_pkg`` whose ``__init__`` counts its runs in ``vwlean_runs.count`` and
    exports ``NAME`` from its submodule ``part``; removed from ``sys.modules`` afterwards."""
    package = tmp_path / "vwlean_pkg"
    package.mkdir()
    (tmp_path / "vwlean_runs.py").write_text("count = 0\n")
    (package / "__init__.py").write_text(
        "import vwlean_runs\nvwlean_runs.count += 1\nfrom vwlean_pkg.part import NAME\n")
    (package / "part.py").write_text("NAME = 'from part'\n")
    (package / "other.py").write_text("OTHER = 'from other'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "vwlean_pkg"
    for name in [n for n in sys.modules if n.startswith(("vwlean_pkg", "vwlean_runs"))]:
        del sys.modules[name]


def test_submodules_import_without_the_package_init(made_package: str) -> None:
    assert lean.package_init_on_demand(made_package)
    import vwlean_runs  # type: ignore[import-not-found]
    from vwlean_pkg.part import NAME  # type: ignore[import-not-found]

    assert NAME == "from part"
    assert vwlean_runs.count == 0
    from vwlean_pkg import other  # type: ignore[import-not-found]  # a submodule, as a name

    assert other.OTHER == "from other" and vwlean_runs.count == 0


def test_the_package_init_runs_once_when_its_names_are_asked_for(made_package: str) -> None:
    assert lean.package_init_on_demand(made_package)
    import vwlean_pkg  # type: ignore[import-not-found]
    import vwlean_runs  # type: ignore[import-not-found]

    assert vwlean_runs.count == 0
    from vwlean_pkg import NAME

    assert NAME == "from part" and vwlean_runs.count == 1
    assert vwlean_pkg.NAME == "from part" and vwlean_runs.count == 1
    with pytest.raises(AttributeError):
        _ = vwlean_pkg.MISSING
    assert vwlean_runs.count == 1


def test_nothing_is_installed_for_a_package_imported_or_missing(made_package: str) -> None:
    import vwlean_pkg  # type: ignore[import-not-found]  # the whole package, __init__ and all

    assert not lean.package_init_on_demand(made_package)
    assert sys.modules[made_package] is vwlean_pkg
    assert not lean.package_init_on_demand("vwlean_no_such_package")
    assert "vwlean_no_such_package" not in sys.modules
