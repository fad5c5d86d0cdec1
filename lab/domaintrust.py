"""Identities of a lab with several domains: one trust domain per domain, federated.

:class:`DomainTrust` keeps, under the lab's state directory, a CA per domain
(``ca-<domain>``, trust domain ``<domain>.vwire``) and the SVIDs it issued
(``identities-<domain>/<kind>/<name>``, where that domain's renewal agent keeps them fresh).
:meth:`DomainTrust.init` makes the CAs and federates every one with every other, so a
process of one domain verifies the SPIFFE IDs of the others against their own roots; every
SVID directory gets the federated bundles with the SVID (:func:`write_svid_set`).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from lab.fabric import SVID_TTL
from sdk.security.ca import CertificateAuthority
from sdk.security.federation import write_svid_set
from sdk.security.tls import server_name


class DomainTrust:
    """See the module docstring."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.cas: dict[str, CertificateAuthority] = {}

    @staticmethod
    def trust_domain(domain: str) -> str:
        return f"{domain}.vwire"

    def ca_dir(self, domain: str) -> Path:
        return self.state_dir / f"ca-{domain}"

    def identities_dir(self, domain: str) -> Path:
        return self.state_dir / f"identities-{domain}"

    def spiffe_id(self, domain: str, kind: str, name: str) -> str:
        return f"spiffe://{self.trust_domain(domain)}/{kind}/{name}"

    def init(self, domains: Iterable[str]) -> None:
        """A new CA per domain, each federated with every other."""
        for domain in domains:
            self.cas[domain] = CertificateAuthority.init(self.ca_dir(domain),
                                                         self.trust_domain(domain))
        for name, ca in self.cas.items():
            for other, foreign in self.cas.items():
                if other != name:
                    ca.federate(foreign.bundle)

    def identity(self, domain: str, kind: str, name: str, directory: Path | None = None
                 ) -> Path:
        """Issue the SVID of process ``name`` of ``kind`` in ``domain`` (with the federated
        bundles of every other domain) into ``directory`` (default: where the domain's renewal
        agent keeps it fresh); returns the directory."""
        ca = self.cas.get(domain) or CertificateAuthority.load(self.ca_dir(domain))
        self.cas[domain] = ca
        directory = directory or self.identities_dir(domain) / kind / name
        svid = ca.issue(self.spiffe_id(domain, kind, name),
                        [server_name(self.trust_domain(domain))], ttl=SVID_TTL)
        write_svid_set(directory, svid, ca.trust)
        return directory
