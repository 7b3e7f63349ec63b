# The platform image (infra/docker/Dockerfile): every node runs it. Tags are immutable, images scanned on push.

resource "aws_ecr_repository" "platform" {
  name                 = "${var.cluster_name}/platform"
  image_tag_mutability = "IMMUTABLE"
  force_delete         = var.bucket_force_destroy

  image_scanning_configuration {
    scan_on_push = true
  }

  encryption_configuration {
    encryption_type = "KMS"
    kms_key         = aws_kms_key.main.arn
  }
}

resource "aws_ecr_lifecycle_policy" "platform" {
  repository = aws_ecr_repository.platform.name
  policy = jsonencode({
    rules = [{
      rulePriority = 1
      description  = "Keep the 20 newest images"
      selection    = { tagStatus = "any", countType = "imageCountMoreThan", countNumber = 20 }
      action       = { type = "expire" }
    }]
  })
}

locals {
  ecr_registry   = split("/", aws_ecr_repository.platform.repository_url)[0]
  platform_image = "${aws_ecr_repository.platform.repository_url}:${var.image_tag}"
}
