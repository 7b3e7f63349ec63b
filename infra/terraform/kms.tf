# One customer-managed key for the cluster's data at rest: the bucket, the secrets, the database, the image
# repository and the flow logs. The nodes use it through S3 and Secrets Manager only (kms:ViaService).

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

data "aws_iam_policy_document" "kms" {
  #checkov:skip=CKV_AWS_109:A key policy's "*" resource is the key itself; the account statement is AWS's default key policy.
  #checkov:skip=CKV_AWS_111:A key policy's "*" resource is the key itself; the account statement is AWS's default key policy.
  #checkov:skip=CKV_AWS_356:A key policy's "*" resource is the key itself; the logs statement is bounded by the encryption context.
  # The account administers the key through IAM (the default key policy's first statement).
  statement {
    sid       = "AccountAdministers"
    actions   = ["kms:*"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = ["arn:${data.aws_partition.current.partition}:iam::${data.aws_caller_identity.current.account_id}:root"]
    }
  }

  statement {
    sid       = "FlowLogsEncrypt"
    actions   = ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
    resources = ["*"]
    principals {
      type        = "Service"
      identifiers = ["logs.${var.region}.amazonaws.com"]
    }
    condition {
      test     = "ArnEquals"
      variable = "kms:EncryptionContext:aws:logs:arn"
      values   = ["arn:${data.aws_partition.current.partition}:logs:${var.region}:${data.aws_caller_identity.current.account_id}:log-group:/vlsa/${var.cluster_name}/*"]
    }
  }
}

resource "aws_kms_key" "main" {
  description             = "${var.cluster_name}: bucket, secrets, database, images, logs"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.kms.json
}

resource "aws_kms_alias" "main" {
  name          = "alias/${var.cluster_name}"
  target_key_id = aws_kms_key.main.key_id
}
