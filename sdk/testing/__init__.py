"""Test helpers for chain elements: check, inject errors, count, and a conformance check."""

from sdk.testing.conformance import conformance_problems
from sdk.testing.elements import Check, Count, InjectError, Respond

__all__ = ["Check", "Count", "InjectError", "Respond", "conformance_problems"]
