"""Domains: names of the form ``name@domain`` and where each domain's gateway is.

A *domain* is one cluster or cloud site with its own registry; other domains reach it only
through its gateway. A network service or endpoint of another domain is named ``name@domain``
(``db@cloud-b``); a name without ``@``, or whose domain is the local one, is local
(:func:`split`, :func:`localize`). :data:`DEFAULT_DOMAIN` is the domain of a process that was
given none.

Resolution (:class:`Domains`): a domain's gateway comes from a static domains file first
(:class:`StaticDomains`), else from DNS: the SRV record ``_vwire-gateway._tcp.<domain>``
(:class:`SrvDomains`; NSM's registry proxy looks a domain up by SRV the same way, with its own
service label), and its trust domain from an optional TXT record of the same name,
``"trust_domain=<td>"`` (none: the local trust domain). dnspython is imported only when a
:class:`SrvDomains` is made (it costs a process ~6 MB resident that a node never given a domain
does not need). An unknown domain raises
:class:`sdk.errors.NotFound` naming both places looked in. The domains file is YAML (JSON is
YAML too)::

    domains:
      cloud-b: tcp://198.51.100.7:5005            # the gateway's address
      cloud-c: {gateway: "tcp://gw.c.example:5005", trust_domain: c.vwire}
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from sdk.errors import InvalidArgument, NotFound, Unavailable
from sdk.grpcutil import parse_address
from sdk.registry.validate import check_name
from sdk.security.spiffe import check_trust_domain

#: The domain of a process that was given none.
DEFAULT_DOMAIN = "local"
#: The SRV service label a domain's gateway is published under: ``_vwire-gateway._tcp.<domain>``.
SRV_SERVICE = "_vwire-gateway._tcp"


def split(name: str) -> tuple[str, str | None]:
    """``("db", "cloud-b")`` for ``db@cloud-b``; ``(name, None)`` for a name without ``@``."""
    base, has_domain, domain = name.rpartition("@")
    return (base, domain) if has_domain else (name, None)


def join(name: str, domain: str) -> str:
    """``name@domain``."""
    return f"{name}@{domain}"


def localize(name: str, own: str) -> str:
    """``name`` without its ``@own`` suffix: a name of the local domain is a local name."""
    base, domain = split(name)
    return base if domain == own else name


def remote_domain(name: str, own: str) -> str | None:
    """The domain ``name`` lives in when it is not ``own``, else None."""
    _, domain = split(name)
    return domain if domain is not None and domain != own else None


def srv_name(domain: str) -> str:
    """The DNS name of a domain's SRV record."""
    return f"{SRV_SERVICE}.{domain}"


@dataclass(frozen=True)
class Domain:
    """Where a domain is reached: its gateway's URL and, when known, its trust domain."""

    name: str
    gateway: str
    trust_domain: str = ""


class DomainResolver(Protocol):
    """Finds a domain's gateway."""

    async def resolve(self, domain: str) -> Domain:
        """The domain's gateway; NotFound when this resolver does not know it."""


