"""``nsmctl external``: external hosts that reach a service over plain WireGuard.

* ``external add NAME --service S [--public-key K | --generate-key]`` registers the request in
  the domain's registry (:mod:`sdk.external`) and waits (``--wait``) until the ``external``
  process serving the domain has set the host up. Refused, leaving nothing: a bad name, service
  or key; a service no endpoint provides; a name already added. If the host cannot be set up
  in time, the request is removed again. With ``--generate-key`` nsmctl makes the key pair and
  prints the host's whole wg-quick file with its private key, once: it is stored nowhere.
* ``external add NAME --serve S --address A --public-key K`` registers the reverse direction:
  an external *server* at tunnel address A provides S; the router serves a proxy endpoint for S,
  so pods and VMs request S as usual and reach A through it.
* ``external config NAME [--key-file PATH]`` prints the host's wg-quick file; its private key
  stays on the host (``wg genkey``), loaded by ``PostUp`` from ``--key-file``.
* ``external list [-o table|json|yaml]`` lists hosts with their service and state.
* ``external remove NAME`` revokes the host and waits until its tunnel is gone.
"""

from __future__ import annotations

import asyncio
import base64
import time
from dataclasses import asdict
from typing import Annotated, Any

import typer
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from nsmctl.client import RegistryClient
from nsmctl.context import CliError, Options, options, run
from nsmctl.kinds import NS, NSE
from nsmctl.render import Output, dump
from sdk.errors import AlreadyExists, InvalidArgument, NotFound
from sdk.external import (
    ExternalHost,
    ExternalStatus,
    check_host_address,
    check_name,
    check_service,
    is_request,
    is_status,
    parse_key,
    parse_request,
    parse_status,
    render_config,
    request_name,
    request_record,
    status_name,
)

external_app = typer.Typer(
    help="External hosts: reach a network service over plain WireGuard.", no_args_is_help=True)

WAIT = 30.0
NameArg = Annotated[str, typer.Argument(metavar="NAME", help="the external host's name")]
WaitOpt = Annotated[float, typer.Option(
    "--wait", metavar="SECONDS", help=f"how long to wait for the external process "
    f"(default {WAIT:g})", show_default=False)]


def _usage(exc: InvalidArgument) -> typer.BadParameter:
    return typer.BadParameter(str(exc))


def generate_keypair() -> tuple[str, str]:
    """A fresh WireGuard ``(private, public)`` key pair, base64."""
    private = X25519PrivateKey.generate()
    raw = private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return base64.b64encode(raw).decode(), base64.b64encode(public).decode()


async def _status(client: RegistryClient, name: str, wait: float) -> ExternalStatus:
    """Wait until host ``name``'s status is set; TimeoutError after ``wait`` seconds."""
    async def follow() -> ExternalStatus:
        async for event in client.watch(NS, status_name(name)):
            if not event.deleted:
                return parse_status(event.record)
        raise CliError("the registry ended the watch")

    return await asyncio.wait_for(follow(), wait)


async def _gone(client: RegistryClient, name: str, wait: float) -> bool:
    """Whether host ``name``'s status record is gone within ``wait`` seconds (bounded poll:
    a watch cannot tell "already gone" from "not yet")."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while await client.list(NS, status_name(name)):
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.1)  # bounded poll of the registry
    return True


async def _service_known(client: RegistryClient, service: str) -> bool:
    if await client.list(NS, service):
        return True
    return any(service in nse.network_service_names for nse in await client.list(NSE))


async def _add(opts: Options, host: ExternalHost, wait: float) -> ExternalStatus:
    async with RegistryClient(opts.registry, opts.timeout) as client:
        if await client.list(NS, request_name(host.name)):
            raise AlreadyExists(f"name: external host {host.name!r} exists: pick another name "
                                f"or 'nsmctl external remove {host.name}' first")
        if not host.serve and not await _service_known(client, host.service):
            raise NotFound(f"service: no endpoint in the registry provides {host.service!r}: "
                           "check the name with 'nsmctl get nse'")
        await client.register(NS, request_record(host))
        try:
            status = await _status(client, host.name, wait)
        except BaseException as exc:
            await client.unregister(NS, request_name(host.name))
            if isinstance(exc, TimeoutError):
                raise CliError(f"no external process set {host.name} up within {wait:g} s (is "
                               "'python -m external' running for this registry?): request "
                               "removed") from None
            raise
        if status.state != "ready":
            await client.unregister(NS, request_name(host.name))
            await _gone(client, host.name, wait)  # the router withdraws its status record
            error = status.error or "unknown"
            raise CliError(f"the external process could not set {host.name} up ({error}; its "
                           "log says why): request removed")
        return status


@external_app.command("add")
def add(
    ctx: typer.Context,
    name: NameArg,
    service: Annotated[str, typer.Option("--service", metavar="SERVICE",
                                         help="the network service the host reaches")] = "",
    serve: Annotated[str, typer.Option(
        "--serve", metavar="SERVICE", help="instead: the service the host provides (an "
        "external server)")] = "",
    address: Annotated[str, typer.Option(
        "--address", metavar="IP", help="with --serve: the server's address in its tunnel")
    ] = "",
    public_key: Annotated[str, typer.Option(
        "--public-key", metavar="KEY", help="the host's WireGuard public key (wg pubkey)")] = "",
    generate_key: Annotated[bool, typer.Option(
        "--generate-key", help="make the host's key pair here and print its private key once "
        "(stored nowhere)")] = False,
    wait: WaitOpt = WAIT,
) -> None:
    """Register external host NAME for SERVICE (or serving one) and wait until it can connect."""
    try:
        host, private = _host(name, service, serve, address, public_key, generate_key)
    except InvalidArgument as exc:
        raise _usage(exc) from None
    status = run(_add(options(ctx), host, wait))
    if private:
        typer.echo(render_config(status, private_key=private), nl=False)
        typer.echo("# the private key above is shown once and stored nowhere", err=True)
    else:
        typer.echo(f"external host {name} added: 'nsmctl external config {name}' prints its "
                   "WireGuard configuration")


def _host(name: str, service: str, serve: str, address: str, public_key: str,
          generate_key: bool) -> tuple[ExternalHost, str]:
    """The request the options describe, and the private key made here ('' if none)."""
    check_name(name, "NAME")
    if bool(service) == bool(serve):
        raise InvalidArgument("--service", "give --service (the host reaches it) or --serve "
                              "(the host provides it)")
    if serve:
        check_service(serve, "--serve")
        address = check_host_address(address, "--address")
    else:
        check_service(service, "--service")
        if address:
            raise InvalidArgument("--address", "only with --serve")
    if generate_key == bool(public_key):
        raise InvalidArgument("--public-key", "give the host's public key, or --generate-key")
    private = ""
    if generate_key:
        private, public_key = generate_keypair()
    return ExternalHost(name, service or serve, parse_key(public_key, "--public-key"),
                        bool(serve), address), private


async def _get(opts: Options, name: str) -> ExternalStatus:
    async with RegistryClient(opts.registry, opts.timeout) as client:
        if not await client.list(NS, request_name(name)):
            raise NotFound(f"external host {name!r} not found ('nsmctl external list')")
        found = await client.list(NS, status_name(name))
    if not found:
        raise CliError(f"external host {name} is not set up yet: is 'python -m external' "
                       "running for this registry?")
    return parse_status(found[0])


@external_app.command("config")
def config(
    ctx: typer.Context,
    name: NameArg,
    key_file: Annotated[str, typer.Option(
        "--key-file", metavar="PATH", help="where the host keeps its private key "
        "(default /etc/wireguard/NAME.key)", show_default=False)] = "",
) -> None:
    """Print external host NAME's wg-quick configuration."""
    try:
        check_name(name, "NAME")
    except InvalidArgument as exc:
        raise _usage(exc) from None
    status = run(_get(options(ctx), name))
    if status.state != "ready":
        raise CliError(f"external host {name} failed to set up ({status.error}): see the "
                       "external process's log, then remove and add it again")
    typer.echo(render_config(status, key_file=key_file or f"/etc/wireguard/{name}.key"), nl=False)


