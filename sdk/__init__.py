"""The fabric's SDK: chain core, common chain elements, registry elements and tools.

Platform-neutral: nothing here touches the kernel. Process packages (registry, nsmgr, forwarder)
assemble chains from these elements, read their settings and run servers.
"""
