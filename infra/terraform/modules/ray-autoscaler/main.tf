# The Ray autoscaler's cluster configuration (the VM autoscaler, AWS node provider), from the worker-group map.
# Locals only, no provider: `terraform validate` and `terraform test` run offline (tests/infra/test_terraform.py).
#
# The head is not launched by Ray: Terraform launches it and it runs `ray start --head --autoscaling-config=...`
# (infra/scripts/ray-node.sh head with VLSA_AUTOSCALING_CONFIG). So this is the configuration `ray up` would have
# written after its bootstrap and prepare steps (Ray's monitor reads it as it is, without filling defaults): every
# id (subnets, security groups, instance profile, key pair, AMI) is explicit, nothing is created by Ray, and the
# defaults are written out (tests/infra/test_terraform.py checks that Ray's prepare_config changes nothing).

locals {
  head_node_type = "ray.head.default"
  secrets_dir    = "/run/vlsa"
  ray_token_file = "${local.secrets_dir}/ray-token"
  node_env_file  = "${local.secrets_dir}/node.env"
  # stdin -> a file only container_uid reads (the caller appends the path, $0 of sh -c).
  write_secret = "sudo sh -c 'umask 077 && f=$0 && cat > $f && chown ${var.container_uid} $f'"

  # Host commands (before the container starts): log in to ECR, fetch the Ray token and the MLflow password
  # into files only the container's user reads, mounted read-only. node.env also names the region (boto3's S3
  # client needs one). The AWS CLI uses the worker's instance profile.
  initialization_commands = [
    "sudo install -d -m 0700 -o ${var.container_uid} ${local.secrets_dir}",
    "aws ecr get-login-password --region ${var.region} | docker login --username AWS --password-stdin ${var.ecr_registry}",
    "aws secretsmanager get-secret-value --region ${var.region} --secret-id ${var.ray_token_secret_arn} --query SecretString --output text | ${local.write_secret} ${local.ray_token_file}",
    "printf 'AWS_REGION=%s\\nAWS_DEFAULT_REGION=%s\\nMLFLOW_TRACKING_USERNAME=%s\\nMLFLOW_TRACKING_PASSWORD=%s\\n' '${var.region}' '${var.region}' '${var.mlflow_username}' \"$(aws secretsmanager get-secret-value --region ${var.region} --secret-id ${var.mlflow_secret_arn} --query SecretString --output text)\" | ${local.write_secret} ${local.node_env_file}",
  ]

  # In the container (host network): the node's private address, the head's GCS address (the autoscaler sets
  # RAY_HEAD_IP), then the shared start-up script, detached (`ray start --block` runs in the foreground).
  worker_start_ray_commands = [
    "ray stop --force || true",
    join(" ", [
      "export VLSA_RAY_TOKEN_FILE=${local.ray_token_file}",
      "VLSA_NODE_IP=$(python -c 'import ray.util; print(ray.util.get_node_ip_address())')",
      "VLSA_HEAD_ADDRESS=$RAY_HEAD_IP:6379",
      "&& set -a && . ${local.node_env_file} && set +a",
      "&& setsid nohup ${var.platform_dir}/infra/scripts/ray-node.sh worker > /tmp/vlsa-ray-node.log 2>&1 < /dev/null &",
    ]),
  ]

  worker_node_types = {
    for name, g in var.worker_groups : name => {
      min_workers = g.min_workers
      max_workers = g.max_workers
      resources = {
        "GPU"                                    = g.gpus_per_node
        "accelerator_type:${g.accelerator_type}" = g.gpus_per_node
      }
      # Per type: what ray-node.sh advertises (accelerator_type:<NAME> x GPUs); joins run_options below.
      docker = {
        worker_run_options = [
          "--env VLSA_ACCELERATOR_TYPE=${g.accelerator_type}",
          "--env VLSA_NUM_GPUS=${g.gpus_per_node}",
        ]
      }
      node_config = merge(
        {
          InstanceType       = g.instance_type
          ImageId            = var.worker_ami_id
          SubnetIds          = var.subnet_ids
          SecurityGroupIds   = var.security_group_ids
          KeyName            = var.key_name
          IamInstanceProfile = { Arn = var.instance_profile_arn }
          MetadataOptions    = { HttpTokens = "required", HttpEndpoint = "enabled", HttpPutResponseHopLimit = 2 }
          BlockDeviceMappings = [{
            DeviceName = "/dev/xvda"
            Ebs = {
              VolumeSize          = g.disk_gib
              VolumeType          = "gp3"
              Encrypted           = true
              DeleteOnTermination = true
            }
          }]
          TagSpecifications = [{
            ResourceType = "volume"
            Tags         = [{ Key = "ray-cluster-name", Value = var.cluster_name }]
          }]
        },
        # Spot groups only (a for expression, as a conditional cannot return objects of two shapes).
        {
          for key, value in {
            InstanceMarketOptions = {
              MarketType  = "spot"
              SpotOptions = { SpotInstanceType = "one-time", InstanceInterruptionBehavior = "terminate" }
            }
          } : key => value if g.spot
        },
      )
    }
  }

  config = {
    cluster_name         = var.cluster_name
    max_workers          = sum(concat([0], [for g in var.worker_groups : g.max_workers]))
    upscaling_speed      = var.upscaling_speed
    idle_timeout_minutes = var.idle_timeout_minutes
    provider = {
      type                = "aws"
      region              = var.region
      use_internal_ips    = true
      cache_stopped_nodes = false
    }
    auth = {
      ssh_user        = var.ssh_user
      ssh_private_key = var.ssh_private_key_path
    }
    docker = {
      image           = var.docker_image
      container_name  = "vlsa-ray-worker"
      pull_before_run = true
      # Ray adds --net=host. The secrets are root-only files on the host, mounted read-only (the docker CLI
      # runs as ssh_user and could not read them for --env-file); the start command sources node.env.
      run_options = [
        "--gpus all",
        "--shm-size=32g",
        "--ulimit nofile=65536:65536",
        "-v ${local.secrets_dir}:${local.secrets_dir}:ro",
      ]
    }
    head_node_type = local.head_node_type
    available_node_types = merge(
      {
        (local.head_node_type) = {
          resources   = {}
          min_workers = 0
          max_workers = 0
          node_config = { InstanceType = var.head_instance_type }
        }
      },
      local.worker_node_types,
    )
    # What `ray up` fills in before it hands the file to the head: the monitor reads the file as it is.
    file_mounts                   = {}
    cluster_synced_files          = []
    file_mounts_sync_continuously = false
    rsync_exclude                 = []
    rsync_filter                  = []
    initialization_commands       = local.initialization_commands
    setup_commands                = []
    head_setup_commands           = []
    worker_setup_commands         = []
    head_start_ray_commands       = []
    worker_start_ray_commands     = local.worker_start_ray_commands
  }
}
