# A mixed cluster: A10G (spot), A100-80G and H100 groups, all scaling to zero when idle.
# terraform apply -var-file=examples/mixed-gpu.tfvars  (infra/README.md). No secret belongs in this file.

region             = "us-east-1"
cluster_name       = "vlsa"
availability_zones = ["us-east-1a", "us-east-1b", "us-east-1c"]
image_tag          = "v0.1.0"

# Tunnel through SSM by default; a VPN range could go here (never 0.0.0.0/0).
admin_cidrs = []

idle_timeout_minutes = 10

worker_groups = {
  a10g = {
    instance_type    = "g5.12xlarge" # 4 x A10G 24 GB, 48 vCPU
    accelerator_type = "A10G"
    gpus_per_node    = 4
    min_workers      = 0
    max_workers      = 4
    spot             = true
    disk_gib         = 300
  }
  a100_80g = {
    instance_type    = "p4de.24xlarge" # 8 x A100 80 GB, NVLink
    accelerator_type = "A100-80G"
    gpus_per_node    = 8
    min_workers      = 0
    max_workers      = 2
    spot             = false
    disk_gib         = 1000
  }
  h100 = {
    instance_type    = "p5.48xlarge" # 8 x H100 80 GB, NVLink
    accelerator_type = "H100"
    gpus_per_node    = 8
    min_workers      = 0
    max_workers      = 2
    spot             = false
    disk_gib         = 1000
  }
}
