variable "cluster_name" {
  description = "Name of the Ray cluster: the autoscaler tags every instance it launches with ray-cluster-name = this, and the head's IAM policy only lets it touch instances with that tag."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}$", var.cluster_name))
    error_message = "cluster_name must be 2-31 characters: lower-case letters, digits and '-', starting with a letter."
  }
}

variable "region" {
  description = "AWS region the autoscaler launches workers in."
  type        = string
}

variable "worker_groups" {
  description = "GPU worker groups, keyed by a short name (used as the Ray node type). accelerator_type is a class of platform/vlsa_platform/cluster/accelerators.py; the node advertises GPU = gpus_per_node and accelerator_type:<NAME> = gpus_per_node."
  type = map(object({
    instance_type    = string
    accelerator_type = string
    gpus_per_node    = number
    min_workers      = optional(number, 0)
    max_workers      = number
    spot             = optional(bool, false)
    disk_gib         = optional(number, 200)
  }))

  validation {
    condition     = alltrue([for name, g in var.worker_groups : can(regex("^[a-z][a-z0-9_-]{0,30}$", name))])
    error_message = "worker_groups keys must be short lower-case names (letters, digits, '_' or '-')."
  }
  validation {
    condition     = alltrue([for g in var.worker_groups : contains(["A10G", "L4", "A100", "A100-40G", "A100-80G", "H100", "H200"], g.accelerator_type)])
    error_message = "accelerator_type must be a class of platform/vlsa_platform/cluster/accelerators.py: A10G, L4, A100, A100-40G, A100-80G, H100 or H200."
  }
  validation {
    condition     = alltrue([for g in var.worker_groups : g.gpus_per_node >= 1 && floor(g.gpus_per_node) == g.gpus_per_node])
    error_message = "gpus_per_node must be a whole number >= 1."
  }
  validation {
    condition     = alltrue([for g in var.worker_groups : g.min_workers >= 0 && g.min_workers <= g.max_workers])
    error_message = "Each worker group needs 0 <= min_workers <= max_workers (min_workers = 0 lets an idle group scale to zero)."
  }
  validation {
    condition     = alltrue([for g in var.worker_groups : g.disk_gib >= 50])
    error_message = "disk_gib must be at least 50 (the platform image, Ray's object spilling and checkpoints staged locally)."
  }
}

variable "idle_timeout_minutes" {
  description = "Minutes a worker may sit idle (no Ray task, actor or placement group on it) before the autoscaler terminates it."
  type        = number
  default     = 10

  validation {
    condition     = var.idle_timeout_minutes >= 1
    error_message = "idle_timeout_minutes must be at least 1."
  }
}

variable "upscaling_speed" {
  description = "Ray autoscaler upscaling_speed: how many nodes it may have pending at once, as a multiple of the current count (1.0 = double at most per round)."
  type        = number
  default     = 1.0
}

variable "head_instance_type" {
  description = "Instance type of the head (Terraform launches the head; the autoscaler only needs its node type declared)."
  type        = string
}

variable "worker_ami_id" {
  description = "AMI of the GPU workers: needs the NVIDIA driver, Docker with the NVIDIA container toolkit and the AWS CLI (the Deep Learning Base OSS Nvidia Driver GPU AMI, Amazon Linux 2023, has all three)."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets the workers are launched in."
  type        = list(string)
}

variable "security_group_ids" {
  description = "Security groups of the workers."
  type        = list(string)
}

variable "instance_profile_arn" {
  description = "ARN of the workers' IAM instance profile."
  type        = string
}

variable "key_name" {
  description = "EC2 key pair the workers are launched with: the head's autoscaler reaches them over SSH with its private half."
  type        = string
}

variable "ssh_user" {
  description = "Login user of the worker AMI (ec2-user on Amazon Linux)."
  type        = string
  default     = "ec2-user"
}

variable "ssh_private_key_path" {
  description = "Where the SSH private key lies inside the head's container (fetched from Secrets Manager at boot)."
  type        = string
}

variable "docker_image" {
  description = "The platform image (infra/docker/Dockerfile) every node runs, e.g. 123456789012.dkr.ecr.us-east-1.amazonaws.com/vlsa-platform:TAG."
  type        = string
}

variable "ecr_registry" {
  description = "Host of the ECR registry holding docker_image (ACCOUNT.dkr.ecr.REGION.amazonaws.com): workers log in to it before pulling."
  type        = string
}

variable "ray_token_secret_arn" {
  description = "Secrets Manager ARN of the Ray token the workers authenticate with."
  type        = string
}

variable "mlflow_secret_arn" {
  description = "Secrets Manager ARN of the MLflow password the training processes log with (MLFLOW_TRACKING_PASSWORD)."
  type        = string
}

variable "mlflow_username" {
  description = "MLflow user the training processes log as (MLFLOW_TRACKING_USERNAME)."
  type        = string
}

variable "container_uid" {
  description = "User id the platform image runs as (infra/docker/Dockerfile: VLSA_UID, 1000): the secret files given to the container are owned by it (mode 0600)."
  type        = number
  default     = 1000
}

variable "platform_dir" {
  description = "Where the repository lies inside the platform image (its infra/scripts/ray-node.sh starts every node)."
  type        = string
  default     = "/opt/vlsa"
}
