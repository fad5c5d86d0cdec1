"""Keep what a server never uses out of its memory: call :func:`start` before anything imports
structlog (a process package's ``__init__`` does, as ``python -m <package>`` runs it first).

structlog imports rich when it is installed (for pretty tracebacks on a terminal), and rich
brings pygments: ~4.4 MB resident in every server process, which logs JSON. :func:`start` imports
structlog with rich hidden, so structlog's console renderer formats tracebacks plainly; rich
itself stays importable afterwards (``nsmctl`` uses it). When structlog was imported already it
changes nothing. :func:`watch_children` makes asyncio wait for child processes through pidfds
instead of one thread per child (Python 3.11's default): a forwarder keeps a wireguard-go child
per vWire side, and each waiting thread cost ~15 KB resident here.
:func:`package_init_on_demand` lets a process import the parts of a package it uses without the
package's own ``__init__``: pyroute2's imports every netlink family it speaks (NDB, IPDB,
conntrack, nl80211, plan9, ...), where the forwarder uses the route and WireGuard sockets and the
route messages (101 of its modules instead of 163: a forwarder at rest 70.8 -> 65.6 MB
resident, measured); prometheus_client's imports its HTTP exposition (``http.server``,
``wsgiref``), which a server needs only when it serves ``/metrics`` (:func:`start` defers it:
an nsmgr at rest 62.5 -> 60.2 MB). ``tests/unit/test_lean_imports.py`` checks that the servers
start without the modules they do not need (rich, dnspython, the etcd client, pyroute2 outside
the forwarder, the HTTP exposition), that the forwarder's kernel port loads only the parts of
pyroute2 it uses, and that children are waited for without threads.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import os
import sys
import warnings


def start() -> None:
    """Import structlog without rich, and prometheus_client's metric classes without its HTTP
    exposition until metrics are served (see the module docstring)."""
    package_init_on_demand("prometheus_client")
    if "structlog" in sys.modules or "rich" in sys.modules:
        return
    sys.modules["rich"] = None  # type: ignore[assignment]  # makes `import rich` fail
    try:
        importlib.import_module("structlog")
    finally:
        del sys.modules["rich"]


def watch_children() -> bool:
    """In a running event loop: wait for this process's children with pidfds, no thread each
    (Python 3.12 and later do so already, where this changes nothing). Call it before the first
    child is started. Returns whether the watcher was installed."""
    if sys.version_info >= (3, 12) or not hasattr(os, "pidfd_open"):
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        watcher = asyncio.PidfdChildWatcher()
        asyncio.set_child_watcher(watcher)
        watcher.attach_loop(asyncio.get_running_loop())
    return True


def package_init_on_demand(name: str) -> bool:
    """Make package ``name``'s submodules importable without running the package's own
    ``__init__`` (``from pyroute2.iproute.linux import AsyncIPRoute`` loads that module and what
    it imports, no more). The ``__init__`` runs, once, when a name of the package itself is
    first asked for (``from pyroute2 import IPRoute``, ``pyroute2.IPRoute``), so code that uses
    the package's own names still works; a submodule asked for as a name is imported alone.
    Call it before anything imports the package. Returns whether it was installed (not when
    the package is imported already or not installed)."""
    if name in sys.modules:
        return False
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None or spec.submodule_search_locations is None:
        return False
    package = importlib.util.module_from_spec(spec)
    loader = spec.loader

    def run_init(attribute: str) -> object:
        if importlib.util.find_spec(f"{name}.{attribute}") is not None:
            return importlib.import_module(f"{name}.{attribute}")  # a submodule, not a name
        del package.__dict__["__getattr__"]  # once: the __init__ sees a plain module
        loader.exec_module(package)
        return getattr(package, attribute)

    package.__dict__["__getattr__"] = run_init
    sys.modules[name] = package
    return True
