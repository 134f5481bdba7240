//! Datasets and sharding: loading samples (synthetic blobs, CSV, IDX, NPY; files of dataset
//! versions fetched first by `pinned`), splitting off the held-out validation set, and
//! deciding which samples each rank trains on at each step.
//!
//! Sharding is a pure function of (seed, epoch, position, world size): every rank computes the
//! same seeded permutation of the training split and takes its own slice of each global batch,
//! so ranks never exchange sample lists and the union of their slices is exactly the batch.

mod arrays;
mod csv_file;
pub mod pinned;
mod table;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use kiln_proto::v1::{DatasetSpec, dataset_spec::Source};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal, Uniform};

pub use csv_file::read_csv;
pub use table::{Samples, Table};

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
    /// An array file (IDX, NPY) is unreadable or does not hold what it should.
    #[error("{}: {message}", path.display())]
    Array {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// An array file's header is malformed.
    #[error(transparent)]
    Format(#[from] kiln_proto::formats::FormatError),
    /// A file could not be read.
    #[error("cannot read {}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
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
        Some(Source::Idx(i)) => (array(arrays::Format::Idx, &i.images, &i.labels, spec)?, 0),
        Some(Source::Npy(n)) => (array(arrays::Format::Npy, &n.x, &n.y, spec)?, 0),
        None => return Err(DataError::NoSource(spec.name.clone())),
    };
    Ok(split(all, spec.validation_split, split_seed))
}

fn array(format: arrays::Format, x: &str, y: &str, spec: &DatasetSpec) -> Result<Table, DataError> {
    let (features, classes) = (spec.features as usize, spec.classes);
    arrays::load(format, Path::new(x), Path::new(y), features, classes)
}

fn split(all: Table, validation_split: f64, seed: u64) -> Splits {
    let mut order: Vec<u32> = (0..all.len() as u32).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_5917));
    let n_val = (all.len() as f64 * validation_split).round() as usize;
    let train = order.split_off(n_val.min(all.len()));
    let all = Arc::new(all);
    Splits {
        train: Samples::new(all.clone(), train),
        validation: Samples::new(all, order),
    }
}

/// Gaussian blobs: one centre per class drawn from U(-4, 4) per feature, samples are
/// centre + N(0, 1) noise, classes assigned round-robin. Deterministic in `seed`.
fn blobs(spec: &DatasetSpec, samples: u64, seed: u64) -> Result<Table, DataError> {
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
    let mut x = Vec::with_capacity(samples as usize * features);
    let mut y = Vec::with_capacity(samples as usize);
    for i in 0..samples as usize {
        let class = i % classes;
        x.extend((0..features).map(|f| centres[class * features + f] + noise.sample(&mut rng)));
        y.push(class as u32);
    }
    Ok(Table::dense(features, x, y))
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
            pins: Vec::new(),
            fingerprints: Vec::new(),
        }
    }

    #[test]
    fn blobs_are_deterministic_and_split() {
        let a = load(&blobs_spec(1000, 0.2)).expect("load");
        let b = load(&blobs_spec(1000, 0.2)).expect("load");
        assert_eq!(a, b);
        assert_eq!(a.validation.len(), 200);
        assert_eq!(a.train.len(), 800);
        let (x, y) = a.train.gather(&(0..800).collect::<Vec<_>>());
        assert_eq!(x.len(), 800 * 5);
        assert!(y.iter().all(|&c| c < 3));
    }
}
