output "nodes" {
  description = "Every node: domain, public and private address, whether it is its domain's gateway."
  value = merge([
    for d, m in { aws = module.aws.nodes, gcp = module.gcp.nodes, azure = module.azure.nodes } : {
      for name, n in m : name => merge(n, { domain = d, gateway = module.plan.nodes[name].gateway })
    }
  ]...)
}

output "paths" {
  description = "The tunnel MTU of every pair of nodes."
  value       = { for k, p in module.plan.paths : k => p.tunnel_mtu }
}

output "try_it" {
  description = "What to run next."
  value       = <<-EOT
    On aws-1 (ssh admin@${module.aws.public_addresses[module.plan.domains["aws"].gateway]}): nsmctl get nse --domain gcp
    From a workload on aws-2: nsmctl connect kernel://db@gcp/nsm0
    Your laptop as an external host: on aws-1 run `nsmctl external add laptop --service db --public-key "$(wg pubkey < laptop.key)"`,
    then `nsmctl external config laptop > wg-vwire.conf` and on the laptop `wg-quick up ./wg-vwire.conf`.
  EOT
}
