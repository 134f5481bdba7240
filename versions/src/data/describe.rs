//! What a pushed dataset holds, for its manifest: the format, the number of samples, the label
//! (a CSV column, or the array file with one value per sample), and for CSV the statistics of
//! every numeric column but the label (count, mean, standard deviation, min, max and a
//! histogram of [`BINS`] equal bins), which later drift checks compare live inputs against.
//! Array files (IDX, NPY) get the same statistics for each value position of a sample of the
//! one features file (when a sample holds at most [`MAX_ARRAY_FEATURES`] values), read as
//! stored and streamed twice — moments and range, then the histogram — so memory stays at one
//! sample.

use std::io::Read;
use std::path::Path;

use kiln_proto::formats::{self, ArrayHeader};
use serde::{Deserialize, Serialize};

use super::DataError;

/// Bins of every histogram.
pub const BINS: usize = 10;

/// An array file's samples of more values than this get no per-feature statistics (the
/// manifest would grow by kilobytes per value).
pub const MAX_ARRAY_FEATURES: u64 = 4096;

/// The description a manifest records.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Description {
    /// `csv`, `idx`, `npy`, or `files` (anything else, stored as it is).
    pub format: String,
    /// Samples (CSV rows, or the arrays' common first dimension), when known.
    pub samples: Option<u64>,
    /// The label column (CSV) or label file (arrays), when there is one.
    pub label: Option<String>,
    /// Per-feature statistics, in column order.
    pub features: Vec<FeatureStats>,
}

/// One feature's statistics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureStats {
    /// The column's name.
    pub name: String,
    /// Values counted.
    pub count: u64,
    /// Their mean.
    pub mean: f64,
    /// Their population standard deviation.
    pub std: f64,
    /// The smallest.
    pub min: f64,
    /// The largest.
    pub max: f64,
    /// [`BINS`] equal bins from `min` to `max`.
    pub histogram: Histogram,
}

impl From<FeatureStats> for kiln_proto::v1::FeatureStats {
    fn from(s: FeatureStats) -> Self {
        Self {
            name: s.name,
            count: s.count,
            mean: s.mean,
            std: s.std,
            min: s.min,
            max: s.max,
            edges: s.histogram.edges,
            counts: s.histogram.counts,
        }
    }
}

impl From<kiln_proto::v1::FeatureStats> for FeatureStats {
    fn from(s: kiln_proto::v1::FeatureStats) -> Self {
        Self {
            name: s.name,
            count: s.count,
            mean: s.mean,
            std: s.std,
            min: s.min,
            max: s.max,
            histogram: Histogram {
                edges: s.edges,
                counts: s.counts,
            },
        }
    }
}

/// Counts per bin; bin i holds `edges[i] <= v < edges[i + 1]`, the last bin includes `max`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    /// `BINS + 1` edges, ascending.
    pub edges: Vec<f64>,
    /// `BINS` counts.
    pub counts: Vec<u64>,
}

/// Describes the files `files` (paths relative to `root`, `/`-separated) of a push; `label`
/// names the CSV label column (default: a column named `label`, else the last).
pub fn describe(
    root: &Path,
    files: &[String],
    label: Option<&str>,
) -> Result<Description, DataError> {
    let with_ext = |ext: &str| -> Vec<&String> {
        files
            .iter()
            .filter(|f| f.to_ascii_lowercase().ends_with(ext))
            .collect()
    };
    let idx: Vec<&String> = files.iter().filter(|f| f.contains("-ubyte")).collect();
    match (with_ext(".csv").as_slice(), with_ext(".npy").as_slice()) {
        ([csv], _) if files.len() == 1 => describe_csv(&root.join(csv), label),
        (_, npy) if !npy.is_empty() && npy.len() == files.len() => {
            describe_arrays(root, npy, "npy", formats::npy_header)
        }
        _ if !idx.is_empty() && idx.len() == files.len() => {
            describe_arrays(root, &idx, "idx", formats::idx_header)
        }
        _ => Ok(Description {
            format: "files".into(),
            ..Description::default()
        }),
    }
}

