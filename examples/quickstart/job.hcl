# Data-parallel training of an MLP classifier on synthetic Gaussian blobs.
#
# Change the defaults without editing this file: `kiln up examples/quickstart --var workers=1`,
# a `--var-file`, or the environment (`KILN_VAR_workers=1`).
variable "workers" {
  type        = number
  default     = 2
  description = "Ranks to train with; the cluster in cluster.hcl gets one node per worker."

  validation {
    condition     = var.workers >= 1
    error_message = "At least one worker is needed."
  }
}

variable "epochs" {
  type        = number
  default     = 5
  description = "Passes over the training split."
}

locals {
  # The model's input and output sizes must match the dataset's: declare them once.
  features = 32
  classes  = 4
}

job "quickstart" {
  cluster = "local"

  model "mlp" {
    inputs  = local.features
    hidden  = [64, 64]
    classes = local.classes
  }

  dataset "blobs" {
    source           = "synthetic:blobs"
    samples          = 8192
    features         = local.features
    classes          = local.classes
    seed             = 7
    validation_split = 0.1
  }

  training {
    workers    = var.workers
    batch_size = 64 # per worker
    epochs     = var.epochs
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
