# `terraform test` of the whole infra/terraform configuration against a mocked AWS provider: plan only, no
# account, no network. tests/infra/test_terraform.py copies the configuration, puts this file in its tests/ and
# generated_secret_stub.tf in place of modules/generated-secret/main.tf (mocked providers have no ephemeral
# resources in Terraform 1.11), then runs it. It needs the provider's schema: hashicorp/aws from a local mirror.

mock_provider "aws" {
  mock_data "aws_caller_identity" {
    defaults = { account_id = "123456789012" }
  }
  mock_data "aws_partition" {
    defaults = { partition = "aws" }
  }
  mock_data "aws_ssm_parameter" {
    defaults = { value = "ami-0123456789abcdef0" }
  }
  mock_data "aws_iam_policy_document" {
    defaults = { json = "{}" }
  }
  mock_resource "aws_db_instance" {
    defaults = {
      address            = "mlflow.abc.us-east-1.rds.amazonaws.com"
      master_user_secret = [{ secret_arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:rds-db-AbCdEf", kms_key_id = "k", secret_status = "active" }]
    }
  }
  # Mocked ARNs must look like ARNs: the provider still validates the arguments that take them.
  mock_resource "aws_kms_key" {
    defaults = { arn = "arn:aws:kms:us-east-1:123456789012:key/0123abcd-0123-4567-89ab-0123456789ab" }
  }
  mock_resource "aws_iam_role" {
    defaults = { arn = "arn:aws:iam::123456789012:role/mocked" }
  }
  mock_resource "aws_iam_instance_profile" {
    defaults = { arn = "arn:aws:iam::123456789012:instance-profile/mocked" }
  }
  mock_resource "aws_cloudwatch_log_group" {
    defaults = { arn = "arn:aws:logs:us-east-1:123456789012:log-group:/vlsa/vlsa/vpc-flow-logs" }
  }
  mock_resource "aws_s3_bucket" {
    defaults = { arn = "arn:aws:s3:::vlsa-mocked", bucket = "vlsa-mocked" }
  }
  mock_resource "aws_ecr_repository" {
    defaults = { repository_url = "123456789012.dkr.ecr.us-east-1.amazonaws.com/vlsa/platform", arn = "arn:aws:ecr:us-east-1:123456789012:repository/vlsa/platform" }
  }
}

variables {
  image_tag = "test"
  worker_groups = {
    a10g = { instance_type = "g5.12xlarge", accelerator_type = "A10G", gpus_per_node = 4, max_workers = 2, spot = true }
    h100 = { instance_type = "p5.48xlarge", accelerator_type = "H100", gpus_per_node = 8, max_workers = 1 }
  }
}

run "private_by_default" {
  command = plan

  assert {
    condition     = aws_instance.head.associate_public_ip_address == false && aws_instance.head.metadata_options[0].http_tokens == "required"
    error_message = "The head has no public address and requires IMDSv2."
  }
  assert {
    condition     = length(aws_vpc_security_group_ingress_rule.head_from_admins) == 0
    error_message = "No admin ingress without admin_cidrs (the SSM tunnel is the default way in)."
  }
  assert {
    condition     = alltrue([for r in aws_vpc_security_group_ingress_rule.head_from_workers : r.cidr_ipv4 == null])
    error_message = "Ray's ports on the head are open to the workers' group, not to an address range."
  }
  assert {
    condition     = aws_db_instance.mlflow.publicly_accessible == false && aws_db_instance.mlflow.storage_encrypted && aws_db_instance.mlflow.manage_master_user_password
    error_message = "The database is private, encrypted, and its password RDS-managed."
  }
  assert {
    condition     = aws_s3_bucket_public_access_block.main.restrict_public_buckets && aws_s3_bucket_versioning.main.versioning_configuration[0].status == "Enabled"
    error_message = "The bucket is private and versioned."
  }
}

run "admin_cidrs_open_only_dashboard_and_mlflow" {
  command = plan

  variables {
    admin_cidrs = ["203.0.113.0/24"]
  }

  assert {
    condition     = toset([for r in aws_vpc_security_group_ingress_rule.head_from_admins : r.from_port]) == toset([8265, 5000])
    error_message = "An admin network reaches the dashboard (8265) and MLflow (5000), nothing else."
  }
}

run "world_admin_cidr_is_refused" {
  command = plan

  variables {
    admin_cidrs = ["0.0.0.0/0"]
  }
  expect_failures = [var.admin_cidrs]
}

# apply (against the mock): the user data is known only once the mocked resources have ids.
run "head_runs_the_shared_scripts" {
  command = apply

  assert {
    condition     = strcontains(aws_instance.head.user_data, "/opt/vlsa/infra/scripts/ray-node.sh head") && strcontains(aws_instance.head.user_data, "/opt/vlsa/infra/scripts/mlflow-server.sh")
    error_message = "The head's units run infra/scripts/ray-node.sh head and infra/scripts/mlflow-server.sh."
  }
  assert {
    condition     = strcontains(aws_instance.head.user_data, "VLSA_AUTOSCALING_CONFIG=/etc/vlsa/autoscaler.yaml")
    error_message = "The Ray head runs the autoscaler with the rendered configuration."
  }
  assert {
    condition     = strcontains(aws_instance.head.user_data, "VLSA_MLFLOW_ALLOWED_HOSTS=head.vlsa.internal:5000,") && output.mlflow_tracking_uri == "http://head.vlsa.internal:5000"
    error_message = "MLflow answers to the name in the tracking URI, which is the head's private name."
  }
  assert {
    condition     = aws_route53_record.head.name == "head.vlsa.internal" && aws_route53_record.head.records == toset([aws_instance.head.private_ip])
    error_message = "Inside the VPC the head's name resolves to its private address."
  }
  assert {
    condition     = !strcontains(aws_instance.head.user_data, "BEGIN OPENSSH PRIVATE KEY")
    error_message = "No secret in the user data."
  }
}
