//! Datasets and sharding: loading samples (synthetic blobs, CSV) into memory, splitting off the
//! held-out validation set, and deciding which samples each rank trains on at each step.
//!
//! Sharding is a pure function of (seed, epoch, position, world size): every rank computes the
//! same seeded permutation of the training split and takes its own slice of each global batch,
//! so ranks never exchange sample lists and the union of their slices is exactly the batch.

use std::path::{Path, PathBuf};

use kiln_proto::v1::{DatasetSpec, dataset_spec::Source};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal, Uniform};

/// Samples held in memory: `x` is row-major `[len, features]`, `y` the class of each row.
#[derive(Debug, Clone, PartialEq)]
pub struct Samples {
    /// Features per sample.
    pub features: usize,
    /// Row-major feature matrix.
    pub x: Vec<f32>,
    /// Class index of each row.
    pub y: Vec<u32>,
}

impl Samples {
    fn with_capacity(features: usize, rows: usize) -> Self {
        Self {
            features,
            x: Vec::with_capacity(rows * features),
            y: Vec::with_capacity(rows),
        }
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.y.len()
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.y.is_empty()
    }

    /// The feature row of sample `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.x[i * self.features..(i + 1) * self.features]
    }

    /// Copies the rows `indices` into a new feature matrix and label vector.
    pub fn gather(&self, indices: &[u32]) -> (Vec<f32>, Vec<u32>) {
        let mut x = Vec::with_capacity(indices.len() * self.features);
        let mut y = Vec::with_capacity(indices.len());
        for &i in indices {
            x.extend_from_slice(self.row(i as usize));
            y.push(self.y[i as usize]);
        }
        (x, y)
    }

    fn push(&mut self, row: &[f32], label: u32) {
        self.x.extend_from_slice(row);
        self.y.push(label);
    }
}

/// The training and validation splits of a dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct Splits {
    /// Samples trained on.
    pub train: Samples,
    /// Held-out samples for validation accuracy.
    pub validation: Samples,
}

/// Why a dataset could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// The spec names no source.
    #[error("dataset {0:?} has no source")]
    NoSource(String),
    /// The CSV file could not be opened or read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: csv::Error,
    },
    /// A CSV row is malformed.
    #[error("{path}:{line}: {message}")]
    Row {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: u64,
        /// What is wrong with it.
        message: String,
    },
    /// The spec does not describe the data.
    #[error("dataset {name:?}: {message}")]
    Spec {
        /// Dataset name.
        name: String,
        /// What is wrong.
        message: String,
    },
}

/// Loads the dataset `spec` and splits off its validation set.
///
/// The split is a seeded shuffle (seed = the dataset's seed for blobs, 0 for files), so every
/// rank derives the same splits without coordination.
pub fn load(spec: &DatasetSpec) -> Result<Splits, DataError> {
    let (all, split_seed) = match &spec.source {
        Some(Source::Blobs(b)) => (blobs(spec, b.samples, b.seed)?, b.seed),
        Some(Source::Csv(c)) => (
            read_csv(
                Path::new(&c.path),
                &c.label,
                spec.features as usize,
                spec.classes,
            )?,
            0,
        ),
        None => return Err(DataError::NoSource(spec.name.clone())),
    };
    Ok(split(all, spec.validation_split, split_seed))
}

fn split(all: Samples, validation_split: f64, seed: u64) -> Splits {
    let mut order: Vec<u32> = (0..all.len() as u32).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_5917));
    let n_val = (all.len() as f64 * validation_split).round() as usize;
    let (val_idx, train_idx) = order.split_at(n_val.min(all.len()));
    let pick = |idx: &[u32]| {
        let (x, y) = all.gather(idx);
        Samples {
            features: all.features,
            x,
            y,
        }
    };
    Splits {
        train: pick(train_idx),
        validation: pick(val_idx),
    }
}

