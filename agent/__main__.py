"""``python -m agent``: the node agent; serves SVIDs to the node's pods until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from agent.attest import LabPods, PodResolver
from agent.kubepods import KubernetesPods
from agent.server import AgentServer
from agent.settings import PREFIX, AgentSettings
from sdk import service
from sdk.errors import InvalidArgument
from sdk.security.ca import CertificateAuthority


def _parser() -> argparse.ArgumentParser:
    return service.parser(
        "python -m agent",
        "Node agent: SVIDs for the node's pods, attested by the peer credentials of their "
        "connection.",
        AgentSettings, PREFIX,
    )


def resolver(spec: str) -> PodResolver:
    """The resolver a ``pods`` setting names: ``lab:/DIR``, ``kubernetes`` (this node's name
    from ``$NODE_NAME``) or ``kubernetes:NODE``."""
    if spec.startswith("lab:") and spec[4:].startswith("/"):
        return LabPods(Path(spec[4:]))
    if spec == "kubernetes" or spec.startswith("kubernetes:"):
        return KubernetesPods.from_environment(spec.partition(":")[2])
    raise InvalidArgument("pods", f"{spec!r}: use lab:/absolute/dir, kubernetes or "
                                  "kubernetes:NODE")


def build(config: AgentSettings) -> AgentServer:
    """The server for ``config`` (not yet serving); InvalidArgument names a bad setting."""
    if not config.pods:
        raise InvalidArgument("pods", "say where pods are found: lab:/dir or kubernetes")
    if not 0 < config.ttl <= 86400:
        raise InvalidArgument("ttl", f"must be between 0 and 86400 s (got {config.ttl:g})")
    return AgentServer(Path(config.socket), CertificateAuthority.load(Path(config.ca_dir)),
                       resolver(config.pods), config.ttl, config.nsmgr_id)


async def run(config: AgentSettings) -> None:
    server = build(config)
    await service.until_signalled(server.start, server.stop)


def main(argv: list[str] | None = None) -> int:
    return service.main("agent", _parser(), AgentSettings, PREFIX, run, argv)


if __name__ == "__main__":
    sys.exit(main())
