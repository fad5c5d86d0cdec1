"""``python -m nsmgr``: run a node manager until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

import structlog

from nsmgr.app import Nsmgr
from nsmgr.settings import PREFIX, NsmgrSettings
from sdk import log, settings
from sdk.errors import FabricError


def _parser() -> argparse.ArgumentParser:
    epilog = "environment:\n" + "\n".join(
        f"  {name:<32} {text} (default: {default})"
        for name, default, text in settings.describe(NsmgrSettings, PREFIX)
    )
    parser = argparse.ArgumentParser(
        prog="python -m nsmgr",
        description="Negotiate network service connections for this node.",
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--name")
    parser.add_argument("--listen", action="append", help="unix:///path.sock or tcp://host:port")
    parser.add_argument("--advertise", help="tcp://ip:port other nodes reach this nsmgr at")
    parser.add_argument("--registry", help="the registry's address")
    parser.add_argument("--insecure", action="store_true", default=None,
                        help="plain-text TCP between nodes (development only: no mTLS yet)")
    parser.add_argument("--token-lifetime", type=float)
    parser.add_argument("--select-policy",
                        choices=["round-robin", "least-connections", "weighted"])
    parser.add_argument("--log-level")
    parser.add_argument("--trace", action="store_true", default=None)
    return parser


async def run(config: NsmgrSettings) -> None:
    nsmgr = Nsmgr(config)
    if config.insecure:
        structlog.get_logger("nsmgr").warning(
            "SERVING PLAIN-TEXT TCP BETWEEN NODES WITHOUT mTLS: development only"
        )
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    try:
        await nsmgr.start()
        await stopping.wait()
    finally:
        await nsmgr.stop()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = settings.load(NsmgrSettings, PREFIX, vars(args))
        log.configure(config.log_level)
        asyncio.run(run(config))
    except FabricError as exc:
        print(f"nsmgr: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
