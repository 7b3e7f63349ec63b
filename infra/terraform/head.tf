# The head: Ray head + autoscaler and the MLflow server, two systemd units running the platform image with the
# host's network (infra/scripts/ray-node.sh head, infra/scripts/mlflow-server.sh). Private subnet, no public
# address, no SSH key: reach it with SSM Session Manager.

locals {
  head_ssh_key_path = "/etc/vlsa/ssh/autoscaler.pem"
  # The EC2 key pair the head imports at boot (its public half) and the autoscaler launches workers with.
  autoscaler_key_name = "${var.cluster_name}-autoscaler"

  head_user_data = templatefile("${path.module}/templates/head-user-data.sh.tftpl", {
    region                = var.region
    ecr_registry          = local.ecr_registry
    image                 = local.platform_image
    platform_dir          = var.platform_dir
    container_uid         = var.container_uid
    head_num_cpus         = var.head_num_cpus
    ray_token_secret      = module.ray_token.arn
    mlflow_admin_secret   = module.mlflow_admin_password.arn
    mlflow_admin_username = var.mlflow_admin_username
    ssh_key_name          = local.autoscaler_key_name
    ssh_key_path          = local.head_ssh_key_path
    db_secret             = aws_db_instance.mlflow.master_user_secret[0].secret_arn
    db_host               = aws_db_instance.mlflow.address
    db_port               = aws_db_instance.mlflow.port
    db_name               = aws_db_instance.mlflow.db_name
    bucket                = aws_s3_bucket.main.bucket
    head_hostname         = local.head_hostname
    autoscaler_yaml_gz64  = base64gzip(module.autoscaler.config_yaml)
  })
}

data "aws_ssm_parameter" "head_ami" {
  name = var.head_ami_ssm_parameter
}

resource "aws_instance" "head" {
  ami                         = nonsensitive(data.aws_ssm_parameter.head_ami.value)
  instance_type               = var.head_instance_type
  subnet_id                   = aws_subnet.private[0].id
  vpc_security_group_ids      = [aws_security_group.head.id]
  iam_instance_profile        = aws_iam_instance_profile.head.name
  associate_public_ip_address = false
  ebs_optimized               = true
  monitoring                  = true

  user_data_replace_on_change = true
  user_data                   = local.head_user_data

  metadata_options {
    http_endpoint = "enabled"
    http_tokens   = "required"
    # 2: the containers reach the instance profile's credentials (one hop more than the host).
    http_put_response_hop_limit = 2
  }

  root_block_device {
    volume_size           = var.head_disk_gib
    volume_type           = "gp3"
    encrypted             = true
    delete_on_termination = true
  }

  # The tags `ray up` gives a head, so the autoscaler counts it; iam.tf denies the head terminating itself.
  tags = {
    Name                 = "${var.cluster_name}-head"
    "ray-cluster-name"   = var.cluster_name
    "ray-node-kind"      = "head"
    "ray-user-node-type" = "ray.head.default"
  }

  lifecycle {
    precondition {
      # EC2's limit on user data (the autoscaler configuration is in it, compressed).
      condition     = length(local.head_user_data) <= 16384
      error_message = "The head's user data exceeds EC2's 16 KiB: too many worker groups for one configuration."
    }
    # A newer AMI in the SSM parameter would otherwise replace the head on every apply.
    ignore_changes = [ami]
    # New secrets (var.secret_generation): a new head, which reads them at boot.
    replace_triggered_by = [terraform_data.secret_generation]
  }

  # Boot needs the route out and the role's rights (it fetches the image and the secrets at once).
  depends_on = [
    aws_route_table_association.private,
    aws_nat_gateway.main,
    aws_iam_role_policy.head,
    aws_iam_role_policy.node_common,
    aws_iam_role_policy_attachment.ssm,
  ]
}
