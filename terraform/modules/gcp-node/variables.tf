variable "domain_name" {
  description = "The mesh domain these nodes belong to (a key of mesh-plan's `domains` output)."
  type        = string
}

variable "nodes" {
  description = "The domain's nodes: mesh-plan's `nodes` output filtered to this domain (name => node)."
  type = map(object({
    gateway      = bool
    nat          = string
    private_ip   = string
    underlay_mtu = number
    firewall = list(object({
      name     = string
      protocol = string
      ports    = string
      from     = list(string)
    }))
  }))

  validation {
    condition     = length(var.nodes) > 0
    error_message = "nodes: give at least one node (mesh-plan's nodes output, filtered to this domain)."
  }
  validation {
    condition     = alltrue([for n in values(var.nodes) : n.nat == "one-to-one"])
    error_message = "nodes: on GCP every node gets a static external address (nat = \"one-to-one\"); masquerading NAT is simulated by the local lab only."
  }
}

variable "cloud_init" {
  description = "Per node: its first-boot user data (mesh-plan's `cloud_init` output)."
  type        = map(string)

  validation {
    condition     = alltrue([for name in keys(var.nodes) : contains(keys(var.cloud_init), name)])
    error_message = "cloud_init: every node needs its user data (mesh-plan's cloud_init output)."
  }
  validation {
    # GCP limits one metadata value to 256 KB.
    condition     = alltrue([for text in values(var.cloud_init) : length(text) <= 262144])
    error_message = "cloud_init: a node's user data is over GCP's 256 KB metadata-value limit."
  }
}

variable "peer_gateway_cidrs" {
  description = "Addresses (/32) of the other domains' gateways: the only sources allowed to the gateway port."
  type        = list(string)
  default     = []
}

variable "project" {
  description = "The GCP project."
  type        = string
}

variable "region" {
  description = "The region of the subnet."
  type        = string
}

variable "zone" {
  description = "The zone of the instances (in the region)."
  type        = string
}

variable "subnet_cidr" {
  description = "The nodes' subnet: mesh-plan's `domains[DOMAIN].subnet_cidr` (the nodes' private_ip lie in it)."
  type        = string
}

variable "mtu" {
  description = "The VPC network's MTU: GCP's default 1460, or up to 8896 (mesh-plan's underlay MTU for the domain should match)."
  type        = number
  default     = 1460

  validation {
    condition     = var.mtu >= 1300 && var.mtu <= 8896
    error_message = "mtu: GCP VPC networks take 1300 to 8896 bytes."
  }
}

variable "machine_type" {
  description = "Machine type of every node."
  type        = string
  default     = "e2-small"
}

variable "image" {
  description = "Boot image of every node."
  type        = string
  default     = "debian-cloud/debian-12"
}

variable "labels" {
  description = "Labels added to every resource that takes them."
  type        = map(string)
  default     = {}
}
