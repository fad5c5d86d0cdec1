# Every node's first-boot user data: the node's settings as the environment of the project's
# bootstrap script (deploy/bootstrap/node.sh, which `nsmctl node join` documents and the lab's
# VMs run), the domains file that tells a gateway where the other domains' gateways are, and the
# script itself. No key: with a join token the node makes its keys and asks the domain's join
# signer for its certificates; without one it waits for SVIDs in /etc/vwire/identity.
locals {
  bootstrap_script = file("${path.module}/../../../deploy/bootstrap/node.sh")

  gateway_of = { for d, domain in local.domains : d => domain.gateway if !domain.floating }

  domains_file = { for d in keys(local.gateway_of) : d => yamlencode({
    domains = {
      for other, gateway in local.gateway_of : other => {
        gateway      = "tcp://${var.public_addresses[gateway]}:${var.gateway_port}"
        trust_domain = local.domains[other].trust_domain
      } if other != d && contains(keys(var.public_addresses), gateway)
    }
  }) }

  # Settings of the node's nsmgr and forwarder beyond what the script sets itself.
  process_settings = { for name, node in local.nodes : name => join(" ", concat(
    [
      "VWIRE_NSMGR_DOMAIN=${node.domain}",
      "VWIRE_NSMGR_GATEWAY=tcp://${local.nodes[local.gateway_of[node.domain]].private_ip}:${var.gateway_port}",
      "VWIRE_FORWARDER_SITE=${node.domain}",
      "VWIRE_FORWARDER_NAT=${node.nat}",
      "VWIRE_FORWARDER_WAN_MTU=${var.internet_mtu}",
    ],
    node.nat == "one-to-one" && contains(keys(var.public_addresses), name) ? ["VWIRE_FORWARDER_EXTERNAL_ADDRESS=${var.public_addresses[name]}"] : [],
  )) }

  node_env = { for name, node in local.nodes : name => merge(
    {
      VWIRE_NODE_NAME          = name
      VWIRE_ROLE               = node.gateway ? "gateway" : "node"
      VWIRE_TRUST_DOMAIN       = local.domains[node.domain].trust_domain
      VWIRE_REGISTRY           = "tcp://${local.nodes[local.gateway_of[node.domain]].private_ip}:${var.registry_port}"
      VWIRE_ADVERTISE          = "tcp://${node.private_ip}:5001"
      VWIRE_SETTINGS           = local.process_settings[name]
      VWIRE_PACKAGE            = var.bootstrap.package
      VWIRE_UNDERLAY_INTERFACE = var.bootstrap.underlay_interface
      VWIRE_DOMAINS_FILE       = "/etc/vwire/domains.yaml"
    },
    contains(keys(var.bootstrap.join_tokens), name) ? {
      VWIRE_JOIN_TOKEN = var.bootstrap.join_tokens[name]
      VWIRE_SIGNER     = "tcp://${local.nodes[local.gateway_of[node.domain]].private_ip}:${var.signer_port}"
    } : { VWIRE_IDENTITY_DIR = "/etc/vwire/identity" },
  ) }

  cloud_init = { for name, env in local.node_env : name => join("\n", concat(
    [
      "#!/bin/sh",
      "# vwire node ${name} of domain ${local.nodes[name].domain}: first-boot user data rendered by terraform/modules/mesh-plan",
      "set -eu",
    ],
    [for key in sort(keys(env)) : "export ${key}='${env[key]}'"],
    [
      "mkdir -p /etc/vwire",
      "cat > /etc/vwire/domains.yaml <<'VWIRE_DOMAINS'",
      trimspace(local.domains_file[local.nodes[name].domain]),
      "VWIRE_DOMAINS",
      "# --- deploy/bootstrap/node.sh ---",
      local.bootstrap_script,
    ],
  )) }
}
