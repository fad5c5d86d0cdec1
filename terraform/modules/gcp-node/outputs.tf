output "nodes" {
  description = "Per node: its public (1:1 NAT) address, private address and instance id."
  value = {
    for name, instance in google_compute_instance.node : name => {
      public_ip   = google_compute_address.node[name].address
      private_ip  = instance.network_interface[0].network_ip
      instance_id = instance.instance_id
    }
  }
}

output "gateway_addresses" {
  description = "The gateway node's public address (one element), for mesh-plan's gateway_addresses."
  value       = [for name, n in var.nodes : google_compute_address.node[name].address if n.gateway]
}
