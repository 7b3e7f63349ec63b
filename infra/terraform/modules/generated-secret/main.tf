# A secret whose value Secrets Manager generates (letters and digits) and Terraform writes through a write-only
# argument: the value is in Secrets Manager only, never in the repository, a tfvars file or Terraform's state.
# Increase `generation` to write a new value.

terraform {
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.90, < 7.0"
    }
  }
}

variable "name_prefix" {
  description = "Prefix of the secret's name (Secrets Manager appends a unique suffix)."
  type        = string
}

variable "description" {
  description = "What the secret is, shown in the console."
  type        = string
}

variable "kms_key_arn" {
  description = "The customer-managed KMS key that encrypts the secret."
  type        = string
}

variable "length" {
  description = "Characters of the generated value (letters and digits only: it travels through env files and URLs unquoted)."
  type        = number
}

variable "generation" {
  description = "Generation of the value: a new one is generated and written whenever this changes."
  type        = number
}

ephemeral "aws_secretsmanager_random_password" "value" {
  password_length     = var.length
  exclude_punctuation = true
}

resource "aws_secretsmanager_secret" "this" {
  #checkov:skip=CKV2_AWS_57:Rotated by Terraform, not a Lambda: bump var.secret_generation and apply (the head is replaced and reads the new value; see infra/README.md).
  name_prefix = var.name_prefix
  description = var.description
  kms_key_id  = var.kms_key_arn
}

resource "aws_secretsmanager_secret_version" "this" {
  secret_id                = aws_secretsmanager_secret.this.id
  secret_string_wo         = ephemeral.aws_secretsmanager_random_password.value.random_password
  secret_string_wo_version = var.generation
}

output "arn" {
  description = "ARN of the secret (what GetSecretValue takes)."
  value       = aws_secretsmanager_secret.this.arn
  # Known once the value is written: whoever reads the secret waits for it.
  depends_on = [aws_secretsmanager_secret_version.this]
}
