"""The external-host router (``python -m external``): plain-WireGuard hosts reach services.

An external host (a router, a laptop, an on-prem server) runs none of the fabric. The operator
registers it with ``nsmctl external add NAME --service S --public-key K``; this process, running
on a node of the domain beside its nsmgr (in the multi-cloud lab: the gateway's node), sees the
request in the registry and builds, per host, a router namespace ``<netns_prefix><NAME>`` holding
a WireGuard device (the host is its only peer; its UDP socket listens on this node's
``public_address`` at the host's port) and a vWire to the service, with forwarding between them.
The host has stable addresses of its own and of the service, mapped 1:1 onto the vWire's by
NAT in the router namespace, so its file survives heals and restarts. ``nsmctl external config
NAME`` prints the host's wg-quick file from the status record this process publishes. Records
and their encoding: :mod:`sdk.external`; one host: :mod:`external.host`; the namespace:
:mod:`external.router`; lasting keys and ports: :mod:`external.state`; the process:
:mod:`external.app`. Guide: docs/external.md.

Lab code starts it like any process::

    python -m external --public-address 10.250.0.1 --registry unix://REG.sock \\
        --nsmgr unix://NSMGR.sock --netns-prefix vwl-x- --state-dir DIR \\
        --svid-dir SVID --nsmgr-id spiffe://lab.vwire/nsmgr/nsmgr-n1

in the node's namespace (the WireGuard sockets are born there).
"""
