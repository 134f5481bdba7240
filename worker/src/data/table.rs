//! A dataset in memory or mapped from its file ([`Table`]), and the views of it that training
//! reads ([`Samples`]): a split is a list of row numbers, never a copy of the rows.

use std::sync::Arc;

use kiln_proto::formats::DType;
use kiln_versions::data::FeatureStats;
use kiln_versions::data::describe::{MAX_ARRAY_FEATURES, Ranges};

/// Every sample of a dataset: features row-major `[rows, features]`, and the class of each row.
#[derive(Debug)]
pub struct Table {
    features: usize,
    values: Values,
    labels: Vec<u32>,
    /// The features' names (a CSV header's columns); empty: named by position.
    names: Vec<String>,
}

/// Where the feature values live.
#[derive(Debug)]
enum Values {
    /// Decoded floats (synthetic and CSV data).
    Dense(Vec<f32>),
    /// An array file's data, decoded row by row as batches are gathered.
    Array {
        bytes: Bytes,
        offset: usize,
        dtype: DType,
        big_endian: bool,
    },
}

/// The bytes of an array file: memory-mapped when it is uncompressed, else decompressed.
#[derive(Debug)]
pub(super) enum Bytes {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Mapped(map) => map,
            Bytes::Owned(bytes) => bytes,
        }
    }
}

impl Table {
    /// A table of decoded floats.
    pub(super) fn dense(features: usize, values: Vec<f32>, labels: Vec<u32>) -> Self {
        debug_assert_eq!(values.len(), features * labels.len());
        Self {
            features,
            values: Values::Dense(values),
            labels,
            names: Vec::new(),
        }
    }

    /// Names the features (in column order).
    pub(super) fn with_names(mut self, names: Vec<String>) -> Self {
        debug_assert_eq!(names.len(), self.features);
        self.names = names;
        self
    }

    /// A table over an array file's data (already checked to hold `labels.len()` rows of
    /// `features` elements of `dtype` from `offset`). Unsigned bytes are pixels: scaled to
    /// [0, 1].
    pub(super) fn array(
        features: usize,
        bytes: Bytes,
        offset: usize,
        dtype: DType,
        big_endian: bool,
        labels: Vec<u32>,
    ) -> Self {
        Self {
            features,
            values: Values::Array {
                bytes,
                offset,
                dtype,
                big_endian,
            },
            labels,
            names: Vec::new(),
        }
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Appends the features of row `i` to `out`.
    fn extend_row(&self, i: usize, out: &mut Vec<f32>) {
        let f = self.features;
        match &self.values {
            Values::Dense(values) => out.extend_from_slice(&values[i * f..(i + 1) * f]),
            Values::Array {
                bytes,
                offset,
                dtype,
                big_endian,
            } => {
                let size = dtype.size();
                let start = offset + i * f * size;
                let row = &bytes[start..start + f * size];
                decode(row, *dtype, *big_endian, out);
            }
        }
    }
}

/// Decodes `row` into floats: bytes are scaled to [0, 1], other types converted.
fn decode(row: &[u8], dtype: DType, big_endian: bool, out: &mut Vec<f32>) {
    macro_rules! each {
        ($ty:ty, $n:literal, $conv:expr) => {
            out.extend(row.chunks_exact($n).map(|c| {
                let bytes: [u8; $n] = c.try_into().unwrap_or([0; $n]);
                let v = if big_endian {
                    <$ty>::from_be_bytes(bytes)
                } else {
                    <$ty>::from_le_bytes(bytes)
                };
                $conv(v)
            }))
        };
    }
    match dtype {
        DType::U8 => out.extend(row.iter().map(|&b| f32::from(b) / 255.0)),
        DType::I8 => out.extend(row.iter().map(|&b| f32::from(b as i8))),
        DType::I16 => each!(i16, 2, f32::from),
        DType::U16 => each!(u16, 2, f32::from),
        DType::I32 => each!(i32, 4, |v| v as f32),
        DType::U32 => each!(u32, 4, |v| v as f32),
        DType::I64 => each!(i64, 8, |v| v as f32),
        DType::U64 => each!(u64, 8, |v| v as f32),
        DType::F32 => each!(f32, 4, |v| v),
        DType::F64 => each!(f64, 8, |v| v as f32),
    }
}

/// Some rows of a [`Table`], in a fixed order.
#[derive(Debug, Clone)]
pub struct Samples {
    table: Arc<Table>,
    rows: Vec<u32>,
}

impl PartialEq for Samples {
    /// Equal when they hold the same values, wherever those live.
    fn eq(&self, other: &Self) -> bool {
        let all = |s: &Samples| s.gather(&(0..s.len() as u32).collect::<Vec<_>>());
        self.features() == other.features() && all(self) == all(other)
    }
}

impl Samples {
    /// The rows `rows` of `table`.
    pub(super) fn new(table: Arc<Table>, rows: Vec<u32>) -> Self {
        Self { table, rows }
    }

    /// Features per sample.
    pub fn features(&self) -> usize {
        self.table.features
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Where each sample is in the source: its row (CSV data row, array index), from 0.
    pub fn rows(&self) -> &[u32] {
        &self.rows
    }

    /// Per-feature statistics of these samples' inputs as the model takes them (bytes scaled
    /// as in training), named by the table's columns or by position: the reference that live
    /// inputs are compared with. None for samples of more than [`MAX_ARRAY_FEATURES`] values.
    pub fn reference(&self) -> Vec<FeatureStats> {
        let width = self.features();
        if width as u64 > MAX_ARRAY_FEATURES {
            return Vec::new();
        }
        // Two passes (range, then bins), one row in memory.
        let mut row = Vec::with_capacity(width);
        let mut each_row = |f: &mut dyn FnMut(&[f32])| {
            for &r in &self.rows {
                row.clear();
                self.table.extend_row(r as usize, &mut row);
                f(&row);
            }
        };
        let mut ranges = Ranges::new(width);
        each_row(&mut |r| ranges.push(r));
        let mut bins = ranges.bins();
        each_row(&mut |r| bins.push(r));
        let names = &self.table.names;
        bins.finish(|i| names.get(i).cloned().unwrap_or_else(|| i.to_string()))
    }

    /// The features (row-major) and labels of the samples at positions `indices`.
    pub fn gather(&self, indices: &[u32]) -> (Vec<f32>, Vec<u32>) {
        let mut x = Vec::with_capacity(indices.len() * self.features());
        let mut y = Vec::with_capacity(indices.len());
        for &i in indices {
            let row = self.rows[i as usize] as usize;
            self.table.extend_row(row, &mut x);
            y.push(self.table.labels[row]);
        }
        (x, y)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_rows_decode_like_dense_ones() {
        let labels = vec![0, 1];
        let pixels = Table::array(
            2,
            Bytes::Owned(vec![9, 0, 255, 51, 102]),
            1,
            DType::U8,
            true,
            labels.clone(),
        );
        let floats: Vec<u8> = [0.5f32, -1.0, 2.0, 8.0]
            .iter()
            .flat_map(|v| v.to_be_bytes())
            .collect();
        let be = Table::array(2, Bytes::Owned(floats), 0, DType::F32, true, labels.clone());
        let dense = Table::dense(2, vec![0.5, -1.0, 2.0, 8.0], labels);
        let view = |t: Table| Samples::new(Arc::new(t), vec![1, 0]);
        assert_eq!(
            view(pixels).gather(&[0, 1]),
            (vec![0.2, 0.4, 0.0, 1.0], vec![1, 0])
        );
        assert_eq!(view(be), view(dense));
    }
}
