variable "region" {
  description = "AWS region of everything (pick one that offers your GPU instance types, e.g. us-east-1)."
  type        = string
  default     = "us-east-1"
}

variable "cluster_name" {
  description = "Name of the cluster: prefixes every resource and is the ray-cluster-name tag the head may launch and terminate instances under. Lower-case letters, digits, '-'."
  type        = string
  default     = "vlsa"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}$", var.cluster_name))
    error_message = "cluster_name must be 2-31 characters: lower-case letters, digits and '-', starting with a letter."
  }
}

variable "tags" {
  description = "Extra tags on every resource (cost allocation, owner)."
  type        = map(string)
  default     = {}
}

variable "availability_zones" {
  description = "Availability zones of the private subnets (at least two: RDS wants a subnet in two zones). The NAT gateway and the head live in the first; workers launch in any (where the GPU type has capacity)."
  type        = list(string)
  default     = ["us-east-1a", "us-east-1b"]

  validation {
    condition     = length(var.availability_zones) >= 2
    error_message = "availability_zones needs at least two zones."
  }
}

variable "vpc_cidr" {
  description = "Address range of the VPC; the subnets are carved from it (/20 private subnets, a /24 public one for the NAT gateway)."
  type        = string
  default     = "10.42.0.0/16"
}

variable "admin_cidrs" {
  description = "Networks (CIDRs) that may reach the Ray dashboard/Jobs API (8265) and MLflow (5000) directly, e.g. a VPN's range. Default: none; use the SSM port-forwarding tunnel (infra/README.md). Never 0.0.0.0/0."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.admin_cidrs : can(cidrhost(c, 0)) && !endswith(c, "/0")])
    error_message = "admin_cidrs must be CIDRs narrower than the whole internet (no 0.0.0.0/0 or ::/0)."
  }
}

variable "enable_interface_endpoints" {
  description = "Create VPC interface endpoints (SSM, Secrets Manager, ECR, EC2, STS, CloudWatch Logs) so that AWS API traffic stays off the NAT gateway. Costs about 0.01 USD per endpoint per zone-hour; off by default (the traffic goes through the NAT gateway, over TLS)."
  type        = bool
  default     = false
}

variable "head_instance_type" {
  description = "Instance type of the head (Ray head, autoscaler, MLflow server; no GPU)."
  type        = string
  default     = "m7i.xlarge"
}

variable "head_num_cpus" {
  description = "CPUs the head offers to Ray tasks (the rest is left to MLflow and the autoscaler). 0 keeps all work on the workers."
  type        = number
  default     = 2
}

variable "head_disk_gib" {
  description = "Root volume of the head, GiB (the image, Ray's logs and object spilling)."
  type        = number
  default     = 100
}

variable "head_ami_ssm_parameter" {
  description = "SSM public parameter naming the head's AMI (Amazon Linux 2023; Docker is installed at boot)."
  type        = string
  default     = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"
}

variable "worker_ami_ssm_parameter" {
  description = "SSM public parameter naming the GPU workers' AMI: it needs the NVIDIA driver, Docker with the NVIDIA container toolkit and the AWS CLI."
  type        = string
  default     = "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-amazon-linux-2023/latest/ami-id"
}

variable "image_tag" {
  description = "Tag of the platform image (infra/docker/Dockerfile) in the cluster's ECR repository; push it before the head boots (infra/README.md). Tags are immutable: a new image gets a new tag."
  type        = string
}

variable "platform_dir" {
  description = "Where the repository lies inside the platform image (infra/scripts start every node)."
  type        = string
  default     = "/opt/vlsa"
}

variable "container_uid" {
  description = "User id the platform image runs as (infra/docker/Dockerfile: VLSA_UID, 1000): the secret files handed to its containers are owned by it, mode 0600."
  type        = number
  default     = 1000
}

variable "worker_groups" {
  description = <<-EOT
    GPU worker groups, keyed by a short name (the Ray node type). Each: instance_type (EC2), accelerator_type (a
    class of platform/vlsa_platform/cluster/accelerators.py: A10G, L4, A100, A100-40G, A100-80G, H100, H200; the
    node advertises accelerator_type:<NAME>), gpus_per_node, min_workers (default 0: the group scales to zero),
    max_workers, spot (default false), disk_gib (root volume, default 200).
  EOT
  type = map(object({
    instance_type    = string
    accelerator_type = string
    gpus_per_node    = number
    min_workers      = optional(number, 0)
    max_workers      = number
    spot             = optional(bool, false)
    disk_gib         = optional(number, 200)
  }))
}

variable "idle_timeout_minutes" {
  description = "Minutes a worker may sit idle before the autoscaler terminates it."
  type        = number
  default     = 10
}

variable "upscaling_speed" {
  description = "Ray autoscaler upscaling_speed (pending nodes allowed, as a multiple of the current count)."
  type        = number
  default     = 1.0
}

variable "mlflow_admin_username" {
  description = "MLflow's admin account (created on first start; its password is generated into Secrets Manager). The nodes log runs with it."
  type        = string
  default     = "admin"
}

variable "db_instance_class" {
  description = "RDS instance class of MLflow's PostgreSQL."
  type        = string
  default     = "db.t4g.medium"
}

variable "db_allocated_storage_gib" {
  description = "Initial storage of the PostgreSQL instance, GiB (it grows on its own up to 5x this)."
  type        = number
  default     = 20
}

variable "db_multi_az" {
  description = "Run PostgreSQL Multi-AZ (a standby in a second zone; doubles its price)."
  type        = bool
  default     = false
}

variable "db_backup_retention_days" {
  description = "Days of automated PostgreSQL backups."
  type        = number
  default     = 7
}

variable "deletion_protection" {
  description = "Protect the database from `terraform destroy` (set false before tearing down for good)."
  type        = bool
  default     = true
}

variable "bucket_force_destroy" {
  description = "Let `terraform destroy` delete the bucket with its objects (checkpoints, datasets, artifacts) and the image repository with its images. Off: both must be emptied by hand first."
  type        = bool
  default     = false
}

variable "noncurrent_version_expiration_days" {
  description = "Days an overwritten or deleted object version is kept in the bucket before it expires."
  type        = number
  default     = 30
}

variable "checkpoint_ia_transition_days" {
  description = "Days after which objects under checkpoints/ move to S3 Standard-IA (cheaper to keep, dearer to read; S3 requires at least 30)."
  type        = number
  default     = 30

  validation {
    condition     = var.checkpoint_ia_transition_days >= 30
    error_message = "checkpoint_ia_transition_days must be at least 30 (S3's minimum for Standard-IA)."
  }
}

variable "log_retention_days" {
  description = "Days the VPC flow logs are kept in CloudWatch Logs."
  type        = number
  default     = 365
}

variable "create_spot_service_linked_role" {
  description = "Create the account's EC2 Spot service-linked role (AWSServiceRoleForEC2Spot), needed once per account before spot groups launch. Leave false if the account has it already (creating it twice fails)."
  type        = bool
  default     = false
}

variable "secret_generation" {
  description = "Generation of the generated secrets (Ray token, MLflow admin password, autoscaler SSH key): increase it by one and apply to rotate them all; the head is replaced and reads the new values (running workers must be stopped first)."
  type        = number
  default     = 1
}
