# The multi-cloud mesh of examples/multi-cloud, planned by the same mesh-plan module, built on
# this machine by the project's multi-cloud lab: each cloud a domain with its registry, gateway,
# trust domain and an underlay at the cloud's MTU; NAT (1:1 and masquerading) on a simulated
# internet; the VMs joined by the node bootstrap script; the external host configured from its
# exported WireGuard file. `terraform apply` builds it, `terraform destroy` removes it all.

module "plan" {
  source = "../../modules/mesh-plan"

  domains = {
    aws     = { cloud = "aws" }
    gcp     = { cloud = "gcp" }
    azure   = { cloud = "azure" }
    on-prem = { cloud = "on-prem" }
  }
  nodes = {
    aws-1   = { domain = "aws" }
    aws-2   = { domain = "aws", nat = "masquerade" }
    gcp-1   = { domain = "gcp", nat = "one-to-one" }
    azure-1 = { domain = "azure" }
    dc-1    = { domain = "on-prem", nat = "none" }
  }
  external_hosts = {
    laptop = { domain = "azure", service = "db" }
  }
}

locals {
  # The lab's topology file, from the plan: the same domains, clouds, MTUs, nodes and NAT.
  topology = yamlencode({
    wan_mtu = 1500
    domains = [for name, d in module.plan.domains : {
      name  = name
      cloud = d.cloud
      mtu   = d.underlay_mtu
      nodes = [for n in d.nodes : { name = n, nat = module.plan.nodes[n].nat }]
    }]
    services       = [for name, node in var.services : { name = name, node = node }]
    clients        = [for name, c in var.clients : { name = name, node = c.node, services = c.services }]
    vms            = [for name, vm in var.vms : { name = name, domain = vm.domain, services = vm.services }]
    external_hosts = [for name, h in module.plan.external_hosts : { name = name, domain = h.domain, service = h.service }]
  })
}

resource "terraform_data" "lab" {
  input = {
    nsmctl   = var.nsmctl
    topology = local.topology
  }

  provisioner "local-exec" {
    command     = <<-EOT
      set -eu
      file=$(mktemp --suffix=.yaml)
      trap 'rm -f "$file"' EXIT
      printf '%s' "$TOPOLOGY" > "$file"
      "$NSMCTL" lab up --topology "$file"
    EOT
    interpreter = ["/bin/sh", "-c"]
    environment = {
      NSMCTL   = self.input.nsmctl
      TOPOLOGY = self.input.topology
    }
  }

  provisioner "local-exec" {
    when        = destroy
    command     = "\"$NSMCTL\" lab down"
    interpreter = ["/bin/sh", "-c"]
    environment = {
      NSMCTL = self.input.nsmctl
    }
  }
}
