"""The registry process: stores NetworkService and NetworkServiceEndpoint records."""
