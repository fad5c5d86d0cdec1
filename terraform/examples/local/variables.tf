variable "nsmctl" {
  description = "The nsmctl command that builds and removes the lab (on PATH after `. .venv/bin/activate`)."
  type        = string
  default     = "nsmctl"

  validation {
    condition     = can(regex("^[A-Za-z0-9_./-]+$", var.nsmctl))
    error_message = "nsmctl: a command name or path without spaces or shell characters."
  }
}

variable "services" {
  description = "The demo's services: service => the node whose endpoint provides it."
  type        = map(string)
  default     = { db = "azure-1", cache = "gcp-1" }
}

variable "clients" {
  description = "The demo's clients: client => its node and the services it asks for (service@domain when the service lives in another domain)."
  type = map(object({
    node     = string
    services = list(string)
  }))
  default = {
    web = { node = "aws-2", services = ["db"] }
    app = { node = "aws-1", services = ["cache"] }
  }
}

variable "vms" {
  description = "VMs that join a domain with the node bootstrap script (deploy/bootstrap/node.sh) and ask for services of it."
  type = map(object({
    domain   = string
    services = list(string)
  }))
  default = { vm-1 = { domain = "azure", services = ["db"] } }
}
