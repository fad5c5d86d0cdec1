"""The registry process: stores NetworkService and NetworkServiceEndpoint records."""

from sdk import lean

lean.start()
