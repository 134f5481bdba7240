cluster "local" {
  provider = "local"

  node_pool "cpu" {
    count = 2
  }
}
