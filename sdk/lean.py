"""Keep what a server never uses out of its memory: call :func:`start` before anything imports
structlog (a process package's ``__init__`` does, as ``python -m <package>`` runs it first).

structlog imports rich when it is installed (for pretty tracebacks on a terminal), and rich
brings pygments: ~4.4 MB resident in every server process, which logs JSON. :func:`start` imports
structlog with rich hidden, so structlog's console renderer formats tracebacks plainly; rich
itself stays importable afterwards (``nsmctl`` uses it). When structlog was imported already it
changes nothing. ``tests/unit/test_lean_imports.py`` checks that the servers start without the
modules they do not need (rich, dnspython, the etcd client, pyroute2 outside the forwarder).
"""

from __future__ import annotations

import importlib
import sys


def start() -> None:
    """Import structlog without rich (see the module docstring)."""
    if "structlog" in sys.modules or "rich" in sys.modules:
        return
    sys.modules["rich"] = None  # type: ignore[assignment]  # makes `import rich` fail
    try:
        importlib.import_module("structlog")
    finally:
        del sys.modules["rich"]
