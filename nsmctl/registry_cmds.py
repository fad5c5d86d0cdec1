"""Registry commands: ``get``, ``describe``, ``apply`` and ``delete`` of services and endpoints.

Every command is written once for both record kinds (see :mod:`nsmctl.kinds`); what differs in
output lives in :mod:`nsmctl.render`, what differs in input in :mod:`nsmctl.manifest`.
"""

from __future__ import annotations

import copy
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer

from api.proto.registry_pb2 import NetworkService, NetworkServiceEndpoint
from nsmctl import manifest, render
from nsmctl.client import RegistryClient, not_found
from nsmctl.context import (
    CliError,
    Options,
    console,
    emit,
    options,
    run,
    run_until_signalled,
)
from nsmctl.kinds import CliKind, KindWord, parse_kind
from nsmctl.render import Change, Output
from sdk.registry.domainnames import qualify
from sdk.registry.validate import check_name

KindArg = Annotated[
    KindWord,
    typer.Argument(
        metavar="KIND",
        case_sensitive=False,
        help="network services (ns) or endpoints (nse)",
        show_default=False,
    ),
]
NameArg = Annotated[str, typer.Argument(metavar="NAME", help="the record's name")]
DomainOpt = Annotated[
    str,
    typer.Option("--domain", metavar="DOMAIN",
                 help="another domain's records, through this domain's gateway (the registry's "
                      "--gateway); names are shown as NAME@DOMAIN"),
]
OutputOpt = Annotated[
    Output,
    typer.Option("--output", "-o", case_sensitive=False, help="output format"),
]


def _client(opts: Options) -> RegistryClient:
    return RegistryClient(opts.registry, opts.timeout)


def get(
    ctx: typer.Context,
    word: KindArg,
    name: Annotated[
        str | None, typer.Argument(metavar="NAME", help="only this record", show_default=False)
    ] = None,
    output: OutputOpt = Output.table,
    watch: Annotated[
        bool, typer.Option("--watch", "-w", help="after listing, stream every change (Ctrl-C ends)")
    ] = False,
    domain: DomainOpt = "",
) -> None:
    """List network services or endpoints, or show one."""
    opts, kind = options(ctx), parse_kind(word)
    name = in_domain(name or "", domain) or None
    if watch:
        if not run_until_signalled(_watch(opts, kind, name or "", output)):
            raise CliError("the registry ended the watch (is it restarting?)")
        return
    records = run(_list(opts, kind, name or ""))
    if name and not records:
        raise not_found(kind, name)
    if output is Output.table:
        if records:
            console().print(render.table(kind, records, time.time()))
        else:
            print(f"No {kind.title}s found.", file=sys.stderr)
        return
    data = [render.to_dict(record) for record in records]
    emit(render.dump(data[0] if name else data, output).rstrip("\n"))


async def _list(opts: Options, kind: CliKind[Any], name: str) -> list[Any]:
    async with _client(opts) as client:
        return await client.list(kind, name)


async def _watch(opts: Options, kind: CliKind[Any], name: str, output: Output) -> None:
    """Print every event until the stream ends; names seen decide ADDED vs MODIFIED."""
    known: set[str] = set()
    if output is Output.table:
        emit(render.watch_header(kind))
    async with _client(opts) as client:
        async for event in client.watch(kind, name):
            record_name = event.record.name
            if event.deleted:
                change = Change.deleted
                known.discard(record_name)
            else:
                change = Change.modified if record_name in known else Change.added
                known.add(record_name)
            if output is Output.table:
                emit(render.watch_line(kind, change, event.record, time.time()))
            else:
                emit(render.watch_event(change, event.record, output))


def in_domain(name: str, domain: str) -> str:
    """``name@domain`` (``@domain`` alone: every record of the domain); ``name`` without a
    domain."""
    if not domain:
        return name
    if "@" in name:
        raise CliError(f"{name!r} names its domain already: drop --domain or the '@...'")
    return f"{name}@{domain}"


def describe(ctx: typer.Context, word: KindArg, name: NameArg, domain: DomainOpt = "") -> None:
    """Show every field of one network service or endpoint."""
    kind = parse_kind(word)
    name = in_domain(name, domain)
    record = run(_get(options(ctx), kind, name))
    emit(render.describe(kind, record, time.time()))


async def _get(opts: Options, kind: CliKind[Any], name: str) -> Any:
    async with _client(opts) as client:
        return await client.get(kind, name)


