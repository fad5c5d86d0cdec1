# Every node's first-boot user data: the node's settings as the environment of the project's
# bootstrap script (deploy/bootstrap/node.sh, the same file `nsmctl node join` documents and the
# lab runs), the domains file that tells gateways where the other domains' gateways are, and the
# script itself. No key: the node makes its own.
locals {
  bootstrap_script = file("${path.module}/../../../deploy/bootstrap/node.sh")

  domains_file = { for d in local.domain_names : d => yamlencode({
    domains = {
      for other, address in var.gateway_addresses : other => {
        gateway      = "tcp://${address}:${var.gateway_port}"
        trust_domain = local.domains[other].trust_domain
      } if other != d
    }
  }) }

  node_env = { for name, node in local.nodes : name => merge(
    {
      VWIRE_NODE_NAME          = name
      VWIRE_DOMAIN             = node.domain
      VWIRE_ROLE               = node.gateway ? "gateway" : "node"
      VWIRE_REGISTRY           = "tcp://${local.nodes[local.domains[node.domain].gateway].private_ip}:${var.registry_port}"
      VWIRE_GATEWAY            = "tcp://${local.nodes[local.domains[node.domain].gateway].private_ip}:${var.gateway_port}"
      VWIRE_ADVERTISE          = "tcp://${node.private_ip}:5001"
      VWIRE_NAT                = node.nat
      VWIRE_SITE               = node.domain
      VWIRE_WAN_MTU            = tostring(var.internet_mtu)
      VWIRE_TRUST_DOMAIN       = node.trust_domain
      VWIRE_IDENTITY_DIR       = "/etc/vwire/identity"
      VWIRE_DOMAINS_FILE       = "/etc/vwire/domains.yaml"
      VWIRE_PACKAGE            = var.bootstrap.package
      VWIRE_UNDERLAY_INTERFACE = var.bootstrap.underlay_interface
    },
    contains(keys(var.bootstrap.join_tokens), name) ? { VWIRE_JOIN_TOKEN = var.bootstrap.join_tokens[name] } : {},
  ) }

  cloud_init = { for name, env in local.node_env : name => join("\n", concat(
    [
      "#!/bin/sh",
      "# vwire node ${name} of domain ${env.VWIRE_DOMAIN}: first-boot user data rendered by terraform/modules/mesh-plan",
      "set -eu",
    ],
    [for key in sort(keys(env)) : "export ${key}='${env[key]}'"],
    [
      "mkdir -p /etc/vwire",
      "cat > /etc/vwire/domains.yaml <<'VWIRE_DOMAINS'",
      trimspace(local.domains_file[env.VWIRE_DOMAIN]),
      "VWIRE_DOMAINS",
      "# --- deploy/bootstrap/node.sh ---",
      local.bootstrap_script,
    ],
  )) }
}