class StaticDomains:
    """Domains from a YAML/JSON file (the module docstring shows its shape), read once.

    Raises InvalidArgument naming the file and the entry that is wrong."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.domains = _load(path)

    async def resolve(self, domain: str) -> Domain:
        found = self.domains.get(domain)
        if found is None:
            raise NotFound(f"domain {domain!r} is not in --domains-file {self.path}")
        return found


def _load(path: str) -> dict[str, Domain]:
    import yaml  # only when a domains file is read: ~0.9 MB resident in every server otherwise

    field = f"domains_file {path}"
    try:
        data: Any = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise InvalidArgument(field, f"cannot be read ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise InvalidArgument(field, f"is not YAML or JSON ({exc})") from None
    entries = data.get("domains") if isinstance(data, dict) else None
    if not isinstance(entries, dict):
        raise InvalidArgument(field, "must be a mapping with 'domains: {NAME: GATEWAY-URL}'")
    return {str(name): _entry(field, str(name), value) for name, value in entries.items()}


def _entry(field: str, name: str, value: Any) -> Domain:
    where = f"{field}: domains.{name}"
    check_name(where, name)
    if isinstance(value, str):
        value = {"gateway": value}
    if not isinstance(value, dict) or not isinstance(value.get("gateway"), str):
        raise InvalidArgument(where, "give the gateway's URL (tcp://host:port), or a mapping "
                                     "with 'gateway' and optionally 'trust_domain'")
    unknown = set(value) - {"gateway", "trust_domain"}
    if unknown:
        raise InvalidArgument(where, f"unknown keys {sorted(unknown)}: use gateway, trust_domain")
    parse_address(value["gateway"], f"{where}.gateway")
    trust_domain = str(value.get("trust_domain") or "")
    if trust_domain:
        check_trust_domain(trust_domain, f"{where}.trust_domain")
    return Domain(name, value["gateway"], trust_domain)


class SrvDomains:
    """Domains by DNS SRV (``_vwire-gateway._tcp.<domain>``), with dnspython's asyncio resolver.

    ``nameserver`` is ``host`` or ``host:port`` (empty: the system's resolvers). Of the answer,
    the record with the lowest priority and then the highest weight wins; its target and port
    become ``tcp://target:port``; a TXT record of the same name ``trust_domain=<td>`` names the
    domain's trust domain (optional). Answers are kept for the SRV record's TTL (at most
    ``max_cache`` seconds). NotFound when the SRV record does not exist; Unavailable when DNS
    does not answer."""

    def __init__(self, nameserver: str = "", timeout: float = 2.0, max_cache: float = 60.0,
                 clock: Any = time.monotonic) -> None:
        import dns.asyncresolver  # lazily: see the module docstring

        self.resolver = dns.asyncresolver.Resolver(configure=not nameserver)
        if nameserver:
            host, _, port = nameserver.rpartition(":") if _has_port(nameserver) else (
                nameserver, "", "53")
            self.resolver.nameservers = [host.strip("[]")]
            self.resolver.port = int(port)
        self.resolver.lifetime = timeout
        self.nameserver = nameserver or "the system's resolvers"
        self.max_cache = max_cache
        self.clock = clock
        self._cache: dict[str, tuple[float, Domain]] = {}

    async def resolve(self, domain: str) -> Domain:
        import dns.exception  # loaded already by __init__
        import dns.resolver

        cached = self._cache.get(domain)
        if cached is not None and cached[0] > self.clock():
            return cached[1]
        qname = srv_name(domain)
        try:
            answer = await self.resolver.resolve(qname, "SRV", search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            raise NotFound(f"domain {domain!r}: no SRV record {qname}") from None
        except (dns.exception.Timeout, dns.resolver.NoNameservers) as exc:
            raise Unavailable(
                f"domain {domain!r}: DNS ({self.nameserver}) did not answer for {qname}: {exc}"
            ) from None
        best = min(answer, key=lambda r: (r.priority, -r.weight))
        host = best.target.to_text(omit_final_dot=True)
        found = Domain(domain, f"tcp://{_bracketed(host)}:{best.port}",
                       await self._trust_domain(qname))
        ttl = min(float(answer.rrset.ttl if answer.rrset is not None else 0), self.max_cache)
        self._cache[domain] = (self.clock() + ttl, found)
        return found


    async def _trust_domain(self, qname: str) -> str:
        """``<td>`` of a TXT record ``trust_domain=<td>`` at ``qname`` ('' without one)."""
        import dns.exception  # loaded already by __init__
        import dns.resolver

        try:
            answer = await self.resolver.resolve(qname, "TXT", search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer, dns.resolver.NoNameservers,
                dns.exception.Timeout):
            return ""
        for record in answer:
            text = b"".join(record.strings).decode("ascii", "replace")
            key, _, value = text.partition("=")
            if key == "trust_domain" and value:
                return check_trust_domain(value, f"TXT {qname}")
        return ""


def _has_port(nameserver: str) -> bool:
    if nameserver.startswith("["):
        return "]:" in nameserver
    return nameserver.count(":") == 1


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class Domains:
    """The domains file first, then DNS SRV; either may be absent. NotFound names every place
    looked in, e.g. ``domain 'x': no SRV record _vwire-gateway._tcp.x and not in
    --domains-file F``."""

    def __init__(self, static: StaticDomains | None = None, srv: SrvDomains | None = None):
        self.static = static
        self.srv = srv

    async def resolve(self, domain: str) -> Domain:
        check_name("domain", domain)
        if self.static is not None and domain in self.static.domains:
            return self.static.domains[domain]
        places: list[str] = []
        if self.srv is not None:
            try:
                return await self.srv.resolve(domain)
            except NotFound:
                places.append(f"no SRV record {srv_name(domain)}")
        if self.static is not None:
            places.append(f"not in --domains-file {self.static.path}")
        if not places:
            places.append("no domains file and no DNS lookup configured")
        raise NotFound(f"domain {domain!r}: {' and '.join(places)}")
