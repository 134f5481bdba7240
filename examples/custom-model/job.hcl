# Trains the residual MLP of this crate with its own worker binary:
#
#   cargo build --release -p kiln-example-custom-model
#   kiln up examples/custom-model
#
# A debug build lives elsewhere: pass --var worker_binary=../../target/debug/resmlp-worker.

variable "worker_binary" {
  type        = string
  default     = "../../target/release/resmlp-worker"
  description = "The worker binary built from this crate (relative to this directory)."
}

variable "workers" {
  type    = number
  default = 2
}

cluster "local" {
  provider = "local"

  node_pool "cpu" {
    count = var.workers
  }

  # The nodes run this crate's binary, which offers `resmlp` besides the built-in kinds.
  worker {
    binary = var.worker_binary
  }

  storage {
    url = "file://.kiln/store"
  }

  state {
    backend = "embedded"
    path    = ".kiln/state"
  }
}

job "resmlp" {
  cluster = "local"

  model "resmlp" {
    inputs  = 16
    width   = 32
    blocks  = 2
    classes = 4
  }

  dataset "blobs" {
    source           = "synthetic:blobs"
    samples          = 4096
    features         = 16
    classes          = 4
    seed             = 7
    validation_split = 0.1
  }

  training {
    workers        = var.workers
    batch_size     = 32
    epochs         = 20
    seed           = 42
    clip_grad_norm = 5.0

    optimizer "sgd" {
      learning_rate = 0.05
      momentum      = 0.9
      nesterov      = true
      weight_decay  = 0.0001
    }

    lr_schedule {
      kind         = "cosine"
      warmup_steps = 50
      min_lr       = 0.001
    }
  }

  checkpoint {
    every_steps = 25
    keep        = 2
  }

  restart {
    max_restarts = 3
    backoff      = "0s"
  }
}
