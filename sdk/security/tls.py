"""mTLS for gRPC: server and channel credentials built from an :class:`SvidSource`.

Contract:
- :func:`server_credentials` makes server credentials that require a client certificate and
  verify it against the source's bundle. They rotate without a restart: every new TLS handshake
  asks the source for its current material and picks up a new SVID or bundle (gRPC's dynamic SSL
  credentials); connections already open keep their session. gRPC Python offers no knob for the
  TLS version: gRPC core allows TLS 1.2 and 1.3 and negotiates 1.3 with gRPC peers (tested).
- :func:`channel_credentials` makes client credentials from the material at call time (client
  certificate = this process's SVID, roots = the bundle). A channel keeps the certificate it was
  made with for new connections: when the source changes (``subscribe``), drop pooled channels
  so the next call makes a new one with the new SVID.
- Servers are checked by host name: their SVIDs carry a DNS SAN, and the channel overrides the
  target name with it (``grpc.ssl_target_name_override``); :func:`server_name` is the fabric's
  default name, ``vwire.<trust-domain>``.
- Federation: a client dialing a server of another trust domain names it (``trust_domain``) and
  trusts only that trust domain's bundle for the handshake, so no other root can vouch for the
  server; a trust domain its source does not federate with is refused before dialing
  (Unauthenticated naming it and ``nsmctl ca federate``). :func:`server_credentials` trusts
  only the local roots unless ``federated``; servers that accept peers of federated trust
  domains use :class:`sdk.security.peertrust.PeerTrust` (credentials plus the per-call check
  that a peer's certificate is signed by a root of its own trust domain).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import grpc

from sdk.channels import OWN_CONNECTION, insecure_factory
from sdk.grpcutil import ListenAddress, parse_address
from sdk.security.source import Material, SvidSource

SERVER_NAME_PREFIX = "vwire."


def server_name(trust_domain: str) -> str:
    """The DNS name every fabric server SVID carries by default: ``vwire.<trust-domain>``."""
    return SERVER_NAME_PREFIX + trust_domain


def _server_config(material: Material, federated: bool) -> grpc.ServerCertificateConfiguration:
    return grpc.ssl_server_certificate_configuration(
        [(material.svid.key_pem(), material.svid.chain_pem())],
        root_certificates=material.trust.pem() if federated else material.bundle.pem(),
    )


def server_credentials(source: SvidSource, federated: bool = False) -> grpc.ServerCredentials:
    """Credentials for ``add_secure_port`` that follow ``source``; see the module docstring.
    ``federated``: trust the roots of every federated trust domain too — only for servers
    that check each peer with :class:`sdk.security.peertrust.PeerTrust` (which calls this)."""
    lock = threading.Lock()
    first = source.current()
    served = [first.generation]

    def fetch() -> grpc.ServerCertificateConfiguration | None:
        # Called by gRPC for each handshake, in a gRPC thread; None keeps the current config.
        material = source.current()
        with lock:
            if material.generation == served[0]:
                return None
            served[0] = material.generation
        return _server_config(material, federated)

    # The stubs say the fetcher must return a configuration; gRPC documents None as "no change".
    fetcher: Callable[[], grpc.ServerCertificateConfiguration] = fetch  # type: ignore[assignment]
    return grpc.dynamic_ssl_server_credentials(
        _server_config(first, federated), fetcher, require_client_authentication=True
    )


def channel_credentials(
    material: Material, trust_domain: str | None = None
) -> grpc.ChannelCredentials:
    """Client credentials presenting ``material``'s SVID and trusting only the bundle of the
    server's ``trust_domain`` (default: the local one); a trust domain that is not federated
    raises Unauthenticated naming it and the fix."""
    roots = material.trust.require(trust_domain or material.bundle.trust_domain)
    return grpc.ssl_channel_credentials(
        root_certificates=roots.pem(),
        private_key=material.svid.key_pem(),
        certificate_chain=material.svid.chain_pem(),
    )


def secure_channel(
    address: ListenAddress | str,
    source: SvidSource,
    name: str | None = None,
    trust_domain: str | None = None,
) -> grpc.aio.Channel:
    """An mTLS channel to a TCP address of a server in ``trust_domain`` (default: the local
    one); the server must present a certificate of that trust domain's roots for ``name``
    (default: :func:`server_name` of that trust domain)."""
    parsed = parse_address(address) if isinstance(address, str) else address
    material = source.current()
    domain = trust_domain or material.bundle.trust_domain
    target_name = name or server_name(domain)
    return grpc.aio.secure_channel(
        parsed.target,
        channel_credentials(material, domain),
        options=[("grpc.ssl_target_name_override", target_name), OWN_CONNECTION],
    )


class SecureChannelFactory:
    """A :data:`sdk.channels.ChannelFactory`: mTLS for TCP addresses, plain for Unix sockets
    (local, protected by file permissions). The server's trust domain is ``trust_domain_of``
    the address when given and it names one (e.g. a gateway's pool: other domains' gateways
    by their domain's trust domain), else ``trust_domain``, else the local one."""

    def __init__(
        self,
        source: SvidSource,
        name: str | None = None,
        trust_domain: str | None = None,
        trust_domain_of: Callable[[ListenAddress], str | None] | None = None,
    ) -> None:
        self.source = source
        self.name = name
        self.trust_domain = trust_domain
        self.trust_domain_of = trust_domain_of

    def __call__(self, address: ListenAddress) -> grpc.aio.Channel:
        if address.scheme == "unix":
            return insecure_factory(address)
        domain = self.trust_domain_of(address) if self.trust_domain_of is not None else None
        return secure_channel(address, self.source, self.name, domain or self.trust_domain)
