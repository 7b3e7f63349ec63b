locals {
  ssm_forward = {
    for name, port in { dashboard = 8265, mlflow = 5000 } : name => join(" ", [
      "aws ssm start-session --region ${var.region} --target ${aws_instance.head.id}",
      "--document-name AWS-StartPortForwardingSessionToRemoteHost",
      "--parameters '{\"host\":[\"${aws_instance.head.private_ip}\"],\"portNumber\":[\"${port}\"],\"localPortNumber\":[\"${port}\"]}'",
    ])
  }
}

output "head_instance_id" {
  description = "EC2 id of the head (the target of `aws ssm start-session`)."
  value       = aws_instance.head.id
}

output "head_private_ip" {
  description = "Private address of the head: Ray's GCS is HEAD:6379, the dashboard/Jobs API HEAD:8265, MLflow HEAD:5000 (inside the VPC)."
  value       = aws_instance.head.private_ip
}

output "ray_address" {
  description = "What `vlsa-platform submit --address` takes once the dashboard tunnel (ssm_port_forward_dashboard) is open."
  value       = "http://127.0.0.1:8265"
}

output "ray_address_in_vpc" {
  description = "The same from inside the VPC or an admin_cidrs network (no tunnel)."
  value       = "http://${aws_instance.head.private_ip}:8265"
}

output "head_hostname" {
  description = "The head's name: the private zone resolves it inside the VPC; on your machine add `127.0.0.1 <this>` to /etc/hosts so that it reaches the tunnels."
  value       = local.head_hostname
}

output "mlflow_tracking_uri" {
  description = "The experiment's tracking.tracking_uri (`--set tracking.tracking_uri=...`), the same inside the VPC and through the tunnel (head_hostname)."
  value       = "http://${local.head_hostname}:5000"
}

output "hosts_file_line" {
  description = "The line for /etc/hosts on your machine (the tracking URI's name -> the tunnel)."
  value       = "127.0.0.1 ${local.head_hostname}"
}

output "bucket" {
  description = "The cluster's S3 bucket (storage.path = s3://BUCKET/runs)."
  value       = aws_s3_bucket.main.bucket
}

output "storage_path" {
  description = "The experiment's storage.path (`--set storage.path=...`)."
  value       = "s3://${aws_s3_bucket.main.bucket}/runs"
}

output "ecr_repository_url" {
  description = "Where to push the platform image (tag it var.image_tag)."
  value       = aws_ecr_repository.platform.repository_url
}

output "ray_token_secret_arn" {
  description = "Secrets Manager ARN of the Ray token (RAY_AUTH_TOKEN for `submit`)."
  value       = module.ray_token.arn
}

output "mlflow_password_secret_arn" {
  description = "Secrets Manager ARN of the MLflow admin password (MLFLOW_TRACKING_PASSWORD)."
  value       = module.mlflow_admin_password.arn
}

output "mlflow_username" {
  description = "MLflow user (MLFLOW_TRACKING_USERNAME)."
  value       = var.mlflow_admin_username
}

output "ssm_port_forward_dashboard" {
  description = "Opens the tunnel to the Ray dashboard / Jobs API on 127.0.0.1:8265 (needs the Session Manager plugin)."
  value       = local.ssm_forward["dashboard"]
}

output "ssm_port_forward_mlflow" {
  description = "Opens the tunnel to MLflow on 127.0.0.1:5000."
  value       = local.ssm_forward["mlflow"]
}

output "autoscaler_config_yaml" {
  description = "The Ray autoscaler configuration the head runs with (no secret in it)."
  value       = module.autoscaler.config_yaml
}

output "region" {
  description = "The cluster's AWS region (for the AWS CLI commands of infra/README.md)."
  value       = var.region
}
