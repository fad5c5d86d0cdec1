"""The gateway: a domain's one exposed address (registry proxy and request relay)."""
