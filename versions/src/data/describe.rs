//! What a pushed dataset holds, for its manifest: the format, the number of samples, the label
//! (a CSV column, or the array file with one value per sample), and for CSV the statistics of
//! every numeric column but the label (count, mean, standard deviation, min, max and a
//! histogram of [`BINS`] equal bins), which later drift checks compare live inputs against.
//! Array files (IDX, NPY) get their format, sample count and label file; their per-feature
//! statistics are not computed yet.

use std::path::Path;

use kiln_proto::formats;
use serde::{Deserialize, Serialize};

use super::DataError;

/// Bins of every histogram.
pub const BINS: usize = 10;

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
    Ok(Description {
        format: format.into(),
        samples,
        label: match labels.as_slice() {
            [one] if files.len() > 1 => Some((*one).clone()),
            _ => None,
        },
        features: Vec::new(),
    })
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
    let count = values.len() as u64;
    let (min, max) = values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(*v), hi.max(*v))
        });
    let (min, max) = if count == 0 { (0.0, 0.0) } else { (min, max) };
    let mean = values.iter().sum::<f64>() / count.max(1) as f64;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / count.max(1) as f64;
    let width = (max - min) / BINS as f64;
    let edges = (0..=BINS).map(|i| min + width * i as f64).collect();
    let mut counts = vec![0u64; BINS];
    for v in values {
        let bin = if width > 0.0 {
            (((v - min) / width) as usize).min(BINS - 1)
        } else {
            0
        };
        counts[bin] += 1;
    }
    FeatureStats {
        name: name.to_owned(),
        count,
        mean,
        std: var.sqrt(),
        min,
        max,
        histogram: Histogram { edges, counts },
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
}
