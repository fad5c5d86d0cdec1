"""Keep what a server never uses out of its memory: call :func:`start` before anything imports
structlog (a process package's ``__init__`` does, as ``python -m <package>`` runs it first).

structlog imports rich when it is installed (for pretty tracebacks on a terminal), and rich
brings pygments: ~4.4 MB resident in every server process, which logs JSON. :func:`start` imports
structlog with rich hidden, so structlog's console renderer formats tracebacks plainly; rich
itself stays importable afterwards (``nsmctl`` uses it). When structlog was imported already it
changes nothing. :func:`watch_children` makes asyncio wait for child processes through pidfds
instead of one thread per child (Python 3.11's default): a forwarder keeps a wireguard-go child
per vWire side, and each waiting thread cost ~15 KB resident here.
``tests/unit/test_lean_imports.py`` checks that the servers start without the modules they do
not need (rich, dnspython, the etcd client, pyroute2 outside the forwarder), and that children
are waited for without threads.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import sys
import warnings


def start() -> None:
    """Import structlog without rich (see the module docstring)."""
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
