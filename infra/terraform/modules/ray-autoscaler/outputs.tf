output "config" {
  description = "The autoscaler configuration as an object (what config_yaml encodes)."
  value       = local.config
}

output "config_yaml" {
  description = "The autoscaler configuration as YAML: the file VLSA_AUTOSCALING_CONFIG names on the head."
  value       = yamlencode(local.config)
}

output "max_gpus" {
  description = "GPUs of every worker group at its max_workers, per accelerator type."
  value = {
    for t in distinct([for g in var.worker_groups : g.accelerator_type]) :
    t => sum([for g in var.worker_groups : g.gpus_per_node * g.max_workers if g.accelerator_type == t])
  }
}
