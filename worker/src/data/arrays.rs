//! Datasets in array files: IDX (MNIST's format, gzipped or not) and NumPy's `.npy`. One file
//! holds the features (`[N, F]`, or images `[N, H, W]` / `[N, C, H, W]`), another the labels
//! (`[N]`, integers). Uncompressed feature files are memory-mapped, not copied; gzipped ones
//! are decompressed into memory once.

use std::path::Path;

use kiln_proto::formats::{self, ArrayHeader, DType};

use super::DataError;
use super::table::{Bytes, Table};

/// Which of the two header readers a file takes.
#[derive(Debug, Clone, Copy)]
pub(super) enum Format {
    Idx,
    Npy,
}

impl Format {
    fn header(self, path: &Path) -> Result<ArrayHeader, DataError> {
        Ok(match self {
            Format::Idx => formats::idx_header(path)?,
            Format::Npy => formats::npy_header(path)?,
        })
    }
}

/// Reads the features in `x` and the labels in `y`, checking them against the spec's
/// `features` and `classes`.
pub(super) fn load(
    format: Format,
    x: &Path,
    y: &Path,
    features: usize,
    classes: u32,
) -> Result<Table, DataError> {
    let bad = |path: &Path, message: String| DataError::Array {
        path: path.to_owned(),
        message,
    };
    let xh = format.header(x)?;
    if !matches!(xh.dtype, DType::U8 | DType::F32 | DType::F64) {
        return Err(bad(
            x,
            format!(
                "features are {}; use uint8 (pixels, scaled to [0, 1]), float32 or float64",
                xh.dtype.name()
            ),
        ));
    }
    if xh.shape.len() < 2 {
        return Err(bad(
            x,
            format!(
                "features have shape {}: they need [samples, features] or [samples, (channels,) height, width]",
                xh.describe()
            ),
        ));
    }
    if xh.row_len() != features as u64 {
        return Err(bad(
            x,
            format!(
                "a sample has {} values ({}), the job spec expects {features}",
                xh.row_len(),
                xh.describe()
            ),
        ));
    }
    let yh = format.header(y)?;
    if !yh.dtype.is_integer() || yh.shape.len() != 1 {
        return Err(bad(
            y,
            format!(
                "labels are {}: they must be one integer per sample, shape [N]",
                yh.describe()
            ),
        ));
    }
    if xh.rows() != yh.rows() {
        return Err(DataError::Array {
            path: x.to_owned(),
            message: format!(
                "{} samples, but {} has {} labels",
                xh.rows(),
                y.display(),
                yh.rows()
            ),
        });
    }
    let xbytes = read(x, &xh)?;
    let ybytes = read(y, &yh)?;
    let mut values = Vec::with_capacity(yh.rows() as usize);
    let end = yh.data_offset + yh.data_len() as usize;
    decode_labels(
        &ybytes[yh.data_offset..end],
        yh.dtype,
        yh.big_endian,
        &mut values,
    );
    let mut labels = Vec::with_capacity(values.len());
    for (i, v) in values.into_iter().enumerate() {
        match u32::try_from(v).ok().filter(|c| *c < classes) {
            Some(c) => labels.push(c),
            None => {
                return Err(bad(
                    y,
                    format!("label {v} of sample {i} is not a class index in 0..{classes}"),
                ));
            }
        }
    }
    Ok(Table::array(
        features,
        xbytes,
        xh.data_offset,
        xh.dtype,
        xh.big_endian,
        labels,
    ))
}

/// The file's bytes, checked to hold all the data its header promises.
fn read(path: &Path, header: &ArrayHeader) -> Result<Bytes, DataError> {
    let io = |source| DataError::Io {
        path: path.to_owned(),
        source,
    };
    let bytes = if header.gzipped {
        let (mut stream, _) = formats::open(path)?;
        let mut all = Vec::new();
        std::io::Read::read_to_end(&mut stream, &mut all).map_err(io)?;
        Bytes::Owned(all)
    } else {
        let file = std::fs::File::open(path).map_err(io)?;
        Bytes::Mapped(map(&file).map_err(io)?)
    };
    let need = header.data_len().saturating_add(header.data_offset as u64);
    if (bytes.len() as u64) < need {
        return Err(DataError::Array {
            path: path.to_owned(),
            message: format!(
                "truncated: the header promises {} ({} bytes of data), the file holds {} bytes of data",
                header.describe(),
                header.data_len(),
                (bytes.len() as u64).saturating_sub(header.data_offset as u64)
            ),
        });
    }
    Ok(bytes)
}

/// Maps `file` read-only.
#[allow(unsafe_code)]
fn map(file: &std::fs::File) -> std::io::Result<memmap2::Mmap> {
    // SAFETY: the mapping is read-only and lives as long as the dataset. A dataset file must
    // not be truncated or rewritten while a job trains on it (as with any reader of a mapped
    // file); the docs say so.
    unsafe { memmap2::Mmap::map(file) }
}

fn decode_labels(data: &[u8], dtype: DType, big_endian: bool, out: &mut Vec<i64>) {
    let size = dtype.size();
    for c in data.chunks_exact(size) {
        let mut b = [0u8; 8];
        let v = match (dtype, big_endian) {
            (DType::U8, _) => i64::from(c[0]),
            (DType::I8, _) => i64::from(c[0] as i8),
            (_, true) => {
                b[8 - size..].copy_from_slice(c);
                let raw = u64::from_be_bytes(b);
                sign_extend(raw, dtype)
            }
            (_, false) => {
                b[..size].copy_from_slice(c);
                let raw = u64::from_le_bytes(b);
                sign_extend(raw, dtype)
            }
        };
        out.push(v);
    }
}

