output "nodes" {
  description = "Per node: its public (1:1 NAT) address, private address and VM id."
  value = {
    for name, vm in azurerm_linux_virtual_machine.node : name => {
      public_ip   = azurerm_public_ip.node[name].ip_address
      private_ip  = azurerm_network_interface.node[name].private_ip_address
      instance_id = vm.id
    }
  }
}

output "gateway_addresses" {
  description = "The gateway node's public address (one element), for mesh-plan's gateway_addresses."
  value       = [for name, n in var.nodes : azurerm_public_ip.node[name].ip_address if n.gateway]
}
