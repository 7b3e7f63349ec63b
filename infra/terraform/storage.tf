# The cluster's bucket: checkpoints/, datasets/, the frozen-target cache, runs/ (storage.path) and
# mlflow-artifacts/ (written by the MLflow server only: artifacts are proxied). Private, SSE-KMS, versioned,
# TLS only.

resource "aws_s3_bucket" "main" {
  #checkov:skip=CKV_AWS_18:No server access logging: it needs a second bucket; CloudTrail data events are the audit trail if one is required.
  #checkov:skip=CKV2_AWS_62:Nothing consumes bucket events.
  #checkov:skip=CKV_AWS_144:No cross-region replication: it doubles storage cost; checkpoints and artifacts are reproducible, datasets have their source.
  bucket_prefix = "${var.cluster_name}-"
  force_destroy = var.bucket_force_destroy
}

resource "aws_s3_bucket_public_access_block" "main" {
  bucket                  = aws_s3_bucket.main.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "main" {
  bucket = aws_s3_bucket.main.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "main" {
  bucket = aws_s3_bucket.main.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.main.arn
    }
    # S3 Bucket Keys: one KMS call per object batch instead of per request (checkpoints are many parts).
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_versioning" "main" {
  bucket = aws_s3_bucket.main.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "main" {
  bucket = aws_s3_bucket.main.id

  rule {
    id     = "expire-noncurrent-versions-and-abandoned-uploads"
    status = "Enabled"
    filter {}
    noncurrent_version_expiration {
      noncurrent_days = var.noncurrent_version_expiration_days
    }
    expiration {
      expired_object_delete_marker = true
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }

  rule {
    id     = "checkpoints-to-infrequent-access"
    status = "Enabled"
    filter {
      prefix = "checkpoints/"
    }
    transition {
      days          = var.checkpoint_ia_transition_days
      storage_class = "STANDARD_IA"
    }
  }

  depends_on = [aws_s3_bucket_versioning.main]
}

data "aws_iam_policy_document" "bucket" {
  statement {
    sid     = "DenyInsecureTransport"
    effect  = "Deny"
    actions = ["s3:*"]
    resources = [
      aws_s3_bucket.main.arn,
      "${aws_s3_bucket.main.arn}/*",
    ]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "main" {
  bucket     = aws_s3_bucket.main.id
  policy     = data.aws_iam_policy_document.bucket.json
  depends_on = [aws_s3_bucket_public_access_block.main]
}
