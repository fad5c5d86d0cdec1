"""The reference endpoint: provides network services with point-to-point IPAM."""
