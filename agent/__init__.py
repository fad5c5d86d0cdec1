"""The node agent (``python -m agent``): SVIDs for the node's workloads, attested by the
kernel's peer credentials of their unix-socket connection (see :mod:`agent.server`)."""
