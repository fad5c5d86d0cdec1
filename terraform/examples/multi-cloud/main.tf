# Two nodes in each of AWS, GCP and Azure, one domain per cloud, and an external host (your
# laptop) that reaches the `db` service in the aws domain with plain WireGuard.

module "plan" {
  source = "../../modules/mesh-plan"

  domains = {
    aws   = { cloud = "aws" }
    gcp   = { cloud = "gcp" }
    azure = { cloud = "azure" }
  }
  nodes = {
    aws-1   = { domain = "aws" }
    aws-2   = { domain = "aws" }
    gcp-1   = { domain = "gcp" }
    gcp-2   = { domain = "gcp" }
    azure-1 = { domain = "azure" }
    azure-2 = { domain = "azure" }
  }
  external_hosts = {
    laptop = { domain = "aws", service = "db" }
  }
  ssh_cidrs        = var.ssh_cidrs
  bootstrap        = { join_tokens = var.join_tokens }
  public_addresses = local.public_addresses
}

locals {
  nodes_of         = { for d in ["aws", "gcp", "azure"] : d => { for n, node in module.plan.nodes : n => node if node.domain == d } }
  public_addresses = merge(module.aws.public_addresses, module.gcp.public_addresses, module.azure.public_addresses)
  # The gateway port of a domain opens to the other domains' gateways only.
  peers_of = { for d in ["aws", "gcp", "azure"] : d => [
    for other, domain in module.plan.domains : "${local.public_addresses[domain.gateway]}/32" if other != d
  ] }
}

module "aws" {
  source             = "../../modules/aws-node"
  domain_name        = "aws"
  subnet_cidr        = module.plan.domains["aws"].subnet_cidr
  nodes              = local.nodes_of["aws"]
  cloud_init         = module.plan.cloud_init
  peer_gateway_cidrs = local.peers_of["aws"]
  ami_id             = var.aws_ami_id
  instance_type      = "c6i.large" # jumbo frames (9001) between the two nodes
}

module "gcp" {
  source             = "../../modules/gcp-node"
  domain_name        = "gcp"
  subnet_cidr        = module.plan.domains["gcp"].subnet_cidr
  nodes              = local.nodes_of["gcp"]
  cloud_init         = module.plan.cloud_init
  peer_gateway_cidrs = local.peers_of["gcp"]
  project            = var.gcp_project
  region             = var.gcp_region
  zone               = var.gcp_zone
}

module "azure" {
  source               = "../../modules/azure-node"
  domain_name          = "azure"
  subnet_cidr          = module.plan.domains["azure"].subnet_cidr
  nodes                = local.nodes_of["azure"]
  cloud_init           = module.plan.cloud_init
  peer_gateway_cidrs   = local.peers_of["azure"]
  location             = var.azure_location
  resource_group_name  = "vwire-azure"
  admin_ssh_public_key = var.admin_ssh_public_key
}
