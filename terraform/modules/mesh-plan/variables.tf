variable "domains" {
  description = <<-EOT
    The domains of the mesh, by name: one cluster or cloud site each, with its own registry,
    gateway and trust domain. `cloud` is aws, gcp, azure or on-prem; `underlay_mtu` overrides the
    cloud's default (aws 9001, gcp 1460, azure 1500, on-prem 1500); `gateway` names the domain's
    gateway node (default: its first node by name); `trust_domain` defaults to the domain's name;
    `subnet_cidr` is the nodes' subnet (default: one /24 of `underlay_cidr` per domain, in name
    order; node N of the domain gets host 10+N); a `floating` domain only holds registrations and
    has no nodes.
  EOT
  type = map(object({
    cloud        = string
    underlay_mtu = optional(number)
    gateway      = optional(string)
    trust_domain = optional(string)
    subnet_cidr  = optional(string)
    floating     = optional(bool, false)
  }))

  validation {
    condition     = length(var.domains) > 0
    error_message = "domains: give at least one domain, e.g. { aws = { cloud = \"aws\" } }."
  }
  validation {
    condition     = alltrue([for name, _ in var.domains : can(regex("^[a-z]([a-z0-9-]{0,30}[a-z0-9])?$", name))])
    error_message = "domains: names must be DNS labels of 1-32 lower-case letters, digits or '-' (e.g. \"cloud-a\")."
  }
  validation {
    condition     = alltrue([for d in values(var.domains) : contains(["aws", "gcp", "azure", "on-prem"], d.cloud)])
    error_message = "domains: cloud must be one of aws, gcp, azure, on-prem."
  }
  validation {
    condition     = alltrue([for d in values(var.domains) : d.underlay_mtu == null ? true : (d.underlay_mtu >= 1280 && d.underlay_mtu <= 9216)])
    error_message = "domains: underlay_mtu must be between 1280 (the IPv6 minimum) and 9216 bytes."
  }
  validation {
    condition     = alltrue([for d in values(var.domains) : d.subnet_cidr == null ? true : can(regex("^[0-9.]+/(1[6-9]|2[0-7])$", d.subnet_cidr)) && can(cidrhost(d.subnet_cidr, 0))])
    error_message = "domains: subnet_cidr must be an IPv4 CIDR from /16 to /27, e.g. 10.10.0.0/24."
  }
}

variable "nodes" {
  description = <<-EOT
    The nodes (VMs that run nsmgr and forwarder), by name. `domain` names one of `domains`;
    `nat` says how the node is reached from other domains: one-to-one (a cloud public IP; the
    default), masquerade (behind a cloud NAT gateway: not reachable, keeps its tunnels alive every
    25 s) or none (a routable address of its own).
  EOT
  type = map(object({
    domain = string
    nat    = optional(string, "one-to-one")
  }))

  validation {
    condition     = alltrue([for name, _ in var.nodes : can(regex("^[a-z]([a-z0-9-]{0,30}[a-z0-9])?$", name))])
    error_message = "nodes: names must be DNS labels of 1-32 lower-case letters, digits or '-' (e.g. \"aws-1\")."
  }
  validation {
    condition     = alltrue([for n in values(var.nodes) : contains(keys(var.domains), n.domain)])
    error_message = "nodes: every node's domain must be one of the keys of var.domains."
  }
  validation {
    condition     = alltrue([for n in values(var.nodes) : contains(["none", "one-to-one", "masquerade"], n.nat)])
    error_message = "nodes: nat must be none, one-to-one or masquerade."
  }
  validation {
    condition = alltrue([
      for name, d in var.domains : d.floating ? !contains([for n in values(var.nodes) : n.domain], name) : contains([for n in values(var.nodes) : n.domain], name)
    ])
    error_message = "nodes: every domain needs at least one node, except a floating domain, which must have none."
  }
  validation {
    condition = alltrue([
      for name, d in var.domains : d.gateway == null ? true : try(var.nodes[d.gateway].domain == name, false)
    ])
    error_message = "domains: gateway must name a node of the same domain."
  }
  validation {
    condition = alltrue([
      for name, d in var.domains : d.floating || try(var.nodes[coalesce(d.gateway, sort([for n, node in var.nodes : n if node.domain == name])[0])].nat != "masquerade", true)
    ])
    error_message = "domains: a gateway must be reachable from other domains: its node cannot have nat = \"masquerade\" (set the domain's gateway to a node with a public address)."
  }
}

variable "external_hosts" {
  description = "Hosts that run no part of the fabric and reach `service` in `domain` with plain WireGuard, by name."
  type = map(object({
    domain  = string
    service = string
  }))
  default = {}

  validation {
    condition     = alltrue([for h in values(var.external_hosts) : contains(keys(var.domains), h.domain)])
    error_message = "external_hosts: every host's domain must be one of the keys of var.domains."
  }
  validation {
    condition     = alltrue([for h in values(var.external_hosts) : can(regex("^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?$", h.service))])
    error_message = "external_hosts: service must be a DNS-1123 name (lower-case letters, digits, '-' and '.')."
  }
}

variable "overlay_cidr" {
  description = "The IPv4 range the domains' overlay prefixes (one /16 each, in domain name order) are cut from."
  type        = string
  default     = "10.64.0.0/12"

  validation {
    condition     = can(cidrhost(var.overlay_cidr, 0)) && can(regex("^[0-9.]+/([0-9]|1[0-6])$", var.overlay_cidr))
    error_message = "overlay_cidr: give an IPv4 CIDR of /16 or shorter, e.g. 10.64.0.0/12."
  }
}

