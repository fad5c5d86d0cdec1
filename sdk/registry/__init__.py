"""Registry chain: core types, record kinds and the common registry elements."""

from sdk.registry.core import Event, Query, RegistryChain, RegistryCursor, RegistryElement

__all__ = ["Event", "Query", "RegistryChain", "RegistryCursor", "RegistryElement"]
