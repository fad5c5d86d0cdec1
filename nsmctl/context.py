"""What every command shares: the global options, the user-facing error, running coroutines.

Commands never print tracebacks or exit by themselves on failure: they raise :class:`CliError` (or
let a :class:`sdk.errors.FabricError` through) and the root command (:mod:`nsmctl.app`) prints one
``error: ...`` line and exits 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog
import typer
from rich.console import Console

T = TypeVar("T")

DEFAULT_REGISTRY = "unix:///var/run/vwire/registry.sock"
DEFAULT_TIMEOUT = 10.0


class CliError(Exception):
    """A failure to report to the operator as one line; the message says what to do."""

    exit_code = 1


@dataclass(frozen=True)
class Options:
    """The global options, given before the command name."""

    registry: str = DEFAULT_REGISTRY
    timeout: float = DEFAULT_TIMEOUT
    debug: bool = False


def options(ctx: typer.Context) -> Options:
    """The global options of the running invocation."""
    found = ctx.find_object(Options)
    return found if found is not None else Options()


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run one coroutine to completion in a fresh event loop (one per command)."""
    return asyncio.run(coroutine)


def run_until_signalled(coroutine: Coroutine[Any, Any, None]) -> bool:
    """Run a long-lived coroutine (a watch) until it ends or SIGINT/SIGTERM arrives.

    A signal cancels the coroutine, which unwinds normally (streams and channels are closed);
    returns True when stopped by a signal, False when the coroutine ended on its own. Once
    stopped, the process is on its way out: a second signal exits at once, without a traceback.
    """

    async def supervise() -> bool:
        loop = asyncio.get_running_loop()
        task = asyncio.ensure_future(coroutine)
        stopped = False

        def stop() -> None:
            nonlocal stopped
            stopped = True
            task.cancel()

        signals = (signal.SIGINT, signal.SIGTERM)
        for sig in signals:
            loop.add_signal_handler(sig, stop)
        try:
            await task
        except asyncio.CancelledError:
            if not stopped:
                raise
        finally:
            for sig in signals:
                loop.remove_signal_handler(sig)
                if stopped:
                    signal.signal(sig, _exit_now)
        return stopped

    return asyncio.run(supervise())


def _exit_now(signum: int, frame: object) -> None:
    with contextlib.suppress(OSError, ValueError):
        sys.stdout.flush()
    os._exit(128 + signum)


class _StderrLoggerFactory:
    """structlog loggers on the *current* ``sys.stderr`` (looked up for each logger)."""

    def __call__(self, *args: Any) -> structlog.PrintLogger:
        return structlog.PrintLogger(sys.stderr)


@contextlib.contextmanager
def logs_on_stderr(debug: bool) -> Iterator[None]:
    """While nsmctl runs, log lines of the code it calls (the sdk's ``policy loaded``, the CA's
    renewals...) go to stderr, never into the command's output, and only warnings and errors
    unless ``--debug``; the previous logging setup is restored afterwards."""
    before = structlog.get_config()
    structlog.configure(
        processors=[structlog.processors.add_log_level,
                    structlog.processors.TimeStamper(fmt="iso", utc=True),
                    structlog.dev.ConsoleRenderer(colors=False)],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.DEBUG if debug else logging.WARNING),
        logger_factory=_StderrLoggerFactory(),
        cache_logger_on_first_use=False,
    )
    try:
        yield
    finally:
        structlog.configure(**before)


def console() -> Console:
    """A console on the current stdout; wide when not a terminal, so piped tables never wrap.
    Text is printed as it is: names from the fabric may hold ``[...]``, never read as markup."""
    wide = None if sys.stdout.isatty() else 100_000
    return Console(file=sys.stdout, width=wide, highlight=False, soft_wrap=True, markup=False)


def emit(line: str) -> None:
    """Print one line of plain output and flush it at once (streams, pipes)."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
