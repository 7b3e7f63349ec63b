# `terraform test` of the autoscaler configuration: plan-only, no provider.

variables {
  cluster_name         = "vlsa-test"
  region               = "us-east-1"
  head_instance_type   = "m7i.xlarge"
  worker_ami_id        = "ami-0123456789abcdef0"
  subnet_ids           = ["subnet-aaaa", "subnet-bbbb"]
  security_group_ids   = ["sg-workers"]
  instance_profile_arn = "arn:aws:iam::123456789012:instance-profile/vlsa-test-worker"
  key_name             = "vlsa-test-autoscaler"
  ssh_private_key_path = "/etc/vlsa/ssh/autoscaler.pem"
  docker_image         = "123456789012.dkr.ecr.us-east-1.amazonaws.com/vlsa-platform:test"
  ecr_registry         = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
  ray_token_secret_arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:vlsa-test/ray-token"
  mlflow_secret_arn    = "arn:aws:secretsmanager:us-east-1:123456789012:secret:vlsa-test/mlflow-admin"
  mlflow_username      = "admin"
  worker_groups = {
    a10g = { instance_type = "g5.12xlarge", accelerator_type = "A10G", gpus_per_node = 4, max_workers = 4, spot = true }
    h100 = { instance_type = "p5.48xlarge", accelerator_type = "H100", gpus_per_node = 8, min_workers = 1, max_workers = 2, disk_gib = 1000 }
  }
}

run "node_types_follow_the_groups" {
  command = plan

  assert {
    condition     = output.config.available_node_types["a10g"].resources == { "GPU" = 4, "accelerator_type:A10G" = 4 }
    error_message = "A worker type advertises GPU and accelerator_type:<NAME>, both gpus_per_node."
  }
  assert {
    condition     = output.config.available_node_types["h100"].min_workers == 1 && output.config.available_node_types["a10g"].min_workers == 0
    error_message = "min_workers comes from the group and defaults to 0 (scale to zero)."
  }
  assert {
    condition     = output.config.max_workers == 6 && output.max_gpus == { A10G = 16, H100 = 16 }
    error_message = "The cluster's max_workers is the groups' sum."
  }
  assert {
    condition     = output.config.available_node_types["ray.head.default"].max_workers == 0 && output.config.head_node_type == "ray.head.default"
    error_message = "The head's node type is declared and never launched by the autoscaler."
  }
  assert {
    condition     = output.config.idle_timeout_minutes == 10 && output.config.provider.use_internal_ips
    error_message = "Idle workers are terminated after idle_timeout_minutes; nodes talk over private addresses."
  }
}

run "spot_only_where_asked" {
  command = plan

  assert {
    condition     = output.config.available_node_types["a10g"].node_config.InstanceMarketOptions.MarketType == "spot"
    error_message = "A spot group asks for spot instances."
  }
  assert {
    condition     = !contains(keys(output.config.available_node_types["h100"].node_config), "InstanceMarketOptions")
    error_message = "An on-demand group has no InstanceMarketOptions."
  }
  assert {
    condition     = output.config.available_node_types["h100"].node_config.BlockDeviceMappings[0].Ebs.VolumeSize == 1000 && output.config.available_node_types["a10g"].node_config.BlockDeviceMappings[0].Ebs.VolumeSize == 200
    error_message = "disk_gib sizes the root volume (default 200)."
  }
  assert {
    condition     = alltrue([for t in ["a10g", "h100"] : output.config.available_node_types[t].node_config.BlockDeviceMappings[0].Ebs.Encrypted && output.config.available_node_types[t].node_config.MetadataOptions.HttpTokens == "required"])
    error_message = "Worker disks are encrypted and IMDSv2 is required."
  }
}

run "workers_start_with_the_shared_script" {
  command = plan

  assert {
    condition     = strcontains(output.config.worker_start_ray_commands[1], "/opt/vlsa/infra/scripts/ray-node.sh worker")
    error_message = "Workers start Ray with infra/scripts/ray-node.sh worker."
  }
  assert {
    condition     = strcontains(output.config.worker_start_ray_commands[1], "VLSA_HEAD_ADDRESS=$RAY_HEAD_IP:6379")
    error_message = "Workers join the head's GCS on port 6379."
  }
  assert {
    condition     = contains(output.config.available_node_types["h100"].docker.worker_run_options, "--env VLSA_ACCELERATOR_TYPE=H100") && contains(output.config.available_node_types["h100"].docker.worker_run_options, "--env VLSA_NUM_GPUS=8")
    error_message = "Each node type passes its accelerator type and GPU count to ray-node.sh."
  }
  assert {
    condition     = contains(output.config.docker.run_options, "--gpus all")
    error_message = "Worker containers see the GPUs."
  }
  assert {
    condition     = strcontains(yamlencode(output.config), "ray-cluster-name") && !strcontains(output.config_yaml, ": null")
    error_message = "The YAML is complete (no null left by an optional field)."
  }
}

run "unknown_accelerator_is_refused" {
  command = plan

  variables {
    worker_groups = {
      bad = { instance_type = "g5.xlarge", accelerator_type = "A10", gpus_per_node = 1, max_workers = 1 }
    }
  }
  expect_failures = [var.worker_groups]
}

run "min_above_max_is_refused" {
  command = plan

  variables {
    worker_groups = {
      bad = { instance_type = "g5.xlarge", accelerator_type = "A10G", gpus_per_node = 1, min_workers = 3, max_workers = 1 }
    }
  }
  expect_failures = [var.worker_groups]
}

run "workers_get_their_secrets_from_secrets_manager" {
  command = plan

  assert {
    condition     = length([for c in output.config.initialization_commands : c if strcontains(c, "--secret-id arn:aws:secretsmanager:us-east-1:123456789012:secret:vlsa-test/ray-token") && strcontains(c, "/run/vlsa/ray-token")]) == 1
    error_message = "Workers fetch the Ray token from Secrets Manager into /run/vlsa/ray-token."
  }
  assert {
    condition     = strcontains(output.config.worker_start_ray_commands[1], "VLSA_RAY_TOKEN_FILE=/run/vlsa/ray-token") && contains(output.config.docker.run_options, "-v /run/vlsa:/run/vlsa:ro")
    error_message = "The container reads the token from the host's file, mounted read-only."
  }
  assert {
    condition     = length([for c in output.config.initialization_commands : c if strcontains(c, "--secret-id arn:aws:secretsmanager:us-east-1:123456789012:secret:vlsa-test/mlflow-admin") && strcontains(c, "/run/vlsa/node.env")]) == 1
    error_message = "The MLflow password is fetched at boot into node.env, which the start command sources."
  }
}
