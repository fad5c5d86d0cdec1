"""Node commands: ``connect``, ``close``, ``status``, ``check``.

``connect`` starts a reference client (``python -m nsc``) in the background for a namespace and
waits until its connection is up; the client keeps it refreshed and healed until ``close``.
Clients started this way keep their state in :data:`CLIENTS_DIR` (one JSON file per client).
``status`` shows the connections a node's nsmgr knows, with their path, addresses, counters and
WireGuard handshake age, plus the node's forwarders and their data plane; counters and handshake
age are read from the forwarders when asked (:mod:`forwarder.counters`), not as of the last
refresh. Every command shows and takes the same connection ID (:mod:`nsmctl.connections`).
``check`` verifies a node and gives a hint for every failure.
"""

from __future__ import annotations

import asyncio
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
from api.proto.connection_pb2 import Connection, MonitorScopeSelector
from api.proto.registry_pb2 import NetworkServiceEndpoint
from nsmctl import connections, params
from nsmctl.context import CliError, console, emit, options, run
from nsmctl.render import Output, dump
from sdk.chain import CallContext
from sdk.errors import FabricError
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
NSMGR_HINT = "set --nsmgr or NSMCTL_NSMGR"

NsmgrOpt = Annotated[str, typer.Option("--nsmgr", envvar="NSMCTL_NSMGR", metavar="ADDR",
                                       callback=params.address,
                                       help="the node's nsmgr: unix:///path.sock or "
                                            "tcp://host:port")]
OutputOpt = Annotated[Output, typer.Option("--output", "-o", case_sensitive=False,
                                           metavar="table|json|yaml", help="output format")]


class NotAnNsmgr(CliError):
    """Something answers at the address, but it is not an nsmgr."""

    def __init__(self, address: str) -> None:
        super().__init__(f"{address} answers but is not an nsmgr (it has no connection "
                         f"monitor): is it another component's socket? ({NSMGR_HINT})")


def _nsmgr_error(nsmgr: str, exc: grpc.aio.AioRpcError) -> CliError:
    """A failed call to the nsmgr, in the operator's terms (the gRPC detail is the cause)."""
    code = exc.code()
    if code == grpc.StatusCode.UNIMPLEMENTED:
        return NotAnNsmgr(nsmgr)
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return CliError(f"cannot reach nsmgr at {nsmgr}: is it running? ({NSMGR_HINT})")
    return CliError(f"nsmgr at {nsmgr} refused: {exc.details() or code.name}")


def _client_states() -> list[dict[str, Any]]:
    states = []
    for path in sorted(CLIENTS_DIR.glob("*.json")):
        try:
            states.append({"file": str(path), **json.loads(path.read_text())})
        except (OSError, ValueError):
            continue
    return states


def _check_nsmgr(nsmgr: str, timeout: float) -> None:
    """Fail early, in the operator's terms, when nothing (or not an nsmgr) answers there."""
    try:
        run(asyncio.wait_for(monitor_connections(nsmgr, timeout), timeout))
    except grpc.aio.AioRpcError as exc:
        raise _nsmgr_error(nsmgr, exc) from None
    except TimeoutError:
        raise CliError(f"cannot reach nsmgr at {nsmgr}: is it running? ({NSMGR_HINT})") from None


def _client_failure(log: Path, code: int | None, debug: bool) -> CliError:
    """Why the client exited: its own last ``nsc: ...`` line (the whole log with --debug)."""
    lines = log.read_text(errors="replace").strip().splitlines() if log.exists() else []
    if debug and lines:
        print("\n".join(lines), file=sys.stderr)
    reasons = [line.removeprefix("nsc: ") for line in lines if line.startswith("nsc: ")]
    reason = reasons[-1] if reasons else (lines[-1] if lines else f"the client exited ({code})")
    return CliError(f"the connection failed: {reason}")


