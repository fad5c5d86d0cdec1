output "nodes" {
  description = "Every simulated node: domain, cloud, NAT, whether it is its domain's gateway node."
  value       = { for name, n in module.plan.nodes : name => { domain = n.domain, cloud = n.cloud, nat = n.nat, gateway = n.gateway } }
}

output "gateways" {
  description = "The gateway node of every domain (in the lab the gateway itself runs in the domain's router namespace)."
  value       = { for name, d in module.plan.domains : name => d.gateway }
}

output "path_mtus" {
  description = "The tunnel MTU of every pair of nodes, as the lab's forwarders compute it."
  value       = { for key, p in module.plan.paths : key => p.tunnel_mtu }
}

output "try_it" {
  description = "What to run next."
  value       = <<-EOT
    ${var.nsmctl} lab status                 # domains, nodes, clients with their paths and MTU
    ${var.nsmctl} lab status -o json         # the same for scripts
    terraform destroy -auto-approve          # removes every namespace, process and file
  EOT
  depends_on  = [terraform_data.lab]
}