fn describe_arrays(
    root: &Path,
    files: &[&String],
    format: &str,
    header: fn(&Path) -> Result<formats::ArrayHeader, formats::FormatError>,
) -> Result<Description, DataError> {
    let headers = files
        .iter()
        .map(|f| header(&root.join(f)).map_err(|e| DataError::Describe(format!("{f}: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let rows = headers[0].rows();
    let samples = headers.iter().all(|h| h.rows() == rows).then_some(rows);
    let labels: Vec<&String> = files
        .iter()
        .zip(&headers)
        .filter(|(_, h)| h.row_len() == 1)
        .map(|(f, _)| *f)
        .collect();
    let label = match labels.as_slice() {
        [one] if files.len() > 1 => Some((*one).clone()),
        _ => None,
    };
    let mut feature_files = files
        .iter()
        .zip(&headers)
        .filter(|(f, _)| Some(**f) != label.as_ref());
    let features = match (feature_files.next(), feature_files.next()) {
        (Some((file, header)), None) if header.row_len() <= MAX_ARRAY_FEATURES => {
            array_stats(&root.join(file), header)
                .map_err(|e| DataError::Describe(format!("{file}: {e}")))?
        }
        _ => Vec::new(),
    };
    Ok(Description {
        format: format.into(),
        samples,
        label,
        features,
    })
}

/// The statistics of every value position of the samples of an array file, named by their
/// index in the flattened sample (`"0"`, `"1"`, …).
fn array_stats(path: &Path, header: &ArrayHeader) -> Result<Vec<FeatureStats>, String> {
    let mut ranges = Ranges::new(header.row_len() as usize);
    for_each_sample(path, header, |sample| ranges.push(sample))?;
    let mut bins = ranges.bins();
    for_each_sample(path, header, |sample| bins.push(sample))?;
    Ok(bins.finish(|i| i.to_string()))
}

/// The first of two passes over equal-length rows that yield every position's
/// [`FeatureStats`]: count, moments and range. [`Ranges::bins`] starts the second.
#[derive(Debug, Clone)]
pub struct Ranges {
    moments: Vec<Moments>,
}

impl Ranges {
    /// Statistics of rows of `width` values.
    pub fn new(width: usize) -> Self {
        Ranges {
            moments: vec![Moments::default(); width],
        }
    }

    /// Counts one row (its first `width` values).
    pub fn push<T: Copy + Into<f64>>(&mut self, row: &[T]) {
        for (m, v) in self.moments.iter_mut().zip(row) {
            m.push((*v).into());
        }
    }

    /// The second pass: the same rows again, into [`BINS`] equal bins over each range.
    pub fn bins(self) -> Binning {
        let bins = self.moments.iter().map(Bins::new).collect();
        Binning {
            moments: self.moments,
            bins,
        }
    }
}

/// The second pass of [`Ranges`].
#[derive(Debug)]
pub struct Binning {
    moments: Vec<Moments>,
    bins: Vec<Bins>,
}

impl Binning {
    /// Bins one row.
    pub fn push<T: Copy + Into<f64>>(&mut self, row: &[T]) {
        for (b, v) in self.bins.iter_mut().zip(row) {
            b.push((*v).into());
        }
    }

    /// Every position's statistics, position i named `name(i)`.
    pub fn finish(self, name: impl Fn(usize) -> String) -> Vec<FeatureStats> {
        self.moments
            .iter()
            .zip(self.bins)
            .enumerate()
            .map(|(i, (m, b))| m.stats(name(i), b))
            .collect()
    }
}

/// Calls `f` with each sample of the array file, decoded, in order.
fn for_each_sample(
    path: &Path,
    header: &ArrayHeader,
    mut f: impl FnMut(&[f64]),
) -> Result<(), String> {
    let (stream, _) = formats::open(path).map_err(|e| e.to_string())?;
    let mut stream = std::io::BufReader::with_capacity(1 << 20, stream);
    let truncated = |e: std::io::Error| format!("reading the data: {e}");
    std::io::copy(
        &mut (&mut stream).take(header.data_offset as u64),
        &mut std::io::sink(),
    )
    .map_err(truncated)?;
    let size = header.dtype.size();
    let mut raw = vec![0u8; header.row_len() as usize * size];
    let mut sample = vec![0f64; header.row_len() as usize];
    for _ in 0..header.rows() {
        stream.read_exact(&mut raw).map_err(truncated)?;
        for (v, bytes) in sample.iter_mut().zip(raw.chunks_exact(size)) {
            *v = formats::element(bytes, header.dtype, header.big_endian);
        }
        f(&sample);
    }
    Ok(())
}

fn describe_csv(path: &Path, label: Option<&str>) -> Result<Description, DataError> {
    let bad = |e: csv::Error| DataError::Describe(format!("{}: {e}", path.display()));
    let mut reader = csv::Reader::from_path(path).map_err(bad)?;
    let header: Vec<String> = reader
        .headers()
        .map_err(bad)?
        .iter()
        .map(str::to_owned)
        .collect();
    let label_at = match label {
        Some(name) => header.iter().position(|h| h == name).ok_or_else(|| {
            DataError::Describe(format!(
                "{} has no column {name:?} (columns: {})",
                path.display(),
                header.join(", ")
            ))
        })?,
        None => header
            .iter()
            .position(|h| h == "label")
            .unwrap_or(header.len().saturating_sub(1)),
    };
    // Columns with a value that is not a number get no statistics.
    let mut columns: Vec<Option<Vec<f64>>> = vec![Some(Vec::new()); header.len()];
    let mut samples = 0u64;
    for record in reader.records() {
        let record = record.map_err(bad)?;
        samples += 1;
        for (column, field) in columns.iter_mut().zip(record.iter()) {
            if let Some(values) = column {
                match field.trim().parse::<f64>() {
                    Ok(v) if v.is_finite() => values.push(v),
                    _ => *column = None,
                }
            }
        }
    }
    let features = header
        .iter()
        .zip(columns)
        .enumerate()
        .filter(|(i, _)| *i != label_at)
        .filter_map(|(_, (name, values))| Some(stats(name, &values?)))
        .collect();
    Ok(Description {
        format: "csv".into(),
        samples: Some(samples),
        label: header.get(label_at).cloned(),
        features,
    })
}

/// The statistics of one column.
pub fn stats(name: &str, values: &[f64]) -> FeatureStats {
    let mut moments = Moments::default();
    values.iter().for_each(|v| moments.push(*v));
    let mut bins = Bins::new(&moments);
    values.iter().for_each(|v| bins.push(*v));
    moments.stats(name.to_owned(), bins)
}

/// Count, mean, variance (Welford's running sums) and range of a stream of values.
#[derive(Debug, Clone, Copy)]
struct Moments {
    count: u64,
    mean: f64,
    m2: f64,
    min: f64,
    max: f64,
}

impl Default for Moments {
    fn default() -> Self {
        Moments {
            count: 0,
            mean: 0.0,
            m2: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }
}

impl Moments {
    fn push(&mut self, v: f64) {
        self.count += 1;
        let delta = v - self.mean;
        self.mean += delta / self.count as f64;
        self.m2 += delta * (v - self.mean);
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }

    /// The range, `(0, 0)` for no values.
    fn range(&self) -> (f64, f64) {
        if self.count == 0 {
            (0.0, 0.0)
        } else {
            (self.min, self.max)
        }
    }

    fn stats(&self, name: String, bins: Bins) -> FeatureStats {
        let (min, max) = self.range();
        FeatureStats {
            name,
            count: self.count,
            mean: self.mean,
            std: (self.m2 / self.count.max(1) as f64).sqrt(),
            min,
            max,
            histogram: Histogram {
                edges: (0..=BINS).map(|i| min + bins.width * i as f64).collect(),
                counts: bins.counts,
            },
        }
    }
}

/// [`BINS`] equal bins over a range that [`Moments`] found.
#[derive(Debug)]
struct Bins {
    min: f64,
    width: f64,
    counts: Vec<u64>,
}

impl Bins {
    fn new(moments: &Moments) -> Self {
        let (min, max) = moments.range();
        Bins {
            min,
            width: (max - min) / BINS as f64,
            counts: vec![0; BINS],
        }
    }

    fn push(&mut self, v: f64) {
        let bin = if self.width > 0.0 {
            (((v - self.min) / self.width) as usize).min(BINS - 1)
        } else {
            0
        };
        self.counts[bin] += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_count_every_value_into_equal_bins() {
        let values: Vec<f64> = (0..=100).map(f64::from).collect();
        let s = stats("x", &values);
        assert_eq!((s.count, s.min, s.max, s.mean), (101, 0.0, 100.0, 50.0));
        assert!((s.std - 29.154_759_474_226_5).abs() < 1e-9, "{}", s.std);
        assert_eq!(s.histogram.edges.len(), BINS + 1);
        assert_eq!(s.histogram.counts.iter().sum::<u64>(), 101);
        // The maximum falls into the last bin, not past it.
        assert_eq!(s.histogram.counts[BINS - 1], 11);
        let flat = stats("c", &[3.0, 3.0]);
        assert_eq!((flat.std, flat.histogram.counts[0]), (0.0, 2));
    }

    #[test]
    fn a_csv_is_described_by_its_numeric_columns_without_the_label() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("d.csv"),
            "a,name,b,label\n1,x,10,0\n2,y,20,1\n3,z,30,1\n",
        )
        .expect("write");
        let files = ["d.csv".to_owned()];
        let d = describe(dir.path(), &files, None).expect("described");
        assert_eq!((d.format.as_str(), d.samples), ("csv", Some(3)));
        assert_eq!(d.label.as_deref(), Some("label"));
        let names: Vec<&str> = d.features.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(d.features[1].mean, 20.0);
        let by_b = describe(dir.path(), &files, Some("b")).expect("described");
        assert_eq!(by_b.label.as_deref(), Some("b"));
        let missing = describe(dir.path(), &files, Some("y")).expect_err("no column y");
        assert!(
            missing.to_string().contains("columns: a, name, b, label"),
            "{missing}"
        );
    }

    /// Four samples of three `uint8` values (gzipped IDX) with an IDX label file, and the
    /// same values as a little-endian NPY of float64: equal statistics, the label file left
    /// out, values as stored.
    #[test]
    fn arrays_are_described_per_value_position_without_the_label_file() {
        use formats::{DType, idx_bytes, npy_bytes};
        let dir = tempfile::tempdir().expect("tempdir");
        let images: [u8; 12] = [0, 10, 200, 2, 10, 100, 4, 10, 0, 6, 10, 255];
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &idx_bytes(DType::U8, &[4, 3], &images)).expect("gzip");
        let write = |name: &str, bytes: &[u8]| {
            std::fs::write(dir.path().join(name), bytes).expect("write");
            name.to_owned()
        };
        let idx = [
            write("x-idx2-ubyte.gz", &gz.finish().expect("gzip")),
            write("y-idx1-ubyte", &idx_bytes(DType::U8, &[4], &[0, 1, 0, 1])),
        ];
        let d = describe(dir.path(), &idx, None).expect("described");
        assert_eq!((d.format.as_str(), d.samples), ("idx", Some(4)));
        assert_eq!(d.label.as_deref(), Some("y-idx1-ubyte"));
        let names: Vec<&str> = d.features.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["0", "1", "2"]);
        let first = &d.features[0];
        assert_eq!(
            (first.count, first.mean, first.min, first.max),
            (4, 3.0, 0.0, 6.0)
        );
        assert!((first.std - 5f64.sqrt()).abs() < 1e-12, "{}", first.std);
        assert_eq!(d.features[1].histogram.counts[0], 4, "a constant column");
        assert_eq!(d.features[2].histogram.counts.iter().sum::<u64>(), 4);
        assert_eq!(
            d.features[2].histogram.counts[BINS - 1],
            1,
            "255 in the last bin"
        );

        let floats: Vec<u8> = images
            .iter()
            .flat_map(|&b| f64::from(b).to_le_bytes())
            .collect();
        let npy = [write("x.npy", &npy_bytes(DType::F64, &[4, 3], &floats))];
        let n = describe(dir.path(), &npy, None).expect("described");
        assert_eq!((n.format.as_str(), n.label.as_deref()), ("npy", None));
        assert_eq!(n.features, d.features);
    }
}
