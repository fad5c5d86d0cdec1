"""Node commands: ``connect``, ``close``, ``status``, ``check``.

``connect`` starts a reference client (``python -m nsc``) in the background for a namespace and
waits until its connection is up; the client keeps it refreshed and healed until ``close``.
Clients started this way keep their state in :data:`CLIENTS_DIR` (one JSON file per client).
``status`` shows the connections a node's nsmgr knows, with their path, addresses, counters and
WireGuard handshake age, plus the node's forwarders and their data plane. ``check`` verifies a
node and gives a hint for every failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import grpc
import typer
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc

from api.proto import connection_pb2_grpc
from api.proto.connection_pb2 import MonitorScopeSelector
from api.proto.registry_pb2 import NetworkServiceEndpoint
from nsmctl import connections
from nsmctl.context import CliError, console, emit, options, run
from nsmctl.render import Output, dump
from sdk.grpcutil import channel
from sdk.nsmurl import parse
from sdk.registry.client import RemoteRegistry
from sdk.registry.core import Query, RegistryChain
from sdk.registry.kinds import ENDPOINT
from sdk.security.policy import AUTHORIZATION_HEALTH, authorization_state
from sdk.security.redact import redact_tokens

CLIENTS_DIR = Path("/var/run/vwire/clients")
DEFAULT_NSMGR = "unix:///var/run/vwire/nsmgr.sock"
FORWARDER_SERVICE = "forwarder"

NsmgrOpt = Annotated[str, typer.Option("--nsmgr", envvar="NSMCTL_NSMGR", metavar="ADDR",
                                       help="the node's nsmgr")]
OutputOpt = Annotated[Output, typer.Option("--output", "-o", case_sensitive=False)]


def _netns_path(netns: str) -> str:
    path = netns if netns.startswith("/") else f"/var/run/netns/{netns}"
    if not Path(path).exists():
        raise CliError(f"network namespace {netns!r} does not exist (ip netns list shows them)")
    return path


def _client_states() -> list[dict[str, Any]]:
    states = []
    for path in sorted(CLIENTS_DIR.glob("*.json")):
        try:
            states.append({"file": str(path), **json.loads(path.read_text())})
        except (OSError, ValueError):
            continue
    return states


def connect(
    ctx: typer.Context,
    url: Annotated[str, typer.Argument(help="NSM URL, e.g. kernel://secure-db/nsm0?app=web")],
    netns: Annotated[str, typer.Option("--netns", help="namespace name or path to connect")],
    nsmgr: NsmgrOpt = DEFAULT_NSMGR,
    svid_dir: Annotated[str, typer.Option(
        "--svid-dir", help="the client's SVID directory: sign path tokens (nsmgr with an SVID "
        "requires them)")] = "",
    nsmgr_id: Annotated[str, typer.Option(
        "--nsmgr-id", help="SPIFFE ID of the node's nsmgr (with --svid-dir)")] = "",
    output: OutputOpt = Output.table,
) -> None:
    """Connect a network namespace to a network service and keep it connected."""
    parse(url)  # a bad URL fails here, with the part that is wrong
    if bool(svid_dir) != bool(nsmgr_id):
        raise CliError("give --svid-dir and --nsmgr-id together (the token is signed with the "
                       "client's SVID for the nsmgr's SPIFFE ID)")
    identity = ["--svid-dir", svid_dir, "--nsmgr-id", nsmgr_id] if svid_dir else []
    path = _netns_path(netns)
    CLIENTS_DIR.mkdir(parents=True, exist_ok=True)
    state = CLIENTS_DIR / f"{time.time_ns()}.json"
    log = state.with_suffix(".log")
    with open(log, "wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "nsc", url, "--nsmgr", nsmgr, "--netns", path,
             "--state-file", str(state), "--timeout", str(options(ctx).timeout), *identity],
            stdout=subprocess.DEVNULL, stderr=sink, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    deadline = time.monotonic() + options(ctx).timeout + 5
    while not state.exists():
        if process.poll() is not None:
            reason = log.read_text().strip().splitlines()
            log.unlink(missing_ok=True)
            raise CliError(reason[-1] if reason else f"the client exited ({process.returncode})")
        if time.monotonic() > deadline:
            process.terminate()
            raise CliError(f"no connection within {options(ctx).timeout:g} s: see {log}")
        time.sleep(0.05)  # polling the client's state file, bounded by the deadline
    conns = json.loads(state.read_text())["connections"]
    if output is not Output.table:
        emit(dump(conns, output).rstrip("\n"))
        return
    console().print(connections.table(conns))
    emit(f"connected: close it with `nsmctl close {conns[0]['id'][:8]}`")


def close(
    conn_id: Annotated[str, typer.Argument(metavar="ID", help="connection id (or its start)")],
) -> None:
    """Close a connection made with ``nsmctl connect`` (stops its client)."""
    matches = [s for s in _client_states()
               if any(c.get("id", "").startswith(conn_id) for c in s.get("connections", []))]
    if not matches:
        raise CliError(f"no connection {conn_id!r} made by nsmctl connect is open")
    if len(matches) > 1:
        raise CliError(f"{conn_id!r} matches {len(matches)} connections: give more of the id")
    pid = int(matches[0]["pid"])
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        Path(matches[0]["file"]).unlink(missing_ok=True)
    deadline = time.monotonic() + 10
    while Path(matches[0]["file"]).exists() and time.monotonic() < deadline:
        time.sleep(0.05)  # the client removes its state file after closing
    Path(matches[0]["file"]).with_suffix(".log").unlink(missing_ok=True)
    emit(f"connection {conn_id} closed")


async def _node_state(nsmgr: str, timeout: float) -> dict[str, Any]:
    async with channel(nsmgr) as ch:
        stream = connection_pb2_grpc.MonitorConnectionStub(ch).MonitorConnections(
            MonitorScopeSelector(), timeout=timeout
        )
        conns: list[dict[str, Any]] = []
        async for event in stream:
            conns = redact_tokens([json_format.MessageToDict(c, preserving_proto_field_name=True)
                                   for c in event.connections.values()])
            stream.cancel()
            break
        registry = RegistryChain([RemoteRegistry(ENDPOINT, ch)])
        forwarders = [
            {"name": e.record.name, "url": e.record.url,
             **dict(e.record.network_service_labels[FORWARDER_SERVICE].labels)}
            async for e in registry.find(Query(NetworkServiceEndpoint(
                network_service_names=[FORWARDER_SERVICE])))
        ]
    return {"nsmgr": nsmgr, "forwarders": forwarders, "connections": conns}


def status(ctx: typer.Context, nsmgr: NsmgrOpt = DEFAULT_NSMGR,
           output: OutputOpt = Output.table) -> None:
    """Connections through this node: path, addresses, counters, handshake age."""
    try:
        state = run(asyncio.wait_for(_node_state(nsmgr, options(ctx).timeout),
                                     options(ctx).timeout))
    except (grpc.aio.AioRpcError, TimeoutError):
        raise CliError(f"cannot reach nsmgr at {nsmgr}: is it running? (set --nsmgr)") from None
    if output is not Output.table:
        emit(dump(state, output).rstrip("\n"))
        return
    out = console()
    for fwd in state["forwarders"]:
        underlay = f"{fwd.get('underlay-interface', '?')} {fwd.get('underlay-ip', '')}"
        out.print(f"forwarder {fwd['name']}: {fwd.get('wireguard', '?')} "
                  f"{fwd.get('wireguard-version', '')}, underlay {underlay.replace('_', ':')}")
    if not state["forwarders"]:
        out.print("no forwarder registered: is the forwarder running?")
    shown = connections.per_client(state["connections"])
    out.print(connections.table(shown))
    for conn in shown:
        out.print(f"  {conn.get('id', '')[:8]}: {connections.summary(conn)['path']}")


async def _healthy(url: str, timeout: float) -> bool:
    async with channel(url) as ch:
        reply = await health_pb2_grpc.HealthStub(ch).Check(
            health_pb2.HealthCheckRequest(), timeout=timeout
        )
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def _probe(url: str, timeout: float) -> bool:
    try:
        return run(_healthy(url, timeout))
    except (grpc.aio.AioRpcError, TimeoutError):
        return False


async def _enforces_policy(url: str, timeout: float) -> bool | None:
    """Whether the nsmgr at ``url`` reports (health of :data:`AUTHORIZATION_HEALTH`) that it
    enforces a policy; None when it does not say."""
    async with channel(url) as ch:
        try:
            reply = await health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(service=AUTHORIZATION_HEALTH), timeout=timeout
            )
        except grpc.aio.AioRpcError:
            return None
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def _authorization(nsmgr: str, nsmgr_up: bool, policy: str | None, timeout: float) -> str:
    """The authorization line of ``check``: what the nsmgr reports, else the configured file."""
    reported = run(_enforces_policy(nsmgr, timeout)) if nsmgr_up else None
    if reported is True:
        return f"ok   authorization: {nsmgr} enforces a policy file"
    state, text = authorization_state(policy)
    if reported is False or state is None:
        _, text = authorization_state(None)
        where = f"{nsmgr} reports " if reported is False else ""
        return f"WARN authorization: OFF: {where}{text}"
    return f"{'ok  ' if state else 'FAIL'} authorization: {text}"


PolicyOpt = Annotated[str | None, typer.Option(
    "--policy", envvar="VWIRE_NSMGR_POLICY", metavar="FILE",
    help="the node's policy file, checked when nsmgr does not report its own")]


def check(ctx: typer.Context, nsmgr: NsmgrOpt = DEFAULT_NSMGR, policy: PolicyOpt = None) -> None:
    """Verify this node: components up, data plane, registry, WireGuard, MTU, authorization
    (with hints)."""
    timeout = options(ctx).timeout
    registry = options(ctx).registry
    wg_go = shutil.which("wireguard-go")
    kernel_wg = Path("/sys/module/wireguard").exists()
    nsmgr_up = _probe(nsmgr, timeout)
    forwarders: list[dict[str, Any]] = []
    if nsmgr_up:  # an nsmgr that cannot list them shows as "no forwarder" below
        with contextlib.suppress(grpc.aio.AioRpcError, TimeoutError):
            forwarders = run(_node_state(nsmgr, timeout))["forwarders"]
    mtus = [f"{f['name']}: underlay {f.get('underlay-interface', '?')}" for f in forwarders]
    checks = [  # (what, passed, shown when it passed, hint when it failed)
        ("WireGuard", bool(wg_go or kernel_wg),
         "kernel module" if kernel_wg else f"wireguard-go at {wg_go}",
         "install wireguard-go (scripts/setup.sh) or load the wireguard kernel module"),
        ("registry", _probe(registry, timeout), f"{registry} is serving",
         f"{registry} does not answer: start `python -m registry` or set --registry"),
        ("nsmgr", nsmgr_up, f"{nsmgr} is serving",
         f"{nsmgr} does not answer: start `python -m nsmgr` or set --nsmgr"),
        ("forwarder", bool(forwarders),
         ", ".join(f"{f['name']} ({f.get('wireguard', '?')})" for f in forwarders),
         "no forwarder registered with nsmgr: start `python -m forwarder` on this node"),
        ("underlay", bool(mtus), "; ".join(mtus),
         "unknown until a forwarder registers (it reports its underlay interface)"),
    ]
    for what, passed, shown, hint in checks:
        emit(f"{'ok  ' if passed else 'FAIL'} {what}: {shown if passed else hint}")
    authorization = _authorization(nsmgr, nsmgr_up, policy, timeout)
    emit(authorization)
    if authorization.startswith("WARN"):
        typer.echo("WARNING: authorization is OFF on this node: any local process may use any "
                   "network service and register any endpoint", err=True)
    if not all(passed for _, passed, _, _ in checks) or authorization.startswith("FAIL"):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add the node commands to the root command."""
    for command in (connect, close, status, check):
        app.command(help=command.__doc__)(command)
