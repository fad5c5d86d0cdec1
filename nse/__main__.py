"""``python -m nse``: run the reference endpoint until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import sys

from nse.app import Endpoint
from nse.settings import PREFIX, NseSettings
from sdk import service


def _parser() -> argparse.ArgumentParser:
    return service.parser(
        "python -m nse", "Provide network services: point-to-point addresses over vWires.",
        NseSettings, PREFIX,
    )


async def run(config: NseSettings) -> None:
    endpoint = Endpoint(config)
    await service.until_signalled(endpoint.start, endpoint.stop)


def main(argv: list[str] | None = None) -> int:
    return service.main("nse", _parser(), NseSettings, PREFIX, run, argv)


if __name__ == "__main__":
    sys.exit(main())