def connect(
    ctx: typer.Context,
    url: Annotated[str, typer.Argument(metavar="URL",
                                       help="NSM URL, e.g. kernel://secure-db/nsm0?app=web")],
    netns: Annotated[str, typer.Option("--netns", metavar="NS", callback=params.netns_path,
                                       help="network namespace to connect: a name from "
                                            "'ip netns list' or a path")],
    nsmgr: NsmgrOpt = DEFAULT_NSMGR,
    svid_dir: Annotated[str, typer.Option(
        "--svid-dir", metavar="DIR", callback=params.svid_dir,
        help="the client's SVID directory: sign path tokens (an nsmgr with an SVID requires "
             "them)")] = "",
    nsmgr_id: Annotated[str, typer.Option(
        "--nsmgr-id", metavar="SPIFFE-ID", callback=params.spiffe_id,
        help="SPIFFE ID of the node's nsmgr (with --svid-dir)")] = "",
    output: OutputOpt = Output.table,
) -> None:
    """Connect a network namespace to a network service and keep it connected."""
    parse(url)  # a bad URL fails here, with the part that is wrong
    if bool(svid_dir) != bool(nsmgr_id):
        raise CliError("give --svid-dir and --nsmgr-id together (the token is signed with the "
                       "client's SVID for the nsmgr's SPIFFE ID)")
    identity = ["--svid-dir", svid_dir, "--nsmgr-id", nsmgr_id] if svid_dir else []
    opts = options(ctx)
    _check_nsmgr(nsmgr, opts.timeout)
    CLIENTS_DIR.mkdir(parents=True, exist_ok=True)
    state = CLIENTS_DIR / f"{time.time_ns()}.json"
    log = state.with_suffix(".log")
    with open(log, "wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "nsc", url, "--nsmgr", nsmgr, "--netns", netns,
             "--state-file", str(state), "--timeout", str(opts.timeout), *identity],
            stdout=subprocess.DEVNULL, stderr=sink, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    deadline = time.monotonic() + opts.timeout + 5
    while not state.exists():
        if process.poll() is not None:
            failure = _client_failure(log, process.returncode, opts.debug)
            log.unlink(missing_ok=True)
            raise failure
        if time.monotonic() > deadline:
            process.terminate()
            raise CliError(f"no connection within {opts.timeout:g} s: see {log}")
        time.sleep(0.05)  # polling the client's state file, bounded by the deadline
    conns = json.loads(state.read_text())["connections"]
    if output is not Output.table:
        emit(dump(conns, output).rstrip("\n"))
        return
    console().print(connections.table(conns))
    short = connections.short_ids(connections.connection_id(c) for c in conns)
    for conn_id in short.values():
        emit(f"connected: close it with 'nsmctl close {conn_id}'")


def close(
    conn_id: Annotated[str, typer.Argument(metavar="ID",
                                           help="connection ID, or a unique start of it")],
) -> None:
    """Close a connection made with 'nsmctl connect' (stops its client)."""
    states = _client_states()
    owners = {connections.connection_id(c): s for s in states for c in s.get("connections", [])}
    try:
        full = connections.resolve(conn_id, owners)
    except connections.UnknownConnection as exc:
        raise CliError(f"{exc} made by 'nsmctl connect' is open ('nsmctl status' lists them)"
                       if not str(exc).startswith(repr(conn_id)) else str(exc)) from None
    owner = owners[full]
    pid = int(owner["pid"])
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        Path(owner["file"]).unlink(missing_ok=True)
    deadline = time.monotonic() + 10
    while Path(owner["file"]).exists() and time.monotonic() < deadline:
        time.sleep(0.05)  # the client removes its state file after closing
    Path(owner["file"]).with_suffix(".log").unlink(missing_ok=True)
    emit(f"connection {full} closed")


async def monitor_connections(url: str, timeout: float) -> list[Connection]:
    """The connections in the initial state of the monitor at ``url``."""
    async with channel(url) as ch:
        stream = connection_pb2_grpc.MonitorConnectionStub(ch).MonitorConnections(
            MonitorScopeSelector(), timeout=timeout
        )
        async for event in stream:
            stream.cancel()
            return list(event.connections.values())
    return []


