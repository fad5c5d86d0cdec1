# Plan-only runs: mesh-plan has no providers, so these run offline (`terraform test`).

variables {
  domains = {
    aws    = { cloud = "aws" }
    gcp    = { cloud = "gcp", gateway = "gcp-2" }
    azure  = { cloud = "azure", trust_domain = "azure.example" }
    onprem = { cloud = "on-prem", underlay_mtu = 9000 }
  }
  nodes = {
    aws-1    = { domain = "aws" }
    aws-2    = { domain = "aws", nat = "masquerade" }
    gcp-1    = { domain = "gcp", nat = "masquerade" }
    gcp-2    = { domain = "gcp" }
    azure-1  = { domain = "azure" }
    onprem-1 = { domain = "onprem", nat = "none" }
  }
  external_hosts = {
    laptop = { domain = "aws", service = "db" }
  }
}

run "domains_get_gateways_prefixes_and_cloud_mtus" {
  command = plan

  assert {
    condition     = output.domains["aws"].gateway == "aws-1" && output.domains["gcp"].gateway == "gcp-2"
    error_message = "the gateway is the named node, else the domain's first node by name"
  }
  assert {
    condition     = [for d in ["aws", "azure", "gcp", "onprem"] : output.domains[d].underlay_mtu] == [9001, 1500, 1460, 9000]
    error_message = "underlay MTU: aws 9001, azure 1500, gcp 1460, or the domain's own"
  }
  assert {
    condition     = [for d in ["aws", "azure", "gcp", "onprem"] : output.domains[d].overlay_prefix] == ["10.64.0.0/16", "10.65.0.0/16", "10.66.0.0/16", "10.67.0.0/16"]
    error_message = "one /16 of overlay_cidr per domain, in name order"
  }
  assert {
    condition     = output.domains["azure"].trust_domain == "azure.example" && output.domains["aws"].trust_domain == "aws"
    error_message = "the trust domain is the given one, else the domain's name"
  }
}

run "path_mtu_is_the_site_mtu_inside_a_cloud_and_the_internet_mtu_across" {
  command = plan

  assert {
    condition     = output.paths["aws-1:aws-2"].tunnel_mtu == 9001 - 60 && !output.paths["aws-1:aws-2"].crosses_internet
    error_message = "inside AWS the jumbo MTU minus WireGuard's 60 bytes"
  }
  assert {
    condition     = output.paths["gcp-1:gcp-2"].tunnel_mtu == 1400
    error_message = "inside GCP's default VPC 1460 - 60"
  }
  assert {
    condition     = output.paths["aws-1:gcp-2"].tunnel_mtu == 1400 && output.paths["aws-1:onprem-1"].tunnel_mtu == 1440
    error_message = "across sites the smallest of both ends and the internet's 1500, minus 60"
  }
  assert {
    condition     = output.paths["aws-1:gcp-2"].crosses_internet
    error_message = "a path between domains crosses the internet"
  }
  assert {
    condition     = !output.paths["aws-2:gcp-1"].reachable && output.paths["aws-1:gcp-1"].reachable && output.paths["aws-1:aws-2"].reachable
    error_message = "two nodes behind masquerading NAT in different domains cannot reach each other"
  }
}