/// Gaussian blobs: one centre per class drawn from U(-4, 4) per feature, samples are
/// centre + N(0, 1) noise, classes assigned round-robin. Deterministic in `seed`.
fn blobs(spec: &DatasetSpec, samples: u64, seed: u64) -> Result<Samples, DataError> {
    let (features, classes) = (spec.features as usize, spec.classes as usize);
    if features == 0 || classes == 0 {
        return Err(DataError::Spec {
            name: spec.name.clone(),
            message: "blobs need at least one feature and one class".into(),
        });
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let centre = Uniform::new(-4.0f32, 4.0).map_err(|e| DataError::Spec {
        name: spec.name.clone(),
        message: e.to_string(),
    })?;
    let centres: Vec<f32> = (0..classes * features)
        .map(|_| centre.sample(&mut rng))
        .collect();
    let noise = Normal::new(0.0f32, 1.0).map_err(|e| DataError::Spec {
        name: spec.name.clone(),
        message: e.to_string(),
    })?;
    let mut out = Samples::with_capacity(features, samples as usize);
    let mut row = vec![0.0f32; features];
    for i in 0..samples as usize {
        let class = i % classes;
        for (f, v) in row.iter_mut().enumerate() {
            *v = centres[class * features + f] + noise.sample(&mut rng);
        }
        out.push(&row, class as u32);
    }
    Ok(out)
}

/// Reads a CSV file with a header. `label` names the class column (integers in `0..classes`);
/// every other column is a numeric feature. Errors name the 1-based line.
pub fn read_csv(
    path: &Path,
    label: &str,
    features: usize,
    classes: u32,
) -> Result<Samples, DataError> {
    let read_err = |source| DataError::Read {
        path: path.to_owned(),
        source,
    };
    let row_err = |line: u64, message: String| DataError::Row {
        path: path.to_owned(),
        line,
        message,
    };
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_path(path)
        .map_err(read_err)?;
    let header = reader.headers().map_err(read_err)?.clone();
    let label_col = header
        .iter()
        .position(|h| h == label)
        .ok_or_else(|| row_err(1, format!("no column named {label:?} in the header")))?;
    if header.len() - 1 != features {
        return Err(row_err(
            1,
            format!(
                "header has {} feature columns, the spec expects {features}",
                header.len() - 1
            ),
        ));
    }
    let mut out = Samples::with_capacity(features, 0);
    let mut row = Vec::with_capacity(features);
    for record in reader.records() {
        let record = record.map_err(|e| {
            let line = e.position().map_or(0, |p| p.line());
            match e.kind() {
                csv::ErrorKind::UnequalLengths {
                    expected_len, len, ..
                } => row_err(line, format!("{len} fields, the header has {expected_len}")),
                _ => row_err(line, e.to_string()),
            }
        })?;
        let line = record.position().map_or(0, |p| p.line());
        row.clear();
        let mut class = 0;
        for (col, field) in record.iter().enumerate() {
            if col == label_col {
                class = field
                    .parse::<u32>()
                    .ok()
                    .filter(|c| *c < classes)
                    .ok_or_else(|| {
                        row_err(
                            line,
                            format!(
                                "label {field:?} is not a class index in 0..{classes} (column {label:?})"
                            ),
                        )
                    })?;
            } else {
                let value = field.parse::<f32>().ok().filter(|v| v.is_finite());
                row.push(value.ok_or_else(|| {
                    row_err(
                        line,
                        format!("{:?} in column {:?} is not a number", field, &header[col]),
                    )
                })?);
            }
        }
        out.push(&row, class);
    }
    Ok(out)
}

/// The sample order of `epoch`: a permutation of `0..len` seeded by (seed, epoch).
pub fn epoch_order(seed: u64, epoch: u32, len: usize) -> Vec<u32> {
    let mut order: Vec<u32> = (0..len as u32).collect();
    let mix = seed ^ (u64::from(epoch).wrapping_add(1)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(mix));
    order
}

/// The positions `[start, end)` within a global batch of `batch_len` samples that `rank` of
/// `world` trains on: contiguous, sizes differing by at most one, covering the batch exactly.
pub fn rank_range(batch_len: usize, rank: usize, world: usize) -> (usize, usize) {
    let base = batch_len / world;
    let extra = batch_len % world;
    let start = rank * base + rank.min(extra);
    let len = base + usize::from(rank < extra);
    (start, start + len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn rank_ranges_partition_the_batch(batch in 0usize..500, world in 1usize..9) {
            let mut next = 0;
            for rank in 0..world {
                let (s, e) = rank_range(batch, rank, world);
                prop_assert_eq!(s, next);
                prop_assert!(e - s <= batch / world + 1);
                next = e;
            }
            prop_assert_eq!(next, batch);
        }

        #[test]
        fn epoch_order_is_a_permutation(seed in any::<u64>(), epoch in 0u32..50, len in 0usize..300) {
            let mut order = epoch_order(seed, epoch, len);
            order.sort_unstable();
            prop_assert_eq!(order, (0..len as u32).collect::<Vec<_>>());
        }
    }

    #[test]
    fn epochs_differ_and_are_reproducible() {
        assert_eq!(epoch_order(1, 0, 100), epoch_order(1, 0, 100));
        assert_ne!(epoch_order(1, 0, 100), epoch_order(1, 1, 100));
        assert_ne!(epoch_order(1, 0, 100), epoch_order(2, 0, 100));
    }

    fn blobs_spec(samples: u64, split: f64) -> DatasetSpec {
        DatasetSpec {
            name: "b".into(),
            source: Some(Source::Blobs(kiln_proto::v1::BlobsSource {
                samples,
                seed: 3,
            })),
            features: 5,
            classes: 3,
            validation_split: split,
        }
    }

    #[test]
    fn blobs_are_deterministic_and_split() {
        let a = load(&blobs_spec(1000, 0.2)).expect("load");
        let b = load(&blobs_spec(1000, 0.2)).expect("load");
        assert_eq!(a, b);
        assert_eq!(a.validation.len(), 200);
        assert_eq!(a.train.len(), 800);
        assert_eq!(a.train.x.len(), 800 * 5);
        assert!(a.train.y.iter().all(|&c| c < 3));
    }

    #[test]
    fn csv_reports_the_line_of_a_bad_row() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("d.csv");
        std::fs::write(&path, "a,b,label\n1,2,0\n3,4,1\n5,x,1\n").expect("write");
        let err = read_csv(&path, "label", 2, 2).expect_err("bad row");
        assert!(err.to_string().contains("d.csv:4:"), "{err}");
        assert!(err.to_string().contains("\"x\""), "{err}");

        std::fs::write(&path, "a,b,label\n1,2,0\n3,4\n").expect("write");
        let err = read_csv(&path, "label", 2, 2).expect_err("short row");
        assert!(err.to_string().contains("d.csv:3:"), "{err}");

        std::fs::write(&path, "a,label,b\n1,1,2\n3,0,4\n").expect("write");
        let ok = read_csv(&path, "label", 2, 2).expect("good file");
        assert_eq!(ok.x, vec![1.0, 2.0, 3.0, 4.0]);
        assert_eq!(ok.y, vec![1, 0]);

        std::fs::write(&path, "a,b,label\n1,2,7\n").expect("write");
        let err = read_csv(&path, "label", 2, 2).expect_err("label out of range");
        assert!(err.to_string().contains("d.csv:2:"), "{err}");
    }
}
