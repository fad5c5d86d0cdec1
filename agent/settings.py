"""Settings of the node agent (environment prefix ``VWIRE_AGENT_``)."""

from __future__ import annotations

from dataclasses import dataclass

from sdk.settings import setting

PREFIX = "VWIRE_AGENT_"


@dataclass(frozen=True)
class AgentSettings:
    socket: str = setting(
        "/var/run/vwire-agent/agent.sock",
        "the unix socket workloads ask on (mode 0666: any local process may ask; the agent "
        "decides who it is from the kernel's peer credentials)",
    )
    ca_dir: str = setting(
        "/etc/vwire/ca", "the trust domain's CA directory (root.key, root.crt, bundle.pem): the "
        "agent signs workload SVIDs with it",
    )
    pods: str = setting(
        "", "where pods are found: lab:DIR (the lab's pod records, one JSON file per pod) or "
        "kubernetes (this node's pods from the API server; the node's name from $NODE_NAME, or "
        "kubernetes:NODE)",
    )
    ttl: float = setting(600.0, "lifetime of the SVIDs it issues, seconds (short: clients renew "
                                "at half-life)")
    nsmgr_id: str = setting(
        "", "SPIFFE ID of this node's nsmgr, handed to workloads as a hint (the audience of "
        "their signed paths)",
    )
    log_level: str = setting("info", "debug, info, warning or error")