run "nodes_get_fixed_private_addresses_and_user_data_that_names_their_registry" {
  command = plan
  variables {
    public_addresses = { aws-1 = "198.51.100.1", gcp-2 = "198.51.100.2", gcp-1 = "198.51.100.3" }
    bootstrap        = { join_tokens = { gcp-1 = "one.time.token" } }
  }

  assert {
    condition     = output.domains["gcp"].subnet_cidr == "10.128.2.0/24" && output.nodes["gcp-1"].private_ip == "10.128.2.10" && output.nodes["gcp-2"].private_ip == "10.128.2.11"
    error_message = "one /24 of underlay_cidr per domain in name order; node N of a domain gets host 10+N"
  }
  assert {
    condition     = strcontains(output.cloud_init["gcp-1"], "export VWIRE_REGISTRY='tcp://10.128.2.11:5000'") && strcontains(output.cloud_init["gcp-1"], "export VWIRE_ROLE='node'") && strcontains(output.cloud_init["gcp-2"], "export VWIRE_ROLE='gateway'")
    error_message = "a node's user data names its domain's registry on the gateway node, and its role"
  }
  assert {
    condition     = strcontains(output.cloud_init["azure-1"], "export VWIRE_TRUST_DOMAIN='azure.example'") && strcontains(output.cloud_init["gcp-2"], "export VWIRE_TRUST_DOMAIN='gcp'")
    error_message = "a gateway node makes its domain's CA for the domain's trust domain"
  }
  assert {
    condition     = strcontains(output.cloud_init["gcp-1"], "tcp://198.51.100.1:5005")
    error_message = "the domains file names the other domains' gateways"
  }
  assert {
    condition     = !strcontains(output.cloud_init["gcp-1"], "198.51.100.2") && strcontains(output.cloud_init["gcp-1"], "VWIRE_JOIN_TOKEN='one.time.token'") && !strcontains(output.cloud_init["gcp-2"], "VWIRE_JOIN_TOKEN='")
    error_message = "a domains file leaves its own domain out; a join token goes to its node only"
  }
  assert {
    condition     = strcontains(output.cloud_init["gcp-1"], "VWIRE_SIGNER='tcp://10.128.2.11:5006'") && strcontains(output.cloud_init["gcp-2"], "VWIRE_IDENTITY_DIR='/etc/vwire/identity'")
    error_message = "with a join token the node asks its domain's join signer; without one it waits for SVIDs"
  }
  assert {
    condition     = strcontains(output.cloud_init["gcp-2"], "VWIRE_NSMGR_DOMAIN=gcp VWIRE_NSMGR_GATEWAY=tcp://10.128.2.11:5005 VWIRE_FORWARDER_SITE=gcp VWIRE_FORWARDER_NAT=one-to-one VWIRE_FORWARDER_WAN_MTU=1500 VWIRE_FORWARDER_EXTERNAL_ADDRESS=198.51.100.2")
    error_message = "the node's nsmgr learns its domain and gateway, its forwarder its site, NAT, WAN MTU and public address"
  }
  assert {
    condition     = !strcontains(output.cloud_init["gcp-1"], "EXTERNAL_ADDRESS=") && strcontains(output.cloud_init["gcp-1"], "VWIRE_FORWARDER_NAT=masquerade")
    error_message = "a node behind a masquerading NAT advertises no public address"
  }
  assert {
    condition     = alltrue([for text in values(output.cloud_init) : startswith(text, "#!/bin/sh\n") && strcontains(text, "nsmctl") && !strcontains(text, "PRIVATE KEY")])
    error_message = "the user data is the bootstrap shell script, without key material"
  }
}

run "ipv6_underlay_costs_80_bytes" {
  command = plan
  variables {
    underlay_ip_version = 6
  }
  assert {
    condition     = output.paths["aws-1:aws-2"].tunnel_mtu == 9001 - 80
    error_message = "WireGuard over IPv6 costs 80 bytes"
  }
}

run "firewall_opens_the_tunnel_ports_to_all_and_the_gateway_port_to_peers_only" {
  command = plan

  assert {
    condition     = alltrue([for n in values(output.nodes) : [for r in n.firewall : r if contains(r.from, "0.0.0.0/0")] == [{ name = "wireguard", protocol = "udp", ports = "51820-52819", from = ["0.0.0.0/0"] }]])
    error_message = "the WireGuard range, and nothing else, is open to the world on every node"
  }
  assert {
    condition     = [for n, node in output.nodes : n if length([for r in node.firewall : r if r.name == "gateway"]) > 0] == ["aws-1", "azure-1", "gcp-2", "onprem-1"]
    error_message = "only gateway nodes open the gateway port"
  }
  assert {
    condition     = alltrue([for n in values(output.nodes) : length([for r in n.firewall : r if r.name == "ssh"]) == 0])
    error_message = "no SSH unless ssh_cidrs is given"
  }
}

run "masquerading_nodes_keep_their_tunnels_alive" {
  command = plan
  assert {
    condition     = output.nodes["aws-2"].keepalive == 25 && output.nodes["aws-1"].keepalive == 0
    error_message = "keepalive 25 s behind a masquerading NAT (GCP drops idle UDP after 30 s), none otherwise"
  }
}

run "external_hosts_peer_with_their_domains_gateway" {
  command = plan
  assert {
    condition     = output.external_hosts["laptop"] == { domain = "aws", service = "db", gateway = "aws-1", tunnel_mtu = 1440, keepalive = 25 }
    error_message = "an external host peers with its domain's gateway over the internet's MTU"
  }
}

run "floating_domain_has_no_gateway" {
  command = plan
  variables {
    domains = {
      aws   = { cloud = "aws" }
      float = { cloud = "on-prem", floating = true }
    }
    nodes          = { aws-1 = { domain = "aws" } }
    external_hosts = {}
  }
  assert {
    condition     = output.domains["float"].gateway == null && length(output.domains["float"].nodes) == 0
    error_message = "a floating domain holds registrations only"
  }
}

