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
    error_message = "nodes: on Azure every node gets a static public IP (nat = \"one-to-one\"); masquerading NAT is simulated by the local lab only."
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
    # Azure limits custom data to 64 KB after base64 encoding.
    condition     = alltrue([for text in values(var.cloud_init) : length(base64encode(text)) <= 65536])
    error_message = "cloud_init: a node's user data is over Azure's 64 KB custom-data limit (base64-encoded)."
  }
}

variable "peer_gateway_cidrs" {
  description = "Addresses (/32) of the other domains' gateways: the only sources allowed to the gateway port."
  type        = list(string)
  default     = []
}

variable "location" {
  description = "The Azure region, e.g. westeurope."
  type        = string
}

variable "resource_group_name" {
  description = "Resource group to create the domain's resources in (made by this module)."
  type        = string
}

variable "subnet_cidr" {
  description = "The nodes' subnet: mesh-plan's `domains[DOMAIN].subnet_cidr` (the nodes' private_ip lie in it)."
  type        = string
}

variable "vm_size" {
  description = "VM size of every node."
  type        = string
  default     = "Standard_B1ms"
}

variable "admin_username" {
  description = "The VMs' admin user."
  type        = string
  default     = "vwire"
}

variable "admin_ssh_public_key" {
  description = "SSH public key of the admin user (Azure requires one; SSH opens only where mesh-plan's ssh_cidrs say)."
  type        = string
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
