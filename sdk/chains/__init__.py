"""Assembled chains: what every server, client and node manager is built from.

- :mod:`sdk.chains.server`: the prefix every NetworkService server starts with, and serving it.
- :mod:`sdk.chains.endpoint`: an endpoint (or any hop that ends or relays a connection: the
  forwarder) — the server prefix and the hop's own elements.
- :mod:`sdk.chains.nsmgr`: the node manager's NetworkService chain.
- :mod:`sdk.chains.client`: a client that keeps its connections refreshed and healed.

The processes only assemble these with their settings and serve them.
"""
