# The Ray autoscaler's configuration, rendered from var.worker_groups by a provider-free module (tested offline
# with `terraform test`, tests/infra/test_terraform.py). The head receives it in its user data.

data "aws_ssm_parameter" "worker_ami" {
  name = var.worker_ami_ssm_parameter
}

module "autoscaler" {
  source = "./modules/ray-autoscaler"

  cluster_name         = var.cluster_name
  region               = var.region
  worker_groups        = var.worker_groups
  idle_timeout_minutes = var.idle_timeout_minutes
  upscaling_speed      = var.upscaling_speed
  head_instance_type   = var.head_instance_type
  worker_ami_id        = nonsensitive(data.aws_ssm_parameter.worker_ami.value)
  subnet_ids           = aws_subnet.private[*].id
  security_group_ids   = [aws_security_group.workers.id]
  instance_profile_arn = aws_iam_instance_profile.worker.arn
  key_name             = local.autoscaler_key_name
  ssh_private_key_path = local.head_ssh_key_path
  docker_image         = local.platform_image
  ecr_registry         = local.ecr_registry
  ray_token_secret_arn = module.ray_token.arn
  mlflow_secret_arn    = module.mlflow_admin_password.arn
  mlflow_username      = var.mlflow_admin_username
  container_uid        = var.container_uid
  platform_dir         = var.platform_dir
}
