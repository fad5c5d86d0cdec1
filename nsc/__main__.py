"""``python -m nsc``: request network services (NSM URLs) for a namespace and keep them.

Runs until SIGTERM/SIGINT, then closes its connections. Prints one JSON line per connection
version on stdout (``{"event": "connected", ...}``) so a supervisor (the lab, ``nsmctl
connect``) can wait for it and show addresses. ``--state-file`` keeps the latest versions there.

In a pod (what the admission webhook injects) two of them work together:

* ``--init`` (the init container): connect, wait until every vWire answers pings from this
  namespace (at most ``--ready-timeout`` seconds, else exit 1 after closing them), write the
  state file and exit 0 **leaving the connections open**;
* ``--resume FILE`` (the sidecar, same ``--name``): refresh the connections of that state file
  (same path and ids: no second vWire) instead of making new ones, keep them, close them on
  SIGTERM.

``--netns-inode`` sends the namespace as ``inode://DEV/INO``: the forwarder finds it among the
node's processes, since a pod's ``/proc/PID`` means nothing in the forwarder's PID namespace.
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
from nsc.identity import ENV_SOCKET, svid_source
from sdk import log
from sdk.channels import ChannelPool
from sdk.errors import DataplaneError, FabricError, InvalidArgument
from sdk.networkservice.excludedprefixes import ExcludePrefixes
from sdk.nsmurl import parse
from sdk.security.redact import redact_tokens
from sdk.tracing import configure_tracing

#: The environment variables nsc reads (README): variable → (flag, default, help). Each is
#: shown once in ``--help``, with its flag.
ENVIRONMENT = {
    "VWIRE_NSC_NSMGR": ("--nsmgr", "unix:///var/run/vwire/nsmgr.sock",
                        "the node's nsmgr: unix:///path.sock or tcp://host:port"),
    "VWIRE_NSC_SVID_DIR": ("--svid-dir", "", "this workload's SVID directory: sign path tokens"),
    "VWIRE_NSC_NSMGR_ID": ("--nsmgr-id", "",
                           "SPIFFE ID of the node's nsmgr (needed with --svid-dir)"),
}


def _shown(text: str, default: object = "") -> str:
    """Help with its default, once, as the other processes show it (none when empty/off)."""
    return f"{text} (default: {default:g})" if isinstance(default, float) else (
        f"{text} (default: {default})" if default else text)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m nsc",
        description="Connect a network namespace to network services and keep it connected.",
        epilog="--nsmgr, --svid-dir and --nsmgr-id can also be set by their environment "
               f"variable ({', '.join(ENVIRONMENT)}); a flag wins.",
    )
    parser.add_argument("urls", nargs="+", metavar="URL",
                        help="NSM URL, e.g. kernel://secure-db/nsm0?app=web")
    parser.add_argument("--netns", default="", metavar="PATH",
                        help="namespace path (default: the process's own)")
    parser.add_argument("--name", default="", help="client name (default: nsc-<hostname>-<pid>)")
    parser.add_argument("--lifetime", type=float, default=60.0, metavar="SECONDS",
                        help=_shown("token lifetime, seconds", 60.0))
    parser.add_argument("--timeout", type=float, default=15.0, metavar="SECONDS",
                        help=_shown("request deadline, seconds", 15.0))
    parser.add_argument("--no-probe", action="store_true", help="no data-plane liveness pings")
    for env, (flag, default, text) in ENVIRONMENT.items():
        parser.add_argument(flag, default=os.environ.get(env, default),
                            metavar=flag[2:].upper().replace("-", "_"),
                            help=_shown(f"{text} [{env}]", default))
    parser.add_argument("--svid-from-agent", default=os.environ.get(ENV_SOCKET, ""),
                        metavar="SOCKET",
                        help="get this workload's SVID from the node agent (unix:///path); "
                        f"--svid-dir wins [{ENV_SOCKET}]")
    parser.add_argument("--state-file", metavar="FILE", help="write the connections as JSON here")
    parser.add_argument("--init", action="store_true",
                        help="connect, wait until every vWire passes traffic, exit leaving them up")
    parser.add_argument("--ready-timeout", type=float, default=60.0, metavar="SECONDS",
                        help=_shown("with --init: seconds to wait for traffic", 60.0))
    parser.add_argument("--resume", default="", metavar="FILE",
                        help="take over the connections of this state file (from --init)")
    parser.add_argument("--netns-inode", action="store_true",
                        help="name the namespace by inode://DEV/INO (pods)")
    parser.add_argument("--log-level", default="info", metavar="LEVEL",
                        help=_shown("log level: debug, info, warning, error", "info"))
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


def _resumed(path: str) -> dict[str, Connection]:
    """The connections of an ``--init`` state file by network service ({} without a file)."""
    if not path:
        return {}
    try:
        doc = json.loads(Path(path).read_text())
        found = {}
        for item in doc.get("connections", []):
            conn = json_format.ParseDict(item, Connection(), ignore_unknown_fields=True)
            found[conn.network_service] = conn
        return found
    except (OSError, ValueError, AttributeError, json_format.ParseError) as exc:
        raise InvalidArgument("--resume", f"cannot read state file {path!r}: {exc}") from None


def _netns(args: argparse.Namespace) -> tuple[str, str | None]:
    """(the namespace as sent to the fabric, where liveness pings are sent from)."""
    netns = args.netns or f"/proc/{os.getpid()}/ns/net"
    if not args.netns_inode:
        return netns, netns
    info = os.stat(args.netns or "/proc/self/ns/net")
    return f"inode://{info.st_dev}/{info.st_ino}", args.netns or None


async def _wait_for_traffic(clients: list[VWireClient], timeout: float) -> None:
    """Return once every client's vWire answers pings; FabricError after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    waiting = list(clients)
    while waiting:
        waiting = [client for client in waiting if not await client.passes_traffic()]
        if waiting and loop.time() > deadline:
            names = ", ".join(client.network_service for client in waiting)
            raise DataplaneError(f"no traffic across the vWire of {names} after {timeout:g} s")


