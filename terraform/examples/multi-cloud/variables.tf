variable "aws_region" {
  description = "AWS region of the aws domain."
  type        = string
  default     = "eu-central-1"
}

variable "aws_ami_id" {
  description = "Debian 12 AMI of aws_region (`aws ec2 describe-images --owners 136693071363 --filters 'Name=name,Values=debian-12-amd64-*'`)."
  type        = string
}

variable "gcp_project" {
  description = "GCP project of the gcp domain."
  type        = string
}

variable "gcp_region" {
  description = "GCP region of the gcp domain."
  type        = string
  default     = "europe-west3"
}

variable "gcp_zone" {
  description = "GCP zone of the gcp domain's nodes."
  type        = string
  default     = "europe-west3-a"
}

variable "azure_subscription_id" {
  description = "Azure subscription of the azure domain."
  type        = string
}

variable "azure_location" {
  description = "Azure region of the azure domain."
  type        = string
  default     = "germanywestcentral"
}

variable "admin_ssh_public_key" {
  description = "SSH public key for the nodes' admin user (Azure requires one)."
  type        = string
}

variable "ssh_cidrs" {
  description = "Ranges allowed to SSH to the nodes (e.g. your address as a /32); empty opens none."
  type        = list(string)
  default     = []
}

variable "join_tokens" {
  description = "One join token per node (`nsmctl node token create --node NAME`); a node without one waits for `nsmctl node join` by hand."
  type        = map(string)
  default     = {}
  sensitive   = true
}
