"""What every server binary shares: its ``--help``, running until a signal, reporting errors.

* :func:`parser` makes the argument parser: one flag per setting, with its environment variable.
* :func:`until_signalled` starts a service, waits for SIGTERM or SIGINT, and stops it — also when
  starting failed half way, so nothing is left behind.
* :func:`main` loads the settings (environment, then flags), configures logging, serves metrics
  (``metrics_listen``) and exports traces (``OTEL_*``) when asked, runs the service and turns a
  :class:`sdk.errors.FabricError` into one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import structlog

from sdk import log, settings
from sdk.errors import FabricError
from sdk.metrics import count_tasks, serve_metrics
from sdk.tracing import configure_tracing

_log = structlog.get_logger("sdk.service")

S = TypeVar("S")


def parser(prog: str, description: str, cls: type[Any], prefix: str) -> argparse.ArgumentParser:
    """An argument parser with one flag per field of ``cls`` (its help, environment variable and
    default shown once); flags win over the environment."""
    parser = argparse.ArgumentParser(
        prog=prog, description=description,
        epilog=f"Every flag can also be set by its environment variable ({prefix}...); "
        "a flag wins.",
    )
    for option in settings.options(cls, prefix):
        metavar = option.flag[2:].upper().replace("-", "_")
        shown = f" (default: {option.default})" if option.default not in ("", "False") else ""
        text = f"{option.help} [{option.env}]{shown}".replace("%", "%%")
        if option.kind is bool:
            parser.add_argument(option.flag, dest=option.dest, action="store_true",
                                default=None, help=text)
        elif option.kind == list[str]:
            parser.add_argument(option.flag, dest=option.dest, action="append",
                                metavar=metavar, help=text + " (repeatable)")
        else:
            kind = option.kind if option.kind in (int, float) else str
            parser.add_argument(option.flag, dest=option.dest, type=kind, metavar=metavar,
                                choices=option.choices or None, help=text)
    return parser


async def until_signalled(
    start: Callable[[], Awaitable[None]], stop: Callable[[], Awaitable[None]]
) -> None:
    """Start, serve until SIGTERM/SIGINT, stop (stop runs even if start failed)."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    count_tasks(loop)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    try:
        await start()
        await stopping.wait()
    finally:
        await stop()


def observe(name: str, metrics_listen: str) -> None:
    """Serve metrics when ``metrics_listen`` is given; export traces when ``OTEL_*`` asks."""
    if metrics_listen:
        host, port = serve_metrics(metrics_listen)
        _log.info("serving metrics", url=f"http://{host}:{port}/metrics")
    if configure_tracing(name):
        _log.info("exporting traces over OTLP", service=name)


def main(
    name: str,
    args: argparse.ArgumentParser,
    cls: type[S],
    prefix: str,
    run: Callable[[S], Coroutine[Any, Any, None]],
    argv: list[str] | None = None,
) -> int:
    """Parse ``argv``, load ``cls`` settings, run ``run(settings)``; returns the exit code."""
    flags = vars(args.parse_args(argv))
    try:
        config = settings.load(cls, prefix, flags)
        log.configure(getattr(config, "log_level", "info"))
        observe(name, getattr(config, "metrics_listen", ""))
        asyncio.run(run(config))
    except FabricError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 2
    return 0