async def registered_forwarders(nsmgr: str, timeout: float) -> list[dict[str, str]]:
    """The forwarders registered with the nsmgr: name, url and their data-plane labels."""
    async with channel(nsmgr) as ch:
        registry = RegistryChain([RemoteRegistry(ENDPOINT, ch)])
        query = Query(NetworkServiceEndpoint(network_service_names=[FORWARDER_SERVICE]))
        return [
            {"name": e.record.name, "url": e.record.url,
             **dict(e.record.network_service_labels[FORWARDER_SERVICE].labels)}
            async for e in registry.find(query, CallContext.with_timeout(timeout))
        ]


async def _forwarders(nsmgr: str, timeout: float) -> list[dict[str, str]]:
    """The forwarders registered with the nsmgr ([] when it does not list them)."""
    try:
        return await registered_forwarders(nsmgr, timeout)
    except FabricError:
        return []


async def forwarder_counters(forwarders: list[dict[str, str]], timeout: float
                    ) -> tuple[dict[str, dict[str, str]], list[str]]:
    """Counters read now from every forwarder (``{"name": ..., "url": ...}``, see
    :mod:`forwarder.counters`), by the forwarder's connection id, for
    :func:`nsmctl.connections.with_counters`; and the names of the forwarders that could not be
    asked. ``status`` and the lab's status use it."""
    counters: dict[str, dict[str, str]] = {}
    stale: list[str] = []
    for fwd in forwarders:
        try:
            conns = await asyncio.wait_for(monitor_connections(fwd["url"], timeout), timeout)
        except (grpc.aio.AioRpcError, TimeoutError, FabricError):
            stale.append(fwd["name"])
            continue
        for conn in conns:
            if conn.path.path_segments:
                counters[conn.id] = dict(conn.path.path_segments[0].metrics)
    return counters, stale


async def _node_state(nsmgr: str, timeout: float) -> dict[str, Any]:
    conns = [json_format.MessageToDict(c, preserving_proto_field_name=True)
             for c in await monitor_connections(nsmgr, timeout)]
    forwarders = await _forwarders(nsmgr, timeout)
    counters, stale = await forwarder_counters(forwarders, timeout)
    live = [connections.with_counters(c, counters) for c in redact_tokens(conns)]
    return {"nsmgr": nsmgr, "forwarders": forwarders, "counters_stale": stale,
            "connections": [{"connection_id": connections.connection_id(c), **c} for c in live]}


def _read_node(nsmgr: str, timeout: float) -> dict[str, Any]:
    try:
        return run(asyncio.wait_for(_node_state(nsmgr, timeout), timeout * 2))
    except grpc.aio.AioRpcError as exc:
        raise _nsmgr_error(nsmgr, exc) from None
    except TimeoutError:
        raise CliError(f"cannot reach nsmgr at {nsmgr}: is it running? ({NSMGR_HINT})") from None


def status(ctx: typer.Context, nsmgr: NsmgrOpt = DEFAULT_NSMGR,
           output: OutputOpt = Output.table) -> None:
    """Connections through this node: path, addresses, counters and handshake age (read from
    the forwarders now), plus the node's forwarders."""
    state = _read_node(nsmgr, options(ctx).timeout)
    if output is not Output.table:
        emit(dump(state, output).rstrip("\n"))
        return
    out = console()
    for fwd in state["forwarders"]:
        underlay = f"{fwd.get('underlay-interface', '?')} {fwd.get('underlay-ip', '')}"
        shared = ""
        if fwd.get("wireguard-device") == "shared":
            where = fwd.get("shared-namespace", "").replace("-", "/")  # proc-<pid>-fd-<n>
            shared = f", shared devices (nsenter --net=/{where})"
        out.print(f"forwarder {fwd['name']}: {fwd.get('wireguard', '?')} "
                  f"{fwd.get('wireguard-version', '')}, underlay {underlay.replace('_', ':')}"
                  f"{shared}")
    if not state["forwarders"]:
        out.print("no forwarder registered: is the forwarder running?")
    for name in state["counters_stale"]:
        out.print(f"counters of forwarder {name} are as of the last refresh (it did not answer)")
    shown = connections.per_client(state["connections"])
    out.print(connections.table(shown))
    for line in connections.paths(shown):
        out.print(line)


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


