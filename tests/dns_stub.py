"""A tiny DNS server on loopback UDP for tests: answers SRV (and TXT) queries from dicts,
NXDOMAIN otherwise, and records the queries it got (``name TYPE``)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import cast

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset


@dataclass
class DnsStub:
    """``records``: name (with the final dot) → SRV lines ``"PRIORITY WEIGHT PORT TARGET."``."""

    records: dict[str, list[str]]
    ttl: int = 60
    txt: dict[str, list[str]] = field(default_factory=dict)  #: name → TXT strings
    queries: list[str] = field(default_factory=list)
    address: str = ""

    def answer(self, data: bytes) -> bytes:
        query = dns.message.from_wire(data)
        reply = dns.message.make_response(query)
        reply.flags |= dns.flags.AA
        question = query.question[0]
        name = question.name.to_text()
        kind = dns.rdatatype.to_text(question.rdtype)
        self.queries.append(f"{name} {kind}")
        table = {"SRV": self.records, "TXT": {
            n: [f'"{text}"' for text in texts] for n, texts in self.txt.items()}}.get(kind, {})
        lines = table.get(name)
        if lines is None:
            reply.set_rcode(dns.rcode.NXDOMAIN)
        else:
            reply.answer.append(dns.rrset.from_text_list(name, self.ttl, "IN", kind, lines))
        return reply.to_wire()


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, stub: DnsStub) -> None:
        self.stub = stub
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        self.transport.sendto(self.stub.answer(data), addr)


@contextlib.asynccontextmanager
async def dns_stub(records: dict[str, list[str]], ttl: int = 60,
                   txt: dict[str, list[str]] | None = None) -> AsyncIterator[DnsStub]:
    """Serve ``records`` (and ``txt``) on 127.0.0.1 (a free port); ``stub.address`` is
    ``host:port``."""
    stub = DnsStub(records, ttl, txt or {})
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: _Protocol(stub), local_addr=("127.0.0.1", 0))
    host, port = transport.get_extra_info("sockname")[:2]
    stub.address = f"{host}:{port}"
    try:
        yield stub
    finally:
        transport.close()
