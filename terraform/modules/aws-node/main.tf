locals {
  tags = merge(var.tags, { "vwire:domain" = var.domain_name })
  # One security group rule per (node role, rule, source); "peer-gateways" becomes the peers' /32s.
  rules = {
    for r in flatten([
      for role in ["node", "gateway"] : [
        for rule in distinct(flatten([for n in values(var.nodes) : n.firewall if n.gateway == (role == "gateway")])) : [
          for cidr in(contains(rule.from, "peer-gateways") ? var.peer_gateway_cidrs : rule.from) : {
            key = "${role}-${rule.name}-${cidr}", role = role, protocol = rule.protocol, ports = split("-", rule.ports), cidr = cidr
          }
        ]
      ]
    ]) : r.key => r
  }
}

resource "aws_vpc" "this" {
  cidr_block           = var.subnet_cidr
  enable_dns_hostnames = true
  tags                 = merge(local.tags, { Name = "vwire-${var.domain_name}" })
}

resource "aws_subnet" "nodes" {
  vpc_id            = aws_vpc.this.id
  cidr_block        = var.subnet_cidr
  availability_zone = var.availability_zone
  tags              = merge(local.tags, { Name = "vwire-${var.domain_name}-nodes" })
}

resource "aws_internet_gateway" "this" {
  vpc_id = aws_vpc.this.id
  tags   = local.tags
}

resource "aws_route_table" "public" {
  vpc_id = aws_vpc.this.id
  route {
    cidr_block = "0.0.0.0/0"
    gateway_id = aws_internet_gateway.this.id
  }
  tags = local.tags
}

resource "aws_route_table_association" "nodes" {
  subnet_id      = aws_subnet.nodes.id
  route_table_id = aws_route_table.public.id
}

resource "aws_security_group" "node" {
  for_each    = toset(["node", "gateway"])
  name        = "vwire-${var.domain_name}-${each.key}"
  description = "vwire ${each.key}s of domain ${var.domain_name}: tunnels from anywhere, the rest from the mesh plan"
  vpc_id      = aws_vpc.this.id
  tags        = local.tags
}

resource "aws_vpc_security_group_ingress_rule" "plan" {
  for_each          = local.rules
  security_group_id = aws_security_group.node[each.value.role].id
  ip_protocol       = each.value.protocol
  from_port         = tonumber(each.value.ports[0])
  to_port           = tonumber(element(each.value.ports, length(each.value.ports) - 1))
  cidr_ipv4         = each.value.cidr
  tags              = local.tags
}

resource "aws_vpc_security_group_ingress_rule" "inside_vpc" {
  for_each          = aws_security_group.node
  security_group_id = each.value.id
  ip_protocol       = "-1"
  cidr_ipv4         = var.subnet_cidr
  description       = "nodes of the domain reach each other (nsmgr, registry) inside the VPC"
  tags              = local.tags
}

resource "aws_vpc_security_group_egress_rule" "all" {
  for_each          = aws_security_group.node
  security_group_id = each.value.id
  ip_protocol       = "-1"
  cidr_ipv4         = "0.0.0.0/0"
  tags              = local.tags
}

resource "aws_instance" "node" {
  for_each                    = var.nodes
  ami                         = var.ami_id
  instance_type               = var.instance_type
  subnet_id                   = aws_subnet.nodes.id
  private_ip                  = each.value.private_ip
  vpc_security_group_ids      = [aws_security_group.node[each.value.gateway ? "gateway" : "node"].id]
  key_name                    = var.ssh_key_name
  user_data                   = var.cloud_init[each.key]
  user_data_replace_on_change = true
  # The forwarder routes vWire traffic: the instance must accept packets not addressed to it.
  source_dest_check = false
  metadata_options {
    http_tokens = "required"
  }
  tags = merge(local.tags, { Name = "vwire-${each.key}", "vwire:node" = each.key })
}

# The address exists before the instance, so other domains' plans (and this domain's cloud-init)
# can name it without a dependency cycle.
resource "aws_eip" "node" {
  for_each = var.nodes
  domain   = "vpc"
  tags     = merge(local.tags, { Name = "vwire-${each.key}" })
}

resource "aws_eip_association" "node" {
  for_each      = var.nodes
  instance_id   = aws_instance.node[each.key].id
  allocation_id = aws_eip.node[each.key].id
}