def _mtu_check(conns: list[dict[str, Any]]) -> tuple[bool, str, str]:
    """Every connection's MTU (``context.MTU``) is set and is the one its forwarders programmed
    (``mtu`` in their path segments' counters, as ``status`` shows them)."""
    if not conns:
        return True, "no connections yet (each one is checked once there is one)", ""
    wrong = []
    for conn in connections.per_client(conns):
        mtu = str(conn.get("context", {}).get("MTU", ""))
        programmed = {str(seg["metrics"]["mtu"])
                      for seg in conn.get("path", {}).get("path_segments", [])
                      if "mtu" in seg.get("metrics", {})}
        if not mtu or programmed - {mtu}:
            wrong.append(f"{connections.connection_id(conn)[:8]}: context {mtu or 'unset'}, "
                         f"programmed {','.join(sorted(programmed)) or 'unknown'}")
    if wrong:
        return False, "", ("connections whose MTU differs from what their forwarders set ("
                           + "; ".join(wrong) + "): close and connect them again")
    shown = sorted({str(c.get("context", {}).get("MTU")) for c in conns})
    return True, f"{len(conns)} connection hop(s), MTU {', '.join(shown)}", ""


def _nsmgr_check(nsmgr: str, timeout: float) -> tuple[bool, dict[str, Any] | None, str]:
    """Whether something answers health checks at ``nsmgr``; the node's state, or None and
    why not."""
    if not _probe(nsmgr, timeout):
        return False, None, f"{nsmgr} does not answer: start 'python -m nsmgr' or {NSMGR_HINT}"
    try:
        return True, _read_node(nsmgr, timeout), ""
    except CliError as exc:
        return True, None, str(exc)


def check(ctx: typer.Context, nsmgr: NsmgrOpt = DEFAULT_NSMGR, policy: PolicyOpt = None) -> None:
    """Verify this node: components up, data plane, registry, WireGuard, MTU, authorization
    (with hints)."""
    timeout = options(ctx).timeout
    registry = options(ctx).registry
    wg_go = shutil.which("wireguard-go")
    kernel_wg = Path("/sys/module/wireguard").exists()
    answers, state, nsmgr_problem = _nsmgr_check(nsmgr, timeout)
    forwarders: list[dict[str, Any]] = state["forwarders"] if state else []
    underlays = [f"{f['name']}: underlay {f.get('underlay-interface', '?')}" for f in forwarders]
    mtu_ok, mtu_shown, mtu_hint = _mtu_check(state["connections"] if state else [])
    checks = [  # (what, passed, shown when it passed, hint when it failed)
        ("WireGuard", bool(wg_go or kernel_wg),
         "kernel module" if kernel_wg else f"wireguard-go at {wg_go}",
         "install wireguard-go (scripts/setup.sh) or load the wireguard kernel module"),
        ("registry", _probe(registry, timeout), f"{registry} is serving",
         f"{registry} does not answer: start 'python -m registry' or set --registry "
         "(or NSMCTL_REGISTRY)"),
        ("nsmgr", state is not None, f"{nsmgr} is serving", nsmgr_problem),
        ("forwarder", bool(forwarders),
         ", ".join(f"{f['name']} ({f.get('wireguard', '?')})" for f in forwarders),
         "no forwarder registered with nsmgr: start 'python -m forwarder' on this node"),
        ("underlay", bool(underlays), "; ".join(underlays),
         "unknown until a forwarder registers (it reports its underlay interface)"),
        ("MTU", mtu_ok, mtu_shown, mtu_hint),
    ]
    for what, passed, shown, hint in checks:
        emit(f"{'ok  ' if passed else 'FAIL'} {what}: {shown if passed else hint}")
    authorization = _authorization(nsmgr, answers, policy, timeout)
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
