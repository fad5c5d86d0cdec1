"""``python -m webhook``: serve the admission webhook until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
import threading
from pathlib import Path

import structlog

from sdk import service
from sdk.errors import InvalidArgument
from webhook.inject import InjectConfig
from webhook.namespaces import LookupFailed, lookup_from
from webhook.server import Certificates, WebhookServer, parse_listen
from webhook.settings import PREFIX, WebhookSettings

log = structlog.get_logger("webhook")


def _parser() -> argparse.ArgumentParser:
    return service.parser(
        "python -m webhook",
        "Admission webhook: inject the vWire client into pods annotated networkservicemesh.io.",
        WebhookSettings, PREFIX,
    )


def build(config: WebhookSettings) -> WebhookServer:
    """The server for ``config`` (not yet serving); InvalidArgument names a bad setting."""
    address = parse_listen(config.listen)
    certificates = Certificates(Path(config.cert_file), Path(config.key_file))
    try:
        lookup = lookup_from(config.namespaces)
    except LookupFailed as exc:
        raise InvalidArgument("namespaces", str(exc)) from None
    if ":" in address[0]:
        WebhookServer.address_family = socket.AF_INET6
    return WebhookServer(address, certificates, InjectConfig.of(config), lookup)


async def run(config: WebhookSettings) -> None:
    server = build(config)
    thread = threading.Thread(target=server.serve_forever, name="webhook", daemon=True)

    async def start() -> None:
        thread.start()
        log.info("serving", listen=config.listen, mutate="/mutate", ready="/ready")

    async def stop() -> None:
        if thread.is_alive():
            await asyncio.to_thread(server.shutdown)
        server.server_close()

    await service.until_signalled(start, stop)


def main(argv: list[str] | None = None) -> int:
    return service.main("webhook", _parser(), WebhookSettings, PREFIX, run, argv)


if __name__ == "__main__":
    sys.exit(main())