fn sign_extend(raw: u64, dtype: DType) -> i64 {
    match dtype {
        DType::I16 => i64::from(raw as u16 as i16),
        DType::I32 => i64::from(raw as u32 as i32),
        DType::I64 => raw as i64,
        DType::U64 => i64::try_from(raw).unwrap_or(i64::MAX),
        _ => raw as i64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Samples;
    use kiln_proto::formats::{idx_bytes, npy_bytes};
    use std::io::Write;
    use std::sync::Arc;

    fn write(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).expect("write");
        path
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(bytes).expect("compress");
        gz.finish().expect("compress")
    }

    fn all(table: Table) -> (Vec<f32>, Vec<u32>) {
        let rows = (0..table.len() as u32).collect::<Vec<_>>();
        Samples::new(Arc::new(table), rows.clone()).gather(&rows)
    }

    #[test]
    fn idx_images_and_labels_plain_and_gzipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pixels: Vec<u8> = (0..12).map(|i| i * 20).collect();
        let images = idx_bytes(DType::U8, &[3, 2, 2], &pixels);
        let labels = idx_bytes(DType::U8, &[3], &[2, 0, 1]);
        for gz in [false, true] {
            let enc = |b: &[u8]| if gz { gzip(b) } else { b.to_vec() };
            let x = write(&dir, &format!("x{gz}"), &enc(&images));
            let y = write(&dir, &format!("y{gz}"), &enc(&labels));
            let (values, classes) = all(load(Format::Idx, &x, &y, 4, 3).expect("load"));
            assert_eq!(classes, vec![2, 0, 1]);
            assert_eq!(values[5], 100.0 / 255.0);
        }
    }

    #[test]
    fn npy_float_and_byte_arrays_with_integer_labels() {
        let dir = tempfile::tempdir().expect("tempdir");
        let floats: Vec<u8> = [1.5f32, -2.0, 3.0, 4.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let doubles: Vec<u8> = [1.5f64, -2.0, 3.0, 4.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let labels: Vec<u8> = [1i64, 0].iter().flat_map(|v| v.to_le_bytes()).collect();
        let y = write(&dir, "y.npy", &npy_bytes(DType::I64, &[2], &labels));
        for (name, dtype, data) in [
            ("f4.npy", DType::F32, floats),
            ("f8.npy", DType::F64, doubles),
        ] {
            let x = write(&dir, name, &npy_bytes(dtype, &[2, 2], &data));
            let (values, classes) = all(load(Format::Npy, &x, &y, 2, 2).expect("load"));
            assert_eq!(values, vec![1.5, -2.0, 3.0, 4.0]);
            assert_eq!(classes, vec![1, 0]);
        }
        let x = write(
            &dir,
            "u1.npy",
            &npy_bytes(DType::U8, &[2, 1, 1, 2], &[0, 255, 51, 0]),
        );
        let (values, _) = all(load(Format::Npy, &x, &y, 2, 2).expect("load"));
        assert_eq!(values, vec![0.0, 1.0, 0.2, 0.0]);
    }

    #[test]
    fn every_mistake_names_the_file_and_what_is_wrong() {
        let dir = tempfile::tempdir().expect("tempdir");
        let x = write(&dir, "x.npy", &npy_bytes(DType::F32, &[2, 2], &[0; 16]));
        let y2 = write(&dir, "y2.npy", &npy_bytes(DType::U8, &[2], &[0, 1]));
        let y3 = write(&dir, "y3.npy", &npy_bytes(DType::U8, &[3], &[0, 1, 1]));
        let big = write(&dir, "big.npy", &npy_bytes(DType::U8, &[2], &[0, 7]));
        let float_y = write(&dir, "fy.npy", &npy_bytes(DType::F32, &[2], &[0; 8]));
        let short = write(&dir, "short.npy", &npy_bytes(DType::F32, &[2, 2], &[0; 10]));
        let ints = write(&dir, "ints.npy", &npy_bytes(DType::I32, &[2, 2], &[0; 16]));
        let cases = [
            (&x, &y3, 2, "2 samples, but", "x.npy"),
            (
                &x,
                &big,
                2,
                "label 7 of sample 1 is not a class index in 0..3",
                "big.npy",
            ),
            (&x, &float_y, 2, "must be one integer per sample", "fy.npy"),
            (
                &short,
                &y2,
                2,
                "truncated: the header promises 2×2 float32 (16 bytes of data), the file holds 10",
                "short.npy",
            ),
            (
                &x,
                &y2,
                3,
                "a sample has 2 values (2×2 float32), the job spec expects 3",
                "x.npy",
            ),
            (&ints, &y2, 2, "features are int32", "ints.npy"),
        ];
        for (x, y, features, expected, file) in cases {
            let err = load(Format::Npy, x, y, features, 3).expect_err(expected);
            let text = kiln_proto::error_chain(&err);
            assert!(text.contains(expected) && text.contains(file), "{text}");
        }
        let gz_short = write(
            &dir,
            "short.gz",
            &gzip(&idx_bytes(DType::U8, &[4, 2], &[1; 5])),
        );
        let labels = write(&dir, "l", &idx_bytes(DType::U8, &[4], &[0; 4]));
        let err = load(Format::Idx, &gz_short, &labels, 2, 3).expect_err("truncated gzip");
        assert!(err.to_string().contains("short.gz: truncated"), "{err}");
    }
}
