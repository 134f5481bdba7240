# Data-parallel training of an MLP classifier on synthetic Gaussian blobs.
job "quickstart" {
  cluster = "local"

  model "mlp" {
    inputs  = 32
    hidden  = [64, 64]
    classes = 4
  }

  dataset "blobs" {
    source           = "synthetic:blobs"
    samples          = 8192
    features         = 32
    classes          = 4
    seed             = 7
    validation_split = 0.1
  }

  training {
    workers    = 2
    batch_size = 64 # per worker
    epochs     = 5
    seed       = 42

    optimizer "adam" {
      learning_rate = 0.001
    }
  }

  checkpoint {
    every_steps = 100
    keep        = 3
  }
}
