"""The node manager: front door for local clients and endpoints, relay between nodes."""

from sdk import lean

lean.start()
