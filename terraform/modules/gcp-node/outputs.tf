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

output "public_addresses" {
  description = "Every node's public address (node => IP), for mesh-plan's public_addresses."
  value       = { for name in keys(var.nodes) : name => google_compute_address.node[name].address }
}
