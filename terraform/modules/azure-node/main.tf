locals {
  tags = merge(var.tags, { "vwire-domain" = var.domain_name })
  # One security rule per (role, rule): "peer-gateways" becomes the peers' /32s; a rule with no
  # source left (no peers yet) is not made. Priorities follow the rule order.
  rules = {
    for role in ["node", "gateway"] : role => [
      for rule in distinct(flatten([for n in values(var.nodes) : n.firewall if n.gateway == (role == "gateway")])) : {
        name     = rule.name
        protocol = title(rule.protocol)
        ports    = rule.ports
        sources  = contains(rule.from, "peer-gateways") ? var.peer_gateway_cidrs : rule.from
      } if length(contains(rule.from, "peer-gateways") ? var.peer_gateway_cidrs : rule.from) > 0
    ]
  }
}

resource "azurerm_resource_group" "this" {
  name     = var.resource_group_name
  location = var.location
  tags     = local.tags
}

resource "azurerm_virtual_network" "this" {
  name                = "vwire-${var.domain_name}"
  resource_group_name = azurerm_resource_group.this.name
  location            = var.location
  address_space       = [var.subnet_cidr]
  tags                = local.tags
}

resource "azurerm_subnet" "nodes" {
  name                 = "nodes"
  resource_group_name  = azurerm_resource_group.this.name
  virtual_network_name = azurerm_virtual_network.this.name
  address_prefixes     = [var.subnet_cidr]
}

resource "azurerm_network_security_group" "node" {
  for_each            = local.rules
  name                = "vwire-${var.domain_name}-${each.key}"
  resource_group_name = azurerm_resource_group.this.name
  location            = var.location
  tags                = local.tags

  dynamic "security_rule" {
    for_each = each.value
    content {
      name                       = security_rule.value.name
      priority                   = 100 + security_rule.key
      direction                  = "Inbound"
      access                     = "Allow"
      protocol                   = security_rule.value.protocol
      source_port_range          = "*"
      destination_port_range     = security_rule.value.ports
      source_address_prefixes    = security_rule.value.sources
      destination_address_prefix = "*"
    }
  }
}

resource "azurerm_public_ip" "node" {
  for_each            = var.nodes
  name                = "vwire-${each.key}"
  resource_group_name = azurerm_resource_group.this.name
  location            = var.location
  allocation_method   = "Static"
  sku                 = "Standard"
  tags                = local.tags
}

resource "azurerm_network_interface" "node" {
  for_each              = var.nodes
  name                  = "vwire-${each.key}"
  resource_group_name   = azurerm_resource_group.this.name
  location              = var.location
  ip_forwarding_enabled = true # the forwarder routes vWire traffic
  tags                  = local.tags

  ip_configuration {
    name                          = "primary"
    subnet_id                     = azurerm_subnet.nodes.id
    private_ip_address_allocation = "Static"
    private_ip_address            = each.value.private_ip
    public_ip_address_id          = azurerm_public_ip.node[each.key].id
  }
}

resource "azurerm_network_interface_security_group_association" "node" {
  for_each                  = var.nodes
  network_interface_id      = azurerm_network_interface.node[each.key].id
  network_security_group_id = azurerm_network_security_group.node[each.value.gateway ? "gateway" : "node"].id
}

resource "azurerm_linux_virtual_machine" "node" {
  for_each              = var.nodes
  name                  = "vwire-${each.key}"
  resource_group_name   = azurerm_resource_group.this.name
  location              = var.location
  size                  = var.vm_size
  admin_username        = var.admin_username
  network_interface_ids = [azurerm_network_interface.node[each.key].id]
  custom_data           = base64encode(var.cloud_init[each.key])
  tags                  = merge(local.tags, { "vwire-node" = each.key })

  admin_ssh_key {
    username   = var.admin_username
    public_key = var.admin_ssh_public_key
  }
  os_disk {
    caching              = "ReadWrite"
    storage_account_type = "Standard_LRS"
  }
  source_image_reference {
    publisher = "Debian"
    offer     = "debian-12"
    sku       = "12-gen2"
    version   = "latest"
  }
}
