locals {
  cloud_mtu = { aws = 9001, gcp = 1460, azure = 1500, "on-prem" = 1500 }
  overhead  = var.underlay_ip_version == 4 ? 60 : 80

  domain_names = sort(keys(var.domains))
  node_names   = sort(keys(var.nodes))

  nodes_of = { for d in local.domain_names : d => sort([for n, node in var.nodes : n if node.domain == d]) }

  domains = {
    for i, name in local.domain_names : name => {
      cloud          = var.domains[name].cloud
      floating       = var.domains[name].floating
      trust_domain   = coalesce(var.domains[name].trust_domain, name)
      underlay_mtu   = coalesce(var.domains[name].underlay_mtu, local.cloud_mtu[var.domains[name].cloud])
      overlay_prefix = cidrsubnet(var.overlay_cidr, 16 - tonumber(split("/", var.overlay_cidr)[1]), i)
      subnet_cidr    = coalesce(var.domains[name].subnet_cidr, cidrsubnet(var.underlay_cidr, 24 - tonumber(split("/", var.underlay_cidr)[1]), i))
      nodes          = local.nodes_of[name]
      gateway        = var.domains[name].floating ? null : coalesce(var.domains[name].gateway, local.nodes_of[name][0])
    }
  }

  # A path between two nodes of one site keeps the site's MTU; a path between sites crosses the
  # internet. The tunnel MTU is the path's minus WireGuard's overhead, the same on both ends.
  node_pairs = flatten([
    for i, a in local.node_names : [
      for b in slice(local.node_names, i + 1, length(local.node_names)) : {
        a = a, b = b, same_site = var.nodes[a].domain == var.nodes[b].domain
      }
    ]
  ])
  paths = {
    for p in local.node_pairs : "${p.a}:${p.b}" => {
      nodes            = [p.a, p.b]
      crosses_internet = !p.same_site
      reachable        = p.same_site || var.nodes[p.a].nat != "masquerade" || var.nodes[p.b].nat != "masquerade"
      underlay_mtu = (p.same_site ? local.domains[var.nodes[p.a].domain].underlay_mtu : min(
        local.domains[var.nodes[p.a].domain].underlay_mtu, local.domains[var.nodes[p.b].domain].underlay_mtu, var.internet_mtu
      ))
    }
  }
  path_mtus = { for key, p in local.paths : key => merge(p, { tunnel_mtu = p.underlay_mtu - local.overhead }) }

  wireguard_rule = {
    name     = "wireguard"
    protocol = "udp"
    ports    = "${var.wireguard_ports.first}-${var.wireguard_ports.last}"
    from     = var.underlay_ip_version == 4 ? ["0.0.0.0/0"] : ["::/0"]
  }
  ssh_rules = length(var.ssh_cidrs) == 0 ? [] : [{ name = "ssh", protocol = "tcp", ports = "22", from = var.ssh_cidrs }]

  nodes = {
    for name in local.node_names : name => {
      domain       = var.nodes[name].domain
      cloud        = local.domains[var.nodes[name].domain].cloud
      trust_domain = local.domains[var.nodes[name].domain].trust_domain
      gateway      = local.domains[var.nodes[name].domain].gateway == name
      nat          = var.nodes[name].nat
      keepalive    = var.nodes[name].nat == "masquerade" ? 25 : 0
      underlay_mtu = local.domains[var.nodes[name].domain].underlay_mtu
      private_ip   = cidrhost(local.domains[var.nodes[name].domain].subnet_cidr, 10 + index(local.nodes_of[var.nodes[name].domain], name))
      # Tunnels come from anywhere (nodes behind NAT have no fixed address); the gateway's one
      # port only from the other domains' gateways, which the cloud modules resolve to addresses.
      firewall = concat(
        [local.wireguard_rule],
        local.domains[var.nodes[name].domain].gateway == name ? [{ name = "gateway", protocol = "tcp", ports = tostring(var.gateway_port), from = ["peer-gateways"] }] : [],
        local.ssh_rules,
      )
    }
  }
}
