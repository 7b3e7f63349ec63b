# Who may talk to whom. Ray's ports (fixed by infra/scripts/ray-node.sh) are open only between the cluster's own
# groups; the dashboard/Jobs API (8265) and MLflow (5000) also to var.admin_cidrs (default: none, use the SSM
# tunnel); SSH only from the head (Ray's autoscaler) to the workers. No ingress from 0.0.0.0/0 or ::/0 anywhere:
# infra/checks/security_groups.py checks that on every apply-able file.

locals {
  # Ray's ports (infra/scripts/ray-node.sh): GCS, dashboard + Jobs API, Ray Client, the per-node agents, node
  # and object managers, and the worker processes' range.
  ray_ports = {
    gcs           = { from = 6379, to = 6379 }
    dashboard     = { from = 8265, to = 8265 }
    client        = { from = 10001, to = 10001 }
    node_services = { from = 52365, to = 52370 }
    worker_range  = { from = 10002, to = 19999 }
  }
  mlflow_port = 5000
  admin_ports = { dashboard = 8265, mlflow = local.mlflow_port }
  admin_rules = {
    for pair in setproduct(keys(local.admin_ports), var.admin_cidrs) :
    "${pair[0]}-${pair[1]}" => { port = local.admin_ports[pair[0]], cidr = pair[1] }
  }
}

resource "aws_security_group" "head" {
  name        = "${var.cluster_name}-head"
  description = "Ray head, autoscaler and MLflow server"
  vpc_id      = aws_vpc.main.id
}

resource "aws_security_group" "workers" {
  #checkov:skip=CKV2_AWS_5:Attached by the Ray autoscaler to the workers it launches (SecurityGroupIds in the autoscaler config), not by Terraform.
  name        = "${var.cluster_name}-workers"
  description = "Ray GPU workers (launched by the autoscaler)"
  vpc_id      = aws_vpc.main.id
}

resource "aws_security_group" "db" {
  name        = "${var.cluster_name}-db"
  description = "MLflow PostgreSQL: the head only"
  vpc_id      = aws_vpc.main.id
}

resource "aws_security_group" "endpoints" {
  name        = "${var.cluster_name}-endpoints"
  description = "VPC interface endpoints: HTTPS from the cluster"
  vpc_id      = aws_vpc.main.id
}

# --- Ray inside the cluster

resource "aws_vpc_security_group_ingress_rule" "head_from_workers" {
  for_each                     = local.ray_ports
  security_group_id            = aws_security_group.head.id
  referenced_security_group_id = aws_security_group.workers.id
  ip_protocol                  = "tcp"
  from_port                    = each.value.from
  to_port                      = each.value.to
  description                  = "Ray ${each.key} from the workers"
}

resource "aws_vpc_security_group_ingress_rule" "workers_from_head" {
  for_each                     = local.ray_ports
  security_group_id            = aws_security_group.workers.id
  referenced_security_group_id = aws_security_group.head.id
  ip_protocol                  = "tcp"
  from_port                    = each.value.from
  to_port                      = each.value.to
  description                  = "Ray ${each.key} from the head"
}

# Between workers everything: Ray, and NCCL / torch.distributed, which pick their own ports.
resource "aws_vpc_security_group_ingress_rule" "workers_from_workers" {
  security_group_id            = aws_security_group.workers.id
  referenced_security_group_id = aws_security_group.workers.id
  ip_protocol                  = "-1"
  description                  = "Ray, NCCL and torch.distributed between workers"
}

resource "aws_vpc_security_group_ingress_rule" "workers_ssh_from_head" {
  #checkov:skip=CKV_AWS_24:The source is the head's security group, not a CIDR (checkov misreads referenced_security_group_id).
  security_group_id            = aws_security_group.workers.id
  referenced_security_group_id = aws_security_group.head.id
  ip_protocol                  = "tcp"
  from_port                    = 22
  to_port                      = 22
  description                  = "SSH from the head: the Ray autoscaler sets workers up"
}

resource "aws_vpc_security_group_ingress_rule" "mlflow_from_workers" {
  security_group_id            = aws_security_group.head.id
  referenced_security_group_id = aws_security_group.workers.id
  ip_protocol                  = "tcp"
  from_port                    = local.mlflow_port
  to_port                      = local.mlflow_port
  description                  = "MLflow from the workers (runs, metrics, proxied artifacts)"
}

# --- Admin access (optional; default none: SSM port forwarding instead)

resource "aws_vpc_security_group_ingress_rule" "head_from_admins" {
  for_each          = local.admin_rules
  security_group_id = aws_security_group.head.id
  cidr_ipv4         = each.value.cidr
  ip_protocol       = "tcp"
  from_port         = each.value.port
  to_port           = each.value.port
  description       = "Admin network to port ${each.value.port}"
}

# --- Database and endpoints

resource "aws_vpc_security_group_ingress_rule" "db_from_head" {
  security_group_id            = aws_security_group.db.id
  referenced_security_group_id = aws_security_group.head.id
  ip_protocol                  = "tcp"
  from_port                    = 5432
  to_port                      = 5432
  description                  = "PostgreSQL from the MLflow server"
}

resource "aws_vpc_security_group_ingress_rule" "endpoints_from_cluster" {
  for_each                     = { head = aws_security_group.head.id, workers = aws_security_group.workers.id }
  security_group_id            = aws_security_group.endpoints.id
  referenced_security_group_id = each.value
  ip_protocol                  = "tcp"
  from_port                    = 443
  to_port                      = 443
  description                  = "AWS APIs from the ${each.key}"
}

# --- Egress: HTTPS anywhere (ECR, S3, Secrets Manager, model hubs via NAT), anything inside the VPC

resource "aws_vpc_security_group_egress_rule" "https" {
  for_each          = { head = aws_security_group.head.id, workers = aws_security_group.workers.id }
  security_group_id = each.value
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  description       = "HTTPS out (AWS APIs, image and model downloads)"
}

resource "aws_vpc_security_group_egress_rule" "in_vpc" {
  for_each          = { head = aws_security_group.head.id, workers = aws_security_group.workers.id }
  security_group_id = each.value
  cidr_ipv4         = var.vpc_cidr
  ip_protocol       = "-1"
  description       = "Anything inside the VPC (the other groups' ingress rules decide)"
}
