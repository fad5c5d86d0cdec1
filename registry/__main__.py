"""``python -m registry``: run a registry until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import structlog

from registry.app import Registry
from registry.settings import PREFIX, RegistrySettings
from registry.store import default_store_url, open_store
from sdk import service
from sdk.channels import ChannelPool, insecure_factory
from sdk.grpcutil import parse_address
from sdk.registry.validate import check_name
from sdk.security.policy import load_policy
from sdk.security.source import FileSvidSource
from sdk.security.tls import SecureChannelFactory, server_credentials


def _parser() -> argparse.ArgumentParser:
    return service.parser(
        "python -m registry", "Serve NSM's registry API (network services and endpoints).",
        RegistrySettings, PREFIX,
    )


async def run(config: RegistrySettings) -> None:
    """Serve until a termination signal arrives, then stop gracefully."""
    addresses = [parse_address(url, "listen") for url in config.listen]
    check_name("domain", config.domain)
    store = open_store(config.store or default_store_url(Path(config.state_dir)),
                       Path(config.etcd_tls_dir) if config.etcd_tls_dir else None)
    policy = load_policy(config.policy or None)
    svids = FileSvidSource(Path(config.svid_dir)) if config.svid_dir else None
    pool = ChannelPool(SecureChannelFactory(svids) if svids else insecure_factory)
    tcp_gateway = bool(config.gateway) and parse_address(config.gateway, "gateway").scheme == "tcp"
    if tcp_gateway and svids is None:
        structlog.get_logger("registry").warning(
            "--gateway is TCP but the registry has no --svid-dir: it speaks plain TCP, which "
            "only a gateway started with --insecure answers; give the registry an SVID or use "
            "the gateway's unix socket (gateway --listen unix:///...)", gateway=config.gateway)
    registry = Registry(
        store, config.default_ttl, config.max_ttl, config.trace, policy,
        config.max_records_per_identity, config.max_bytes_per_identity,
        config.watch_backlog_bytes, config.domain,
        pool.get(config.gateway) if config.gateway else None,
    )
    credentials = server_credentials(svids) if svids else None
    if config.insecure and any(a.scheme == "tcp" for a in addresses):
        structlog.get_logger("registry").warning(
            "SERVING PLAIN-TEXT TCP WITHOUT mTLS: development only, anyone on the network can "
            "read and change the registry"
        )
    await service.until_signalled(
        lambda: registry.start(addresses, config.insecure, credentials),
        lambda: _stop(registry, pool, config.grace),
    )


async def _stop(registry: Registry, pool: ChannelPool, grace: float) -> None:
    await registry.stop(grace)
    await pool.close()


def main(argv: list[str] | None = None) -> int:
    return service.main("registry", _parser(), RegistrySettings, PREFIX, run, argv)


if __name__ == "__main__":
    sys.exit(main())
