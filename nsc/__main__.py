"""``python -m nsc``: request network services (NSM URLs) for a namespace and keep them.

Runs until SIGTERM/SIGINT, then closes its connections. Prints one JSON line per connection
version on stdout (``{"event": "connected", ...}``) so a supervisor (the lab, ``nsmctl
connect``) can wait for it and show addresses. ``--state-file`` keeps the latest versions there.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import signal
import socket
import sys
from pathlib import Path

from google.protobuf import json_format

from api.proto.connection_pb2 import Connection
from nsc.client import VWireClient
from sdk import log
from sdk.channels import ChannelPool
from sdk.errors import FabricError
from sdk.networkservice.excludedprefixes import ExcludePrefixes
from sdk.nsmurl import parse
from sdk.security.redact import redact_tokens
from sdk.security.source import FileSvidSource


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m nsc",
        description="Connect a network namespace to network services and keep it connected.",
    )
    parser.add_argument("urls", nargs="+", metavar="URL",
                        help="NSM URL, e.g. kernel://secure-db/nsm0?app=web")
    parser.add_argument("--nsmgr", default=os.environ.get(
        "VWIRE_NSC_NSMGR", "unix:///var/run/vwire/nsmgr.sock"))
    parser.add_argument("--netns", default="", help="namespace path (default: the process's own)")
    parser.add_argument("--name", default="", help="client name (default: nsc-<hostname>-<pid>)")
    parser.add_argument("--lifetime", type=float, default=60.0, help="token lifetime, seconds")
    parser.add_argument("--timeout", type=float, default=15.0, help="request deadline, seconds")
    parser.add_argument("--no-probe", action="store_true", help="no data-plane liveness pings")
    parser.add_argument("--svid-dir", default=os.environ.get("VWIRE_NSC_SVID_DIR", ""),
                        help="this workload's SVID directory: sign path tokens")
    parser.add_argument("--nsmgr-id", default=os.environ.get("VWIRE_NSC_NSMGR_ID", ""),
                        help="SPIFFE ID of the node's nsmgr (needed with --svid-dir)")
    parser.add_argument("--state-file", help="write the connections as JSON here")
    parser.add_argument("--log-level", default="info")
    return parser


def _emit(client: VWireClient, state_file: Path | None, latest: dict[str, dict[str, object]],
          heals: dict[str, int], conn: Connection) -> None:
    """Print a new version of ``client``'s connection; rewrite the state file (every
    connection's latest version, and how many times each was healed)."""
    doc = redact_tokens(json_format.MessageToDict(conn, preserving_proto_field_name=True))
    latest[conn.network_service] = doc
    heals[conn.network_service] = client.heals
    print(json.dumps({"event": "connected", "connection": doc}), flush=True)
    if state_file is not None:
        tmp = state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"pid": os.getpid(), "connections": list(latest.values()),
                                   "heals": heals}))
        tmp.replace(state_file)


async def run(args: argparse.Namespace) -> None:
    urls = [parse(text, "URL") for text in args.urls]
    name = args.name or f"nsc-{socket.gethostname()}-{os.getpid()}"
    netns = args.netns or f"/proc/{os.getpid()}/ns/net"
    state_file = Path(args.state_file) if args.state_file else None
    latest: dict[str, dict[str, object]] = {}
    heals: dict[str, int] = {}
    svids = FileSvidSource(Path(args.svid_dir)) if args.svid_dir else None
    pool = ChannelPool()
    exclude = ExcludePrefixes()  # one namespace: its connections get distinct addresses
    clients = [
        VWireClient(
            name=name, nsmgr=args.nsmgr, pool=pool, netns_url=netns,
            network_service=url.network_service, interface=url.interface or "",
            labels=url.labels, lifetime=args.lifetime, request_timeout=args.timeout,
            svids=svids, nsmgr_id=args.nsmgr_id, probe=not args.no_probe, exclude=exclude,
        )
        for url in urls
    ]
    for client in clients:
        client.on_change = functools.partial(_emit, client, state_file, latest, heals)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    keepers: list[asyncio.Task[None]] = []
    try:
        for client in clients:
            await client.connect()
            keepers.append(asyncio.create_task(client.run()))
        stop = asyncio.create_task(stopping.wait())
        await asyncio.wait([stop, *keepers], return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        for task in keepers:
            if task.done() and not task.cancelled() and (error := task.exception()) is not None:
                raise error  # a keeper gave up (e.g. its namespace is gone): report it
    finally:
        for task in keepers:
            task.cancel()
        await asyncio.gather(*keepers, return_exceptions=True)
        for client in clients:
            try:
                await client.close()
            except FabricError as exc:
                print(f"nsc: closing failed: {exc}", file=sys.stderr)
        await pool.close()
        if state_file is not None:
            state_file.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    log.configure(args.log_level)
    try:
        asyncio.run(run(args))
    except FabricError as exc:
        print(f"nsc: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
