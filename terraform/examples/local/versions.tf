terraform {
  required_version = ">= 1.9"
  # Only Terraform's built-in provider (terraform_data): nothing is downloaded.
}
