"""Where nsc gets its identity: SVID files, or the node agent (pods).

* ``--svid-dir DIR``: the SVID files of :class:`sdk.security.source.FileSvidSource`.
* ``--svid-from-agent SOCKET`` (default: ``$SPIFFE_ENDPOINT_SOCKET``, which the admission
  webhook sets in the containers it injects): :class:`sdk.security.workload.AgentSvidSource`
  asks the node agent, which attests this process by its peer credentials; the SVID and its key
  stay in this process's memory (nothing is written to disk) and are renewed at half their
  lifetime. The agent also says the node nsmgr's SPIFFE ID, used when ``--nsmgr-id`` is not
  given.

``--svid-dir`` wins when both are given; with neither, nsc signs nothing. No socket at the
agent's address (a cluster without the node agent: the webhook sets the variable anyway) is a
warning, and nsc signs nothing: whether unsigned paths are accepted is the nsmgr's decision. An
agent that answers but refuses (this process is in no pod) is an error.
"""

from __future__ import annotations

import os
from pathlib import Path

import structlog

from sdk.security.source import FileSvidSource, SvidSource
from sdk.security.workload import ENV_SOCKET, AgentSvidSource, socket_path

__all__ = ["ENV_SOCKET", "svid_source"]


def svid_source(svid_dir: str, agent: str, nsmgr_id: str) -> tuple[SvidSource | None, str]:
    """(the SVID source, the nsmgr's SPIFFE ID) for these flags (see the module docstring)."""
    if svid_dir:
        return FileSvidSource(Path(svid_dir)), nsmgr_id
    if agent and not os.path.exists(socket_path(agent)):
        structlog.get_logger("nsc").warning(
            "no node agent: running without an SVID (paths are not signed)", agent=agent)
    elif agent:
        source = AgentSvidSource(agent)
        return source, nsmgr_id or source.hints.get("nsmgr_id", "")
    return None, nsmgr_id