run "unknown_cloud_is_refused" {
  command = plan
  variables {
    domains        = { aws = { cloud = "aws" }, x = { cloud = "ibm" } }
    nodes          = { aws-1 = { domain = "aws" }, x-1 = { domain = "x" } }
    external_hosts = {}
  }
  expect_failures = [var.domains]
}

run "bad_domain_name_is_refused" {
  command = plan
  variables {
    domains        = { "Cloud_A" = { cloud = "aws" } }
    nodes          = { a-1 = { domain = "Cloud_A" } }
    external_hosts = {}
  }
  expect_failures = [var.domains]
}

run "mtu_out_of_range_is_refused" {
  command = plan
  variables {
    domains        = { aws = { cloud = "aws", underlay_mtu = 100000 } }
    nodes          = { aws-1 = { domain = "aws" } }
    external_hosts = {}
  }
  expect_failures = [var.domains]
}

run "node_in_unknown_domain_is_refused" {
  command = plan
  variables {
    nodes = { aws-1 = { domain = "aws" }, lost-1 = { domain = "nowhere" } }
  }
  expect_failures = [var.nodes]
}

run "bad_nat_is_refused" {
  command = plan
  variables {
    nodes = { aws-1 = { domain = "aws", nat = "full-cone" } }
  }
  expect_failures = [var.nodes]
}

run "domain_without_nodes_is_refused" {
  command = plan
  variables {
    nodes          = { aws-1 = { domain = "aws" } }
    external_hosts = {}
  }
  expect_failures = [var.nodes]
}

run "gateway_of_another_domain_is_refused" {
  command = plan
  variables {
    domains        = { aws = { cloud = "aws", gateway = "gcp-1" }, gcp = { cloud = "gcp" } }
    nodes          = { aws-1 = { domain = "aws" }, gcp-1 = { domain = "gcp" } }
    external_hosts = {}
  }
  expect_failures = [var.nodes]
}

run "masquerading_gateway_is_refused" {
  command = plan
  variables {
    domains        = { aws = { cloud = "aws" } }
    nodes          = { aws-1 = { domain = "aws", nat = "masquerade" } }
    external_hosts = {}
  }
  expect_failures = [var.nodes]
}

run "external_host_in_unknown_domain_is_refused" {
  command = plan
  variables {
    external_hosts = { laptop = { domain = "nowhere", service = "db" } }
  }
  expect_failures = [var.external_hosts]
}

run "bad_service_name_is_refused" {
  command = plan
  variables {
    external_hosts = { laptop = { domain = "aws", service = "DB!" } }
  }
  expect_failures = [var.external_hosts]
}

run "overlay_cidr_too_small_is_refused" {
  command = plan
  variables {
    overlay_cidr = "10.64.0.0/24"
  }
  expect_failures = [var.overlay_cidr]
}

run "gateway_port_inside_the_tunnel_range_is_refused" {
  command = plan
  variables {
    gateway_port = 51900
  }
  expect_failures = [var.gateway_port]
}

run "ssh_to_the_world_is_refused" {
  command = plan
  variables {
    ssh_cidrs = ["0.0.0.0/0"]
  }
  expect_failures = [var.ssh_cidrs]
}

run "ssh_from_given_ranges_only" {
  command = plan
  variables {
    ssh_cidrs = ["192.0.2.0/24"]
  }
  assert {
    condition     = alltrue([for n in values(output.nodes) : join(",", flatten([for r in n.firewall : r.from if r.name == "ssh"])) == "192.0.2.0/24"])
    error_message = "SSH opens to the given ranges only"
  }
}

run "bad_subnet_is_refused" {
  command = plan
  variables {
    domains        = { aws = { cloud = "aws", subnet_cidr = "10.0.0.0/30" } }
    nodes          = { aws-1 = { domain = "aws" } }
    external_hosts = {}
  }
  expect_failures = [var.domains]
}

run "bad_package_is_refused" {
  command = plan
  variables {
    bootstrap = { package = "vwire-fabric; rm -rf /" }
  }
  expect_failures = [var.bootstrap]
}

run "public_address_of_unknown_node_is_refused" {
  command = plan
  variables {
    public_addresses = { nowhere-1 = "198.51.100.9" }
  }
  expect_failures = [var.public_addresses]
}

run "bad_join_token_is_refused" {
  command = plan
  variables {
    bootstrap = { join_tokens = { aws-1 = "a token with spaces" } }
  }
  expect_failures = [var.bootstrap]
}
