# Trains on a CSV file shipped with the example: 4 numeric features and an integer label.
job "csv-classifier" {
  cluster = "local"

  model "mlp" {
    inputs  = 4
    hidden  = [16]
    classes = 3
  }

  dataset "measurements" {
    source           = "file://data/train.csv"
    format           = "csv"
    label            = "label"
    classes          = 3
    validation_split = 0.2
  }

  training {
    workers    = 2
    batch_size = 16
    epochs     = 20
    seed       = 1

    optimizer "adam" {
      learning_rate = 0.01
    }
  }
}
