output "nodes" {
  description = "Per node: its public (1:1 NAT) address, private address and instance id."
  value = {
    for name, instance in aws_instance.node : name => {
      public_ip   = aws_eip.node[name].public_ip
      private_ip  = instance.private_ip
      instance_id = instance.id
    }
  }
}

output "gateway_addresses" {
  description = "The gateway node's public address (one element), for mesh-plan's gateway_addresses."
  value       = [for name, n in var.nodes : aws_eip.node[name].public_ip if n.gateway]
}
