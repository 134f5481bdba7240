cluster "local" {
  provider = "local"

  # One node per worker of the job (`var.workers` is declared in job.hcl).
  node_pool "cpu" {
    count = var.workers
  }
}