async def _list(opts: Options) -> list[dict[str, Any]]:
    async with RegistryClient(opts.registry, opts.timeout) as client:
        records = await client.list(NS)
    statuses: dict[str, ExternalStatus] = {}
    hosts: list[ExternalHost] = []
    for record in records:
        try:
            if is_status(record):
                status = parse_status(record)
                statuses[status.name] = status
            elif is_request(record):
                hosts.append(parse_request(record))
        except InvalidArgument:
            continue  # not ours, or malformed: not an external host
    return [_row(host, statuses.get(host.name)) for host in hosts]


def _row(host: ExternalHost, status: ExternalStatus | None) -> dict[str, Any]:
    row: dict[str, Any] = {"name": host.name, "service": host.service,
                           "role": "serves" if host.serve else "reaches",
                           "public_key": host.public_key,
                           "state": status.state if status else "pending"}
    if status is not None:
        shown = asdict(status)
        shown["endpoint"] = (f"{status.endpoint[0]}:{status.endpoint[1]}"
                             if status.endpoint else "")
        for field in ("name", "state", "public_key"):
            shown.pop(field)
        row["fabric_public_key"] = status.public_key
        row.update({k: list(v) if isinstance(v, tuple) else v for k, v in shown.items()})
    return row


def _cells(row: dict[str, Any]) -> tuple[str, str, str, str, str]:
    service = ("serves " if row["role"] == "serves" else "") + row["service"]
    state = row["state"] + (f" ({row['error']})" if row.get("error") else "")
    return (row["name"], service, state, row.get("endpoint", ""),
            ",".join(row.get("addresses", [])))


@external_app.command("list")
def list_(
    ctx: typer.Context,
    output: Annotated[Output, typer.Option("-o", "--output", help="table, json or yaml")
                      ] = Output.table,
) -> None:
    """List external hosts."""
    rows = run(_list(options(ctx)))
    if output is not Output.table:
        typer.echo(dump(rows, output).rstrip("\n"))
        return
    shown = [("NAME", "SERVICE", "STATE", "ENDPOINT", "ADDRESS")]
    shown += [_cells(r) for r in rows]
    widths = [max(len(row[i]) for row in shown) for i in range(5)]
    for row in shown:
        typer.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


async def _remove(opts: Options, name: str, wait: float) -> bool:
    async with RegistryClient(opts.registry, opts.timeout) as client:
        if not await client.list(NS, request_name(name)):
            raise NotFound(f"external host {name!r} not found ('nsmctl external list')")
        await client.unregister(NS, request_name(name))
        return await _gone(client, name, wait)


@external_app.command("remove")
def remove(ctx: typer.Context, name: NameArg, wait: WaitOpt = WAIT) -> None:
    """Revoke external host NAME and wait until its tunnel is gone."""
    try:
        check_name(name, "NAME")
    except InvalidArgument as exc:
        raise _usage(exc) from None
    started = time.monotonic()
    if not run(_remove(options(ctx), name, wait)):
        raise CliError(f"external host {name} is revoked, but no external process confirmed "
                       f"within {wait:g} s that its tunnel is gone")
    typer.echo(f"external host {name} removed ({time.monotonic() - started:.1f} s)")


def register(app: typer.Typer) -> None:
    """Add the ``external`` command group to the root command."""
    app.add_typer(external_app, name="external")

