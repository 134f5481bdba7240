# A local cluster: every node is a kiln-worker process on this machine.
cluster "local" {
  provider = "local"

  # One node per worker of the job (`var.workers` is declared in job.hcl).
  node_pool "cpu" {
    count         = var.workers
    cpus_per_node = 1
    gpus_per_node = 0
  }

  # Checkpoints; relative paths resolve against this directory.
  storage {
    url = "file://.kiln/store"
  }

  state {
    backend = "embedded"
    path    = ".kiln/state"
  }
}
