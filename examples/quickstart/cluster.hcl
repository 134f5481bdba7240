# A local cluster: every node is a kiln-worker process on this machine.
cluster "local" {
  provider = "local"

  node_pool "cpu" {
    count         = 2
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
