"""The reference client: requests network services and keeps them refreshed and healed."""
