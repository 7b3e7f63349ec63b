# Stand-in for infra/terraform/modules/generated-secret/main.tf in the mocked plan (plan.tftest.hcl): the same
# inputs and output, no ephemeral resource (mocked providers have none in Terraform 1.11).

variable "name_prefix" {
  description = "As in the real module."
  type        = string
}

variable "description" {
  description = "As in the real module."
  type        = string
}

variable "kms_key_arn" {
  description = "As in the real module."
  type        = string
}

variable "length" {
  description = "As in the real module."
  type        = number
}

variable "generation" {
  description = "As in the real module."
  type        = number
}

output "arn" {
  description = "A made-up ARN named after the secret."
  value       = "arn:aws:secretsmanager:us-east-1:123456789012:secret:${var.name_prefix}AbCdEf"
}