async def run(args: argparse.Namespace) -> None:
    urls = [parse(text, "URL") for text in args.urls]
    name = args.name or f"nsc-{socket.gethostname()}-{os.getpid()}"
    netns, probe_netns = _netns(args)
    resume = _resumed(args.resume)
    state_file = Path(args.state_file) if args.state_file else None
    latest: dict[str, dict[str, object]] = {}
    heals: dict[str, int] = {}
    svids, nsmgr_id = svid_source(args.svid_dir, args.svid_from_agent, args.nsmgr_id)
    pool = ChannelPool()
    exclude = ExcludePrefixes()  # one namespace: its connections get distinct addresses
    clients = [
        VWireClient(
            name=name, nsmgr=args.nsmgr, pool=pool, netns_url=netns,
            network_service=url.requested_service, interface=url.interface or "",
            labels=url.labels, lifetime=args.lifetime, request_timeout=args.timeout,
            svids=svids, nsmgr_id=nsmgr_id, probe=not args.no_probe, exclude=exclude,
            resume=resume.get(url.requested_service), probe_netns=probe_netns,
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
    left_open = False
    try:
        for client in clients:
            await client.connect()
            keepers.append(asyncio.create_task(client.run()))
        if args.init:
            await _wait_for_traffic(clients, args.ready_timeout)
            left_open = True  # the sidecar (--resume) takes them over within their lifetime
            return
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
        for client in [] if left_open else clients:
            try:
                await client.close()
            except FabricError as exc:
                print(f"nsc: closing failed: {exc}", file=sys.stderr)
        await pool.close()
        if state_file is not None and not left_open:
            state_file.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    log.configure(args.log_level)
    configure_tracing("nsc")  # spans over OTLP when OTEL_* asks for it
    try:
        asyncio.run(run(args))
    except FabricError as exc:
        print(f"nsc: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
