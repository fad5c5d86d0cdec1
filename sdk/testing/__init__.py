"""Public helpers for testing chains and elements (as NSM's sdk has its ``sandbox``).

- :mod:`sdk.testing.elements`: check, inject errors, count, respond;
- :mod:`sdk.testing.conformance`: the checks every element owes the chain;
- :mod:`sdk.testing.sandbox`: an in-process fabric of the sdk's chains on real gRPC servers.
"""

from sdk.testing.conformance import conformance_problems
from sdk.testing.elements import Check, Count, InjectError, Respond
from sdk.testing.sandbox import AcceptMechanism, CrossConnect, Sandbox, SandboxNode, request_for

__all__ = [
    "AcceptMechanism", "Check", "Count", "CrossConnect", "InjectError", "Respond", "Sandbox",
    "SandboxNode", "conformance_problems", "request_for",
]
