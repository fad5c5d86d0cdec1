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
    error_message = "nodes: on AWS every node gets an Elastic IP (nat = \"one-to-one\"); masquerading NAT is simulated by the local lab only."
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
    # AWS refuses user data over 16 KB before base64 encoding.
    condition     = alltrue([for text in values(var.cloud_init) : length(text) <= 16384])
    error_message = "cloud_init: a node's user data is over AWS's 16 KB user-data limit."
  }
}

variable "peer_gateway_cidrs" {
  description = "Addresses (/32) of the other domains' gateways: the only sources allowed to the gateway port."
  type        = list(string)
  default     = []
}

variable "subnet_cidr" {
  description = "The nodes' subnet: mesh-plan's `domains[DOMAIN].subnet_cidr` (the nodes' private_ip lie in it)."
  type        = string
}

variable "availability_zone" {
  description = "Availability zone of the subnet (default: the region's first)."
  type        = string
  default     = null
}

variable "instance_type" {
  description = "EC2 instance type of every node (jumbo frames need a current-generation type)."
  type        = string
  default     = "t3.small"
}

variable "ami_id" {
  description = "Debian 12 (or later) AMI of the region, e.g. from `aws ec2 describe-images --owners 136693071363 --filters Name=name,Values='debian-12-amd64-*'`."
  type        = string
}

variable "ssh_key_name" {
  description = "Name of an EC2 key pair for SSH (optional; SSH opens only where mesh-plan's ssh_cidrs say)."
  type        = string
  default     = null
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