variable "underlay_cidr" {
  description = "The IPv4 range the domains' default node subnets (one /24 each, in domain name order) are cut from."
  type        = string
  default     = "10.128.0.0/16"

  validation {
    condition     = can(cidrhost(var.underlay_cidr, 0)) && can(regex("^[0-9.]+/([0-9]|1[0-9]|2[0-4])$", var.underlay_cidr))
    error_message = "underlay_cidr: give an IPv4 CIDR of /24 or shorter, e.g. 10.128.0.0/16."
  }
}

variable "internet_mtu" {
  description = "MTU of paths that leave a cloud site (across the internet)."
  type        = number
  default     = 1500

  validation {
    condition     = var.internet_mtu >= 1280 && var.internet_mtu <= 9216
    error_message = "internet_mtu: must be between 1280 and 9216 bytes."
  }
}

variable "underlay_ip_version" {
  description = "IP version of the underlay the tunnels run on (4 or 6): WireGuard costs 60 bytes over IPv4, 80 over IPv6."
  type        = number
  default     = 4

  validation {
    condition     = contains([4, 6], var.underlay_ip_version)
    error_message = "underlay_ip_version: must be 4 or 6."
  }
}

variable "wireguard_ports" {
  description = "The UDP port range of the tunnels (one port per vWire on a node)."
  type = object({
    first = number
    last  = number
  })
  default = { first = 51820, last = 52819 }

  validation {
    condition     = var.wireguard_ports.first >= 1024 && var.wireguard_ports.first <= var.wireguard_ports.last && var.wireguard_ports.last <= 65535
    error_message = "wireguard_ports: need 1024 <= first <= last <= 65535."
  }
}

variable "gateway_port" {
  description = "The TCP port of each domain's gateway: the domain's one exposed control-plane address."
  type        = number
  default     = 5005

  validation {
    condition     = var.gateway_port >= 1 && var.gateway_port <= 65535 && (var.gateway_port < var.wireguard_ports.first || var.gateway_port > var.wireguard_ports.last)
    error_message = "gateway_port: must be a port (1-65535) outside the wireguard_ports range."
  }
}

variable "registry_port" {
  description = "The TCP port of each domain's registry on its gateway node, reached from inside the domain only."
  type        = number
  default     = 5000

  validation {
    condition     = var.registry_port >= 1 && var.registry_port <= 65535 && var.registry_port != var.gateway_port && (var.registry_port < var.wireguard_ports.first || var.registry_port > var.wireguard_ports.last)
    error_message = "registry_port: must be a port (1-65535), not the gateway_port and outside the wireguard_ports range."
  }
}

variable "ssh_cidrs" {
  description = "Ranges allowed to reach the nodes' SSH port; empty (the default) opens no SSH."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.ssh_cidrs : can(cidrhost(c, 0)) && c != "0.0.0.0/0" && c != "::/0"])
    error_message = "ssh_cidrs: give CIDRs (SSH is never opened to the whole internet: 0.0.0.0/0 and ::/0 are refused)."
  }
}

variable "bootstrap" {
  description = <<-EOT
    How a node installs the fabric at first boot: `package` is the pip requirement to install
    (a version, a wheel URL or a git URL), `underlay_interface` the interface its tunnels use
    (eth0 on the clouds' Debian images), `join_tokens` a one-time join token per node (from
    `nsmctl node token create`; short-lived, so it may sit in the state: it is not a key).
  EOT
  type = object({
    package            = optional(string, "vwire-fabric")
    underlay_interface = optional(string, "eth0")
    join_tokens        = optional(map(string), {})
  })
  default = {}

  validation {
    condition     = can(regex("^[A-Za-z0-9][A-Za-z0-9._:/@+=~-]*$", var.bootstrap.package)) && can(regex("^[a-z][a-z0-9._-]{0,14}$", var.bootstrap.underlay_interface))
    error_message = "bootstrap: package must be a pip requirement without spaces or quotes, underlay_interface an interface name (e.g. eth0)."
  }
  validation {
    condition     = alltrue([for t in values(var.bootstrap.join_tokens) : length(t) <= 4096 && can(regex("^[A-Za-z0-9._~+/=-]+$", t))])
    error_message = "bootstrap.join_tokens: a token is 1-4096 printable characters without spaces or quotes, as printed by `nsmctl node token create`."
  }
}

variable "public_addresses" {
  description = <<-EOT
    Each node's public address (node => IP), once the cloud modules have made them (they make the
    addresses before the instances, so this does not loop). A one-to-one NAT node advertises its
    own for tunnels; the gateways' go into every node's domains file, so gateways find each
    other without DNS SRV records (a domain whose gateway has none is looked up by SRV,
    _vwire-gateway._tcp.<domain>).
  EOT
  type        = map(string)
  default     = {}

  validation {
    condition     = alltrue([for n, a in var.public_addresses : contains(keys(var.nodes), n) && can(cidrhost("${a}/32", 0))])
    error_message = "public_addresses: keys must be nodes of var.nodes and values IPv4 addresses."
  }
}

variable "signer_port" {
  description = "The TCP port of each domain's join signer (`nsmctl node signer`) on its gateway node, reached from inside the domain only."
  type        = number
  default     = 5006
}
