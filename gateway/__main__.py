"""``python -m gateway``: run a domain's gateway until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import sys

import structlog

from gateway.app import Gateway
from gateway.settings import PREFIX, GatewaySettings
from sdk import service


def _parser() -> argparse.ArgumentParser:
    return service.parser(
        "python -m gateway",
        "Serve a domain's one exposed address: registry proxy and request relay for "
        "SERVICE@DOMAIN.",
        GatewaySettings, PREFIX,
    )


async def run(config: GatewaySettings) -> None:
    gateway = Gateway(config)
    if config.insecure:
        structlog.get_logger("gateway").warning(
            "SERVING PLAIN-TEXT TCP BETWEEN DOMAINS WITHOUT mTLS: development only"
        )
    await service.until_signalled(gateway.start, lambda: gateway.stop(config.grace))


def main(argv: list[str] | None = None) -> int:
    return service.main("gateway", _parser(), GatewaySettings, PREFIX, run, argv)


if __name__ == "__main__":
    sys.exit(main())
