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

output "public_addresses" {
  description = "Every node's public address (node => IP), for mesh-plan's public_addresses."
  value       = { for name in keys(var.nodes) : name => azurerm_public_ip.node[name].ip_address }
}
