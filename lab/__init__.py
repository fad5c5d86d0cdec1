"""The local multi-node lab: a fabric of several simulated nodes on one machine.

Each node is a network namespace joined to the others by a simulated underlay (a bridge in its
own namespace); each runs its own nsmgr and forwarder; one registry serves them all; an endpoint
runs on the last node and a client on the first. ``nsmctl lab up|status|down`` drive it.
"""
