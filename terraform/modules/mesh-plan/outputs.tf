output "domains" {
  description = "Per domain: cloud, trust domain, underlay MTU, overlay prefix, nodes and gateway node (null for a floating domain)."
  value       = local.domains
}

output "nodes" {
  description = "Per node: domain, cloud, whether it is the gateway, NAT kind, keepalive seconds, underlay MTU and firewall ingress rules."
  value       = local.nodes
}

output "cloud_init" {
  description = "Per node: its first-boot user data (a shell script: the node bootstrap with the node's settings). Holds no key: keys are made on the node."
  value       = local.cloud_init
}

output "paths" {
  description = "Per pair of nodes (\"a:b\", a < b): underlay and tunnel MTU, whether the path crosses the internet, whether either side can reach the other."
  value       = local.path_mtus
}

output "external_hosts" {
  description = "Per external host: its domain, service, the gateway node it peers with, the tunnel MTU and keepalive for its WireGuard config."
  value = {
    for name, host in var.external_hosts : name => {
      domain     = host.domain
      service    = host.service
      gateway    = local.domains[host.domain].gateway
      tunnel_mtu = min(local.domains[host.domain].underlay_mtu, var.internet_mtu) - local.overhead
      keepalive  = 25
    }
  }
}

output "wireguard_ports" {
  description = "The tunnels' UDP port range, as given."
  value       = var.wireguard_ports
}

output "gateway_port" {
  description = "The gateways' TCP port, as given."
  value       = var.gateway_port
}
