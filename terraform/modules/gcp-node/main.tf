locals {
  labels = merge(var.labels, { vwire-domain = var.domain_name })
  # One firewall per (role, rule): "peer-gateways" becomes the peers' /32s; a rule with no source
  # left (no peers yet) is not made.
  rules = {
    for r in flatten([
      for role in ["node", "gateway"] : [
        for rule in distinct(flatten([for n in values(var.nodes) : n.firewall if n.gateway == (role == "gateway")])) : {
          key      = "${role}-${rule.name}"
          role     = role
          protocol = rule.protocol
          ports    = rule.ports
          sources  = contains(rule.from, "peer-gateways") ? var.peer_gateway_cidrs : rule.from
        }
      ]
    ]) : r.key => r if length(r.sources) > 0
  }
}

resource "google_compute_network" "this" {
  project                 = var.project
  name                    = "vwire-${var.domain_name}"
  auto_create_subnetworks = false
  mtu                     = var.mtu
}

resource "google_compute_subnetwork" "nodes" {
  project       = var.project
  name          = "vwire-${var.domain_name}-nodes"
  region        = var.region
  network       = google_compute_network.this.id
  ip_cidr_range = var.subnet_cidr
}

resource "google_compute_firewall" "plan" {
  for_each      = local.rules
  project       = var.project
  name          = "vwire-${var.domain_name}-${each.key}"
  network       = google_compute_network.this.id
  direction     = "INGRESS"
  source_ranges = each.value.sources
  target_tags   = ["vwire-${each.value.role}"]
  allow {
    protocol = each.value.protocol
    ports    = [each.value.ports]
  }
}

resource "google_compute_firewall" "inside_network" {
  project       = var.project
  name          = "vwire-${var.domain_name}-inside"
  network       = google_compute_network.this.id
  direction     = "INGRESS"
  source_ranges = [var.subnet_cidr]
  allow {
    protocol = "all"
  }
}

resource "google_compute_address" "node" {
  for_each = var.nodes
  project  = var.project
  name     = "vwire-${each.key}"
  region   = var.region
  labels   = local.labels
}

resource "google_compute_instance" "node" {
  for_each     = var.nodes
  project      = var.project
  name         = "vwire-${each.key}"
  zone         = var.zone
  machine_type = var.machine_type
  tags         = ["vwire-${each.value.gateway ? "gateway" : "node"}"]
  labels       = merge(local.labels, { vwire-node = each.key })
  # The forwarder routes vWire traffic for its workloads.
  can_ip_forward = true
  boot_disk {
    initialize_params {
      image = var.image
    }
  }
  network_interface {
    subnetwork = google_compute_subnetwork.nodes.id
    network_ip = each.value.private_ip
    access_config {
      nat_ip = google_compute_address.node[each.key].address
    }
  }
  metadata = {
    user-data = var.cloud_init[each.key]
  }
  shielded_instance_config {
    enable_secure_boot = true
  }
}
