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
  ssh_cidrs = var.ssh_cidrs
  bootstrap = { join_tokens = var.join_tokens }
  gateway_addresses = {
    aws   = one(module.aws.gateway_addresses)
    gcp   = one(module.gcp.gateway_addresses)
    azure = one(module.azure.gateway_addresses)
  }
}

locals {
  nodes_of = { for d in ["aws", "gcp", "azure"] : d => { for n, node in module.plan.nodes : n => node if node.domain == d } }
  gateway_cidrs = {
    for d, addresses in { aws = module.aws.gateway_addresses, gcp = module.gcp.gateway_addresses, azure = module.azure.gateway_addresses } :
    d => [for a in addresses : "${a}/32"]
  }
  peers_of = { for d in ["aws", "gcp", "azure"] : d => flatten([for other, cidrs in local.gateway_cidrs : cidrs if other != d]) }
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
