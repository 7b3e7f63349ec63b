# What each node may do, nothing more.
#   head:    launch and terminate workers of this cluster only (the ray-cluster-name tag), pass the worker role
#            only, register the autoscaler's key pair, the bucket, its secrets (Ray token, MLflow password,
#            database password), pull the image, SSM sessions.
#   workers: the bucket, the Ray token and the MLflow password, pull the image, SSM sessions.

locals {
  arn_prefix = "arn:${data.aws_partition.current.partition}"
  ec2_arn    = "${local.arn_prefix}:ec2:${var.region}:${data.aws_caller_identity.current.account_id}"
  cluster_tag = {
    test     = "StringEquals"
    variable = "ec2:ResourceTag/ray-cluster-name"
    values   = [var.cluster_name]
  }
}

data "aws_iam_policy_document" "ec2_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "head" {
  name               = "${var.cluster_name}-head"
  assume_role_policy = data.aws_iam_policy_document.ec2_assume.json
}

resource "aws_iam_role" "worker" {
  name               = "${var.cluster_name}-worker"
  assume_role_policy = data.aws_iam_policy_document.ec2_assume.json
}

resource "aws_iam_instance_profile" "head" {
  name = "${var.cluster_name}-head"
  role = aws_iam_role.head.name
}

resource "aws_iam_instance_profile" "worker" {
  name = "${var.cluster_name}-worker"
  role = aws_iam_role.worker.name
}

# SSM Session Manager (shell and port forwarding) instead of SSH from outside.
resource "aws_iam_role_policy_attachment" "ssm" {
  for_each   = { head = aws_iam_role.head.name, worker = aws_iam_role.worker.name }
  role       = each.value
  policy_arn = "${local.arn_prefix}:iam::aws:policy/AmazonSSMManagedInstanceCore"
}

# --- Shared by both roles: the bucket, the image, the key through S3 / Secrets Manager only

data "aws_iam_policy_document" "node_common" {
  statement {
    sid       = "BucketList"
    actions   = ["s3:ListBucket", "s3:GetBucketLocation", "s3:ListBucketMultipartUploads"]
    resources = [aws_s3_bucket.main.arn]
  }
  statement {
    sid       = "BucketObjects"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"]
    resources = ["${aws_s3_bucket.main.arn}/*"]
  }
  statement {
    sid       = "KeyThroughS3AndSecretsManager"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.main.arn]
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["s3.${var.region}.amazonaws.com", "secretsmanager.${var.region}.amazonaws.com"]
    }
  }
  statement {
    sid       = "PullPlatformImage"
    actions   = ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"]
    resources = [aws_ecr_repository.platform.arn]
  }
  statement {
    # GetAuthorizationToken has no resource-level permission (AWS's service authorization reference).
    sid       = "EcrLogin"
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"]
  }
}

resource "aws_iam_role_policy" "node_common" {
  for_each = { head = aws_iam_role.head.name, worker = aws_iam_role.worker.name }
  name     = "bucket-and-image"
  role     = each.value
  policy   = data.aws_iam_policy_document.node_common.json
}

data "aws_iam_policy_document" "worker_secrets" {
  statement {
    sid       = "RayTokenAndMlflowPassword"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [module.ray_token.arn, module.mlflow_admin_password.arn]
  }
}

resource "aws_iam_role_policy" "worker_secrets" {
  name   = "secrets"
  role   = aws_iam_role.worker.name
  policy = data.aws_iam_policy_document.worker_secrets.json
}

# --- The head: its secrets, and the autoscaler's EC2 rights, scoped to this cluster's tag

data "aws_iam_policy_document" "head" {
  statement {
    sid     = "ClusterSecrets"
    actions = ["secretsmanager:GetSecretValue"]
    resources = [
      module.ray_token.arn,
      module.mlflow_admin_password.arn,
      aws_db_instance.mlflow.master_user_secret[0].secret_arn,
    ]
  }

  statement {
    # Describe calls have no resource-level permissions (AWS's service authorization reference).
    sid = "AutoscalerDescribe"
    actions = [
      "ec2:DescribeInstances",
      "ec2:DescribeInstanceTypes",
      "ec2:DescribeImages",
      "ec2:DescribeSubnets",
      "ec2:DescribeSecurityGroups",
      "ec2:DescribeKeyPairs",
      "ec2:DescribeAvailabilityZones",
    ]
    resources = ["*"]
  }

  statement {
    # The head makes the autoscaler's SSH key at boot and registers its public half (head-user-data.sh.tftpl).
    sid       = "RegisterAutoscalerKey"
    actions   = ["ec2:ImportKeyPair", "ec2:DeleteKeyPair"]
    resources = ["${local.ec2_arn}:key-pair/${local.autoscaler_key_name}"]
  }

  statement {
    sid       = "LaunchTaggedInstances"
    actions   = ["ec2:RunInstances"]
    resources = ["${local.ec2_arn}:instance/*", "${local.ec2_arn}:volume/*"]
    condition {
      test     = "StringEquals"
      variable = "aws:RequestTag/ray-cluster-name"
      values   = [var.cluster_name]
    }
  }

  statement {
    sid     = "LaunchIntoClusterResources"
    actions = ["ec2:RunInstances"]
    resources = concat(
      [for s in aws_subnet.private : "${local.ec2_arn}:subnet/${s.id}"],
      [
        "${local.ec2_arn}:security-group/${aws_security_group.workers.id}",
        "${local.ec2_arn}:key-pair/${local.autoscaler_key_name}",
        "${local.ec2_arn}:network-interface/*",
        # The request behind a spot group's instance (RunInstances with InstanceMarketOptions).
        "${local.ec2_arn}:spot-instances-request/*",
        "${local.arn_prefix}:ec2:${var.region}::image/*",
      ],
    )
  }

  statement {
    sid       = "TagOnLaunch"
    actions   = ["ec2:CreateTags"]
    resources = ["${local.ec2_arn}:instance/*", "${local.ec2_arn}:volume/*"]
    condition {
      test     = "StringEquals"
      variable = "ec2:CreateAction"
      values   = ["RunInstances"]
    }
  }

  statement {
    sid       = "ManageClusterInstances"
    actions   = ["ec2:CreateTags", "ec2:DeleteTags", "ec2:TerminateInstances", "ec2:StopInstances", "ec2:StartInstances"]
    resources = ["${local.ec2_arn}:instance/*"]
    condition {
      test     = local.cluster_tag.test
      variable = local.cluster_tag.variable
      values   = local.cluster_tag.values
    }
  }

  statement {
    sid       = "NeverTheHeadItself"
    effect    = "Deny"
    actions   = ["ec2:TerminateInstances", "ec2:StopInstances", "ec2:CreateTags", "ec2:DeleteTags"]
    resources = ["${local.ec2_arn}:instance/*"]
    condition {
      test     = "StringEquals"
      variable = "ec2:ResourceTag/ray-node-kind"
      values   = ["head"]
    }
  }

  statement {
    sid       = "PassWorkerRoleOnly"
    actions   = ["iam:PassRole"]
    resources = [aws_iam_role.worker.arn]
    condition {
      test     = "StringEquals"
      variable = "iam:PassedToService"
      values   = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role_policy" "head" {
  name   = "autoscaler-and-secrets"
  role   = aws_iam_role.head.name
  policy = data.aws_iam_policy_document.head.json
}

resource "aws_iam_service_linked_role" "spot" {
  count            = var.create_spot_service_linked_role ? 1 : 0
  aws_service_name = "spot.amazonaws.com"
}
