"""``python -m nse``: run the reference endpoint until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from nse.app import Endpoint
from nse.settings import PREFIX, NseSettings
from sdk import log, settings
from sdk.errors import FabricError


def _parser() -> argparse.ArgumentParser:
    epilog = "environment:\n" + "\n".join(
        f"  {name:<28} {text} (default: {default})"
        for name, default, text in settings.describe(NseSettings, PREFIX)
    )
    parser = argparse.ArgumentParser(
        prog="python -m nse",
        description="Provide network services: point-to-point addresses over vWires.",
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--name")
    parser.add_argument("--service", dest="services", action="append", help="repeatable")
    parser.add_argument("--label", dest="labels", action="append", help="key=value, repeatable")
    parser.add_argument("--listen", help="unix:///path.sock")
    parser.add_argument("--nsmgr", help="the node's nsmgr")
    parser.add_argument("--netns", help="namespace path (default: the process's own)")
    parser.add_argument("--cidr", action="append", help="prefix to hand out, repeatable")
    parser.add_argument("--route", dest="routes", action="append", help="extra client route")
    parser.add_argument("--dns-server", dest="dns_servers", action="append")
    parser.add_argument("--dns-search", action="append")
    parser.add_argument("--command", help="run this while serving")
    parser.add_argument("--register-interval", type=float)
    parser.add_argument("--log-level")
    return parser


async def run(config: NseSettings) -> None:
    endpoint = Endpoint(config)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    await endpoint.start()
    try:
        await stopping.wait()
    finally:
        await endpoint.stop()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = settings.load(NseSettings, PREFIX, vars(args))
        log.configure(config.log_level)
        asyncio.run(run(config))
    except FabricError as exc:
        print(f"nse: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
