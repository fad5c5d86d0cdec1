"""``python -m external``: serve external hosts until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import sys

from external.app import ExternalRouter
from external.settings import PREFIX, ExternalSettings
from sdk import service


def _parser() -> argparse.ArgumentParser:
    return service.parser(
        "python -m external",
        "Give external hosts plain-WireGuard access to network services.",
        ExternalSettings, PREFIX,
    )


async def run(config: ExternalSettings) -> None:
    router = ExternalRouter(config)
    await service.until_signalled(router.start, router.stop)


def main(argv: list[str] | None = None) -> int:
    return service.main("external", _parser(), ExternalSettings, PREFIX, run, argv)


if __name__ == "__main__":
    sys.exit(main())
