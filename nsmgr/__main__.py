"""``python -m nsmgr``: run a node manager until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import sys

import structlog

from nsmgr.app import Nsmgr
from nsmgr.settings import PREFIX, NsmgrSettings
from sdk import service


def _parser() -> argparse.ArgumentParser:
    parser = service.parser(
        "python -m nsmgr", "Negotiate network service connections for this node.",
        NsmgrSettings, PREFIX,
    )
    parser.add_argument("--name")
    parser.add_argument("--listen", action="append", help="unix:///path.sock or tcp://host:port")
    parser.add_argument("--advertise", help="tcp://ip:port other nodes reach this nsmgr at")
    parser.add_argument("--registry", help="the registry's address")
    parser.add_argument("--insecure", action="store_true", default=None,
                        help="plain-text TCP between nodes (development only: no mTLS yet)")
    parser.add_argument("--svid-dir", help="SVID directory for mTLS between nodes")
    parser.add_argument("--policy", help="authorization policy file (YAML)")
    parser.add_argument("--token-lifetime", type=float)
    parser.add_argument("--select-policy",
                        choices=["round-robin", "least-connections", "weighted"])
    parser.add_argument("--max-in-flight-per-peer", type=int,
                        help="unary calls one peer (all local callers together) may have open")
    parser.add_argument("--log-level")
    parser.add_argument("--trace", action="store_true", default=None)
    return parser


async def run(config: NsmgrSettings) -> None:
    nsmgr = Nsmgr(config)
    if config.insecure:
        structlog.get_logger("nsmgr").warning(
            "SERVING PLAIN-TEXT TCP BETWEEN NODES WITHOUT mTLS: development only"
        )
    await service.until_signalled(nsmgr.start, nsmgr.stop)


def main(argv: list[str] | None = None) -> int:
    return service.main("nsmgr", _parser(), NsmgrSettings, PREFIX, run, argv)


if __name__ == "__main__":
    sys.exit(main())
