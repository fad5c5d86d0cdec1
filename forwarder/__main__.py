"""``python -m forwarder``: run a forwarder until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import sys

from forwarder.app import Forwarder
from forwarder.kernel import real_kernel
from forwarder.kernel.netns import DEFAULT_GUARD
from forwarder.settings import PREFIX, ForwarderSettings
from forwarder.wireguard import detect_backend
from sdk import lean, service
from sdk.errors import InvalidArgument


def _parser() -> argparse.ArgumentParser:
    return service.parser(
        "python -m forwarder",
        "Program vWires (veth, WireGuard, addresses, routes) for this node's nsmgr.",
        ForwarderSettings, PREFIX,
    )


async def run(config: ForwarderSettings) -> None:
    lean.watch_children()  # no waiting thread per wireguard-go child
    DEFAULT_GUARD.allow_host = config.allow_host_netns  # every kernel port of this process
    kernel = real_kernel()
    if config.wireguard_pool < 0:
        raise InvalidArgument("wireguard_pool", "must be 0 (off) or a number of daemons, e.g. 4")
    if not 0 <= config.wireguard_pool_endpoints <= 64:
        raise InvalidArgument("wireguard_pool_endpoints",
                              "must be 0 (off) or a number of namespaces up to 64, e.g. 4")
    if not 0 <= config.wireguard_reuse <= 64:
        raise InvalidArgument("wireguard_reuse",
                              "must be 0 (off) or a number of daemons up to 64, e.g. 4")
    backend = await detect_backend(
        config.wireguard, pool_size=config.wireguard_pool,  # type: ignore[arg-type]
        pool_namespaces=config.wireguard_pool_endpoints, reuse=config.wireguard_reuse,
    )
    forwarder = Forwarder(config, kernel, backend)
    await service.until_signalled(forwarder.start, forwarder.stop)


def main(argv: list[str] | None = None) -> int:
    return service.main("forwarder", _parser(), ForwarderSettings, PREFIX, run, argv)


if __name__ == "__main__":
    sys.exit(main())
