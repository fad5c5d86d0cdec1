"""``python -m nse``: run the reference endpoint until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import sys

from nse.app import Endpoint
from nse.settings import PREFIX, NseSettings
from sdk import service


def _parser() -> argparse.ArgumentParser:
    parser = service.parser(
        "python -m nse", "Provide network services: point-to-point addresses over vWires.",
        NseSettings, PREFIX,
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
    parser.add_argument("--svid-dir", help="SVID directory (nsmctl ca issue): verify path tokens")
    parser.add_argument("--log-level")
    return parser


async def run(config: NseSettings) -> None:
    endpoint = Endpoint(config)
    await service.until_signalled(endpoint.start, endpoint.stop)


def main(argv: list[str] | None = None) -> int:
    return service.main("nse", _parser(), NseSettings, PREFIX, run, argv)


if __name__ == "__main__":
    sys.exit(main())
