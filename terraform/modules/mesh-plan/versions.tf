terraform {
  # Optional attributes with defaults and validations that name other variables need 1.9.
  required_version = ">= 1.9"
  # No providers: this module is pure logic, so it plans offline and in `terraform test`.
}
