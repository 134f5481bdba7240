# Trains on a CSV file shipped with the example: 4 numeric features and an integer label.
variable "workers" {
  type        = number
  default     = 2
  description = "Ranks to train with; the cluster in cluster.hcl gets one node per worker."
}

locals {
  # data/train.csv: every column but `label` is a feature; labels are 0, 1 and 2.
  features = 4
  classes  = 3
}

job "csv-classifier" {
  cluster = "local"

  model "mlp" {
    inputs  = local.features
    hidden  = [16]
    classes = local.classes
  }

  dataset "measurements" {
    source           = "file://data/train.csv"
    format           = "csv"
    label            = "label"
    classes          = local.classes
    validation_split = 0.2
  }

  training {
    workers    = var.workers
    batch_size = 16
    epochs     = 20
    seed       = 1

    optimizer "adam" {
      learning_rate = 0.01
    }
  }
}
