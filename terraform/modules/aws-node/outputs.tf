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

output "public_addresses" {
  description = "Every node's public address (node => IP), for mesh-plan's public_addresses."
  value       = { for name in keys(var.nodes) : name => aws_eip.node[name].public_ip }
}
