"""``python -m forwarder``: run a forwarder until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from forwarder.app import Forwarder
from forwarder.kernel import real_kernel
from forwarder.settings import PREFIX, ForwarderSettings
from forwarder.wireguard import detect_backend
from sdk import log, settings
from sdk.errors import FabricError


def _parser() -> argparse.ArgumentParser:
    epilog = "environment:\n" + "\n".join(
        f"  {name:<36} {text} (default: {default})"
        for name, default, text in settings.describe(ForwarderSettings, PREFIX)
    )
    parser = argparse.ArgumentParser(
        prog="python -m forwarder",
        description="Program vWires (veth, WireGuard, addresses, routes) for this node's nsmgr.",
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--name")
    parser.add_argument("--listen", help="unix:///path.sock")
    parser.add_argument("--nsmgr", help="this node's nsmgr, unix:///path.sock")
    parser.add_argument("--underlay-interface")
    parser.add_argument("--underlay-ip")
    parser.add_argument("--port-range", help="first-last UDP ports for tunnels")
    parser.add_argument("--wireguard", choices=["auto", "kernel", "wireguard-go"])
    parser.add_argument("--token-lifetime", type=float)
    parser.add_argument("--log-level")
    parser.add_argument("--trace", action="store_true", default=None)
    return parser


async def run(config: ForwarderSettings) -> None:
    kernel = real_kernel()
    backend = await detect_backend(config.wireguard)  # type: ignore[arg-type]
    forwarder = Forwarder(config, kernel, backend)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    try:
        await forwarder.start()
        await stopping.wait()
    finally:
        await forwarder.stop()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = settings.load(ForwarderSettings, PREFIX, vars(args))
        log.configure(config.log_level)
        asyncio.run(run(config))
    except FabricError as exc:
        print(f"forwarder: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