def apply(
    ctx: typer.Context,
    filename: Annotated[
        str,
        typer.Option("--filename", "-f", metavar="FILE",
                     help="YAML manifest with one or more records ('-' reads stdin)"),
    ],
    domain: Annotated[
        str,
        typer.Option("--domain", metavar="DOMAIN",
                     help="publish the endpoints in floating domain DOMAIN through this "
                          "domain's gateway (as NAME@DOMAIN; requests for them come here)"),
    ] = "",
) -> None:
    """Create or replace the records of a YAML manifest (all validated before any is sent);
    says per record whether it was created, configured (and what changed, whose record it
    replaced) or unchanged, and what the registry adjusted."""
    if filename == "-":
        text, source = sys.stdin.read(), "<stdin>"
    else:
        try:
            text, source = Path(filename).read_text(encoding="utf-8"), filename
        except OSError as exc:
            raise CliError(f"cannot read {filename}: {exc.strerror or exc}") from None
    documents = manifest.load(text, source)
    if domain:
        check_name("domain", domain)
        documents = [replace(d, record=_qualified(d.record, domain)) for d in documents]
    run(_apply(options(ctx), documents))


def _qualified(record: NetworkService | NetworkServiceEndpoint,
               domain: str) -> NetworkService | NetworkServiceEndpoint:
    if isinstance(record, NetworkService):
        return qualify(record, domain)
    return qualify(record, domain)


#: Fields the registry manages itself: not compared when deciding whether a record changed.
MANAGED = ("expiration_time", "initial_registration_time", "path_ids")


def _changed_fields(old: Any, new: Any) -> list[str]:
    """The fields the operator sets that differ between two records of one kind."""
    fields = {f.name for f, _ in old.ListFields()} | {f.name for f, _ in new.ListFields()}
    return sorted(name for name in fields - set(MANAGED)
                  if render.field_value(old, name) != render.field_value(new, name))


def _adjusted(sent: Any, stored: Any) -> list[str]:
    """What the registry changed in what was sent (an endpoint's expiration time)."""
    if not hasattr(stored, "expiration_time") or not stored.HasField("expiration_time"):
        return []
    when = render.rfc3339(stored.expiration_time)
    if not sent.HasField("expiration_time"):
        return [f"expiration_time set to {when} (the registry's default lifetime: the endpoint "
                "must refresh its registration, or apply again)"]
    if stored.expiration_time != sent.expiration_time:
        return [f"expiration_time capped to {when} (the registry's maximum lifetime; asked "
                f"{render.rfc3339(sent.expiration_time)})"]
    return []


def _outcome(ref: str, before: Any | None, record: Any) -> str:
    """``created``, ``unchanged`` or ``configured`` (with what changed and whose record it
    replaced), as kubectl says it."""
    if before is None:
        return f"{ref} created"
    changed = _changed_fields(before, record)
    if not changed:
        return f"{ref} unchanged"
    owner = (f"registered by {before.path_ids[0]}" if before.path_ids
             else "registered before (by an endpoint, the lab or another apply)")
    return (f"{ref} configured: replaced the record {owner}; changed: {', '.join(changed)}")


async def _apply(opts: Options, documents: list[manifest.Document]) -> None:
    async with _client(opts) as client:
        for done, document in enumerate(documents):
            ref = document.kind.ref(document.name)
            try:
                existing = await client.list(document.kind, document.name)
                sent = copy.deepcopy(document.record)  # register may fill fields in
                stored = await client.register(document.kind, document.record)
            except Exception as exc:
                exc.add_note(f"while applying {ref}")
                if done:
                    exc.add_note(f"{done} of {len(documents)} records were applied before it")
                raise
            emit(_outcome(ref, existing[0] if existing else None, sent))
            for note in _adjusted(sent, stored):
                emit(f"  {note}")


def delete(ctx: typer.Context, word: KindArg, name: NameArg, domain: DomainOpt = "") -> None:
    """Remove a network service or endpoint from the registry (with --domain: withdraw an
    endpoint published in a floating domain)."""
    kind = parse_kind(word)
    name = in_domain(name, domain)
    run(_delete(options(ctx), kind, name))
    emit(f"{kind.ref(name)} deleted")


async def _delete(opts: Options, kind: CliKind[Any], name: str) -> None:
    async with _client(opts) as client:
        await client.unregister(kind, name)


def register(app: typer.Typer) -> None:
    """Add the registry commands to the root command."""
    app.command(help=get.__doc__)(get)
    app.command(help=describe.__doc__)(describe)
    app.command(help=apply.__doc__)(apply)
    app.command(help=delete.__doc__)(delete)
