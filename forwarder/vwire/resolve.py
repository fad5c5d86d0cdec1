"""Resolve a spec's namespace reference through the kernel port, naming the spec field on error."""

from __future__ import annotations

from forwarder.kernel import KernelPort
from forwarder.kernel.netns import NamespaceRefused
from sdk.errors import InvalidArgument, NotFound


async def namespace(kernel: KernelPort, ref: str, field: str) -> str:
    """The path of the existing workload namespace ``ref``; NotFound/InvalidArgument/
    PermissionDenied (the forwarder's own or the host's namespace) mention ``field``."""
    try:
        return await kernel.resolve_netns(ref)
    except InvalidArgument as err:
        raise InvalidArgument(field, err.problem) from None
    except NamespaceRefused as err:
        raise NamespaceRefused(field, err.problem) from None
    except NotFound as err:
        raise NotFound(
            f"{field}: {err} (the workload's namespace is gone or the reference is wrong)"
        ) from None
