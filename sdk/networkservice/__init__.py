"""NetworkService chain: core types and the common elements (one element per module)."""

from sdk.networkservice.core import NetworkServiceChain, NetworkServiceElement, NSCursor

__all__ = ["NSCursor", "NetworkServiceChain", "NetworkServiceElement"]
