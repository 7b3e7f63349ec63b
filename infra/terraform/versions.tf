terraform {
  # 1.11: write-only arguments (secret_string_wo), so the generated Ray token and MLflow password never enter
  # the state.
  required_version = ">= 1.11"

  required_providers {
    aws = {
      source = "hashicorp/aws"
      # >= 5.90: secret_string_wo and the ephemeral aws_secretsmanager_random_password. The only provider:
      # tests/infra/test_terraform.py validates this module offline where a local mirror of it exists.
      version = ">= 5.90, < 7.0"
    }
  }

  # No secret is in the state (write-only arguments, RDS-managed password, the SSH key made on the head), but
  # it maps the whole account's cluster: keep it in an access-controlled backend for a shared cluster.
}

provider "aws" {
  region = var.region

  default_tags {
    tags = merge(var.tags, { "vlsa:cluster" = var.cluster_name })
  }
}
