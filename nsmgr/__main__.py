"""``python -m nsmgr``: run a node manager until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import sys

import structlog

from nsmgr.app import Nsmgr
from nsmgr.settings import PREFIX, NsmgrSettings
from sdk import service


def _parser() -> argparse.ArgumentParser:
    return service.parser(
        "python -m nsmgr", "Negotiate network service connections for this node.",
        NsmgrSettings, PREFIX,
    )


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
