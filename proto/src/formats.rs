//! Headers of the array files datasets come in: MNIST's IDX (`…-idx3-ubyte`, gzipped or not)
//! and NumPy's `.npy`. The configuration loader reads only the headers (shape and type, for
//! `kiln validate`); the worker reads the data that follows them.

use std::io::Read;
use std::path::{Path, PathBuf};

/// Element types of an array file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    /// Unsigned bytes.
    U8,
    /// Signed bytes.
    I8,
    /// 16-bit signed integers.
    I16,
    /// 16-bit unsigned integers.
    U16,
    /// 32-bit signed integers.
    I32,
    /// 32-bit unsigned integers.
    U32,
    /// 64-bit signed integers.
    I64,
    /// 64-bit unsigned integers.
    U64,
    /// 32-bit floats.
    F32,
    /// 64-bit floats.
    F64,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::U8 | DType::I8 => 1,
            DType::I16 | DType::U16 => 2,
            DType::I32 | DType::U32 | DType::F32 => 4,
            DType::I64 | DType::U64 | DType::F64 => 8,
        }
    }

    /// Whether the type holds whole numbers.
    pub fn is_integer(self) -> bool {
        !matches!(self, DType::F32 | DType::F64)
    }

    /// NumPy's name of the type: `uint8`, `float32`.
    pub fn name(self) -> &'static str {
        match self {
            DType::U8 => "uint8",
            DType::I8 => "int8",
            DType::I16 => "int16",
            DType::U16 => "uint16",
            DType::I32 => "int32",
            DType::U32 => "uint32",
            DType::I64 => "int64",
            DType::U64 => "uint64",
            DType::F32 => "float32",
            DType::F64 => "float64",
        }
    }
}

/// What an array file's header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArrayHeader {
    /// The element type.
    pub dtype: DType,
    /// Whether elements are stored big-endian (always for IDX).
    pub big_endian: bool,
    /// The dimensions, outermost (samples) first.
    pub shape: Vec<u64>,
    /// Where the data starts, in the (decompressed) stream.
    pub data_offset: usize,
    /// Whether the file is gzipped (then it is decompressed, not memory-mapped).
    pub gzipped: bool,
}

impl ArrayHeader {
    /// The outermost dimension: the number of samples.
    pub fn rows(&self) -> u64 {
        self.shape.first().copied().unwrap_or(0)
    }

    /// Elements per sample: the product of the dimensions after the first.
    pub fn row_len(&self) -> u64 {
        self.shape.iter().skip(1).product()
    }

    /// Bytes of data the header promises.
    pub fn data_len(&self) -> u64 {
        self.rows()
            .saturating_mul(self.row_len())
            .saturating_mul(self.dtype.size() as u64)
    }

    /// `60000×28×28 uint8`.
    pub fn describe(&self) -> String {
        let dims: Vec<String> = self.shape.iter().map(u64::to_string).collect();
        format!("{} {}", dims.join("×"), self.dtype.name())
    }
}

/// An array file whose header cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// The file could not be opened or read.
    #[error("cannot read {}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The header is not what the format says it must be.
    #[error("{}: {message}", path.display())]
    Header {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// One element of `dtype` from its `bytes` (exactly [`DType::size`] of them), as stored: no
/// scaling.
pub fn element(bytes: &[u8], dtype: DType, big_endian: bool) -> f64 {
    macro_rules! read {
        ($ty:ty) => {{
            let mut raw = [0u8; std::mem::size_of::<$ty>()];
            raw.copy_from_slice(bytes);
            if big_endian {
                <$ty>::from_be_bytes(raw)
            } else {
                <$ty>::from_le_bytes(raw)
            }
        }};
    }
    match dtype {
        DType::U8 => f64::from(bytes[0]),
        DType::I8 => f64::from(bytes[0] as i8),
        DType::I16 => f64::from(read!(i16)),
        DType::U16 => f64::from(read!(u16)),
        DType::I32 => f64::from(read!(i32)),
        DType::U32 => f64::from(read!(u32)),
        DType::I64 => read!(i64) as f64,
        DType::U64 => read!(u64) as f64,
        DType::F32 => f64::from(read!(f32)),
        DType::F64 => read!(f64),
    }
}

/// Opens `path`, decompressing it on the fly when it starts with gzip's magic bytes.
pub fn open(path: &Path) -> Result<(Box<dyn Read>, bool), FormatError> {
    let io = |source| FormatError::Io {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut magic = [0u8; 2];
    let n = file.read(&mut magic).map_err(io)?;
    let head = std::io::Cursor::new(magic[..n].to_vec());
    let stream = head.chain(file);
    if n == 2 && magic == [0x1f, 0x8b] {
        Ok((Box::new(flate2::read::GzDecoder::new(stream)), true))
    } else {
        Ok((Box::new(stream), false))
    }
}

/// Reads the header of an IDX file (`0 0 TYPE NDIM`, then NDIM big-endian u32 dimensions).
pub fn idx_header(path: &Path) -> Result<ArrayHeader, FormatError> {
    let (mut stream, gzipped) = open(path)?;
    let bad = |message: String| FormatError::Header {
        path: path.to_owned(),
        message,
    };
    let short = |what: &str| bad(format!("the file ends inside the IDX header ({what})"));
    let mut magic = [0u8; 4];
    read_full(&mut stream, &mut magic, path)?
        .then_some(())
        .ok_or_else(|| short("magic"))?;
    if magic[..2] != [0, 0] {
        return Err(bad(format!(
            "not an IDX file: it starts with bytes {:02x} {:02x}, IDX files start with 00 00",
            magic[0], magic[1]
        )));
    }
    let dtype = match magic[2] {
        0x08 => DType::U8,
        0x09 => DType::I8,
        0x0B => DType::I16,
        0x0C => DType::I32,
        0x0D => DType::F32,
        0x0E => DType::F64,
        other => return Err(bad(format!("unknown IDX element type 0x{other:02x}"))),
    };
    let ndim = usize::from(magic[3]);
    if ndim == 0 {
        return Err(bad("the IDX header declares 0 dimensions".into()));
    }
    let mut dims = vec![0u8; 4 * ndim];
    read_full(&mut stream, &mut dims, path)?
        .then_some(())
        .ok_or_else(|| short("dimensions"))?;
    let shape = dims
        .chunks_exact(4)
        .map(|d| u64::from(u32::from_be_bytes([d[0], d[1], d[2], d[3]])))
        .collect();
    Ok(ArrayHeader {
        dtype,
        big_endian: true,
        shape,
        data_offset: 4 + 4 * ndim,
        gzipped,
    })
}

/// Reads the header of a `.npy` file (format versions 1 to 3).
pub fn npy_header(path: &Path) -> Result<ArrayHeader, FormatError> {
    let (mut stream, gzipped) = open(path)?;
    let bad = |message: String| FormatError::Header {
        path: path.to_owned(),
        message,
    };
    let mut lead = [0u8; 8];
    if !read_full(&mut stream, &mut lead, path)? || &lead[..6] != b"\x93NUMPY" {
        return Err(bad(
            "not a .npy file: it does not start with \\x93NUMPY (write it with numpy.save)".into(),
        ));
    }
    let (len_bytes, header_start) = match lead[6] {
        1 => (2, 10),
        2 | 3 => (4, 12),
        v => return Err(bad(format!("unsupported .npy format version {v}"))),
    };
    let mut len = [0u8; 4];
    if !read_full(&mut stream, &mut len[..len_bytes], path)? {
        return Err(bad("the file ends inside the .npy header".into()));
    }
    let header_len = u32::from_le_bytes(len) as usize;
    let mut text = vec![0u8; header_len];
    if !read_full(&mut stream, &mut text, path)? {
        return Err(bad("the file ends inside the .npy header".into()));
    }
    let text = String::from_utf8_lossy(&text);
    let descr = dict_value(&text, "descr")
        .and_then(quoted)
        .ok_or_else(|| bad("the header has no 'descr' string".into()))?;
    let (big_endian, code) = match descr.split_at_checked(1) {
        Some(("<" | "|" | "=", code)) => (false, code),
        Some((">", code)) => (true, code),
        _ => (false, descr),
    };
    let dtype = match code {
        "u1" | "B" => DType::U8,
        "i1" | "b" => DType::I8,
        "i2" => DType::I16,
        "u2" => DType::U16,
        "i4" => DType::I32,
        "u4" => DType::U32,
        "i8" => DType::I64,
        "u8" => DType::U64,
        "f4" => DType::F32,
        "f8" => DType::F64,
        _ => {
            return Err(bad(format!(
                "unsupported dtype {descr:?}: use float32, float64, or an integer type"
            )));
        }
    };
    if dict_value(&text, "fortran_order").is_some_and(|v| v.starts_with("True")) {
        return Err(bad(
            "the array is in Fortran order: save a C-ordered one (numpy.ascontiguousarray)".into(),
        ));
    }
    let shape =
        dict_value(&text, "shape").ok_or_else(|| bad("the header has no 'shape'".into()))?;
    let shape = shape
        .trim_start_matches('(')
        .split(')')
        .next()
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| d.trim_end_matches('L').parse::<u64>())
        .collect::<Result<Vec<u64>, _>>()
        .map_err(|_| bad("the header's 'shape' is not a tuple of integers".into()))?;
    if shape.is_empty() {
        return Err(bad(
            "the array is a scalar: it needs at least one dimension".into(),
        ));
    }
    Ok(ArrayHeader {
        dtype,
        big_endian,
        shape,
        data_offset: header_start + header_len,
        gzipped,
    })
}

/// The text after `'key':` in a Python dict literal, up to the end of the dict.
fn dict_value<'t>(text: &'t str, key: &str) -> Option<&'t str> {
    let at = text
        .find(&format!("'{key}'"))
        .or_else(|| text.find(&format!("\"{key}\"")))?;
    let rest = &text[at + key.len() + 2..];
    Some(rest.trim_start().strip_prefix(':')?.trim_start())
}

/// The string literal `'…'` or `"…"` at the start of `text`.
fn quoted(text: &str) -> Option<&str> {
    let quote = text.chars().next().filter(|c| *c == '\'' || *c == '"')?;
    text[1..].split(quote).next()
}

/// Fills `buf`; `false` when the stream ends first.
fn read_full(stream: &mut dyn Read, buf: &mut [u8], path: &Path) -> Result<bool, FormatError> {
    match stream.read_exact(buf) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(source) => Err(FormatError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

/// An IDX file's bytes: the header for `shape`, then `data` (already big-endian).
pub fn idx_bytes(dtype: DType, shape: &[u32], data: &[u8]) -> Vec<u8> {
    let code = match dtype {
        DType::U8 => 0x08,
        DType::I8 => 0x09,
        DType::I16 => 0x0B,
        DType::I32 => 0x0C,
        DType::F32 => 0x0D,
        _ => 0x0E,
    };
    let mut out = vec![0, 0, code, shape.len() as u8];
    for d in shape {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

/// A version-1 `.npy` file's bytes, as `numpy.save` writes them: the header for `shape`
/// (padded so the data starts on a 64-byte boundary), then `data` (little-endian).
pub fn npy_bytes(dtype: DType, shape: &[u64], data: &[u8]) -> Vec<u8> {
    let code = match dtype {
        DType::U8 => "|u1",
        DType::I8 => "|i1",
        DType::I16 => "<i2",
        DType::U16 => "<u2",
        DType::I32 => "<i4",
        DType::U32 => "<u4",
        DType::I64 => "<i8",
        DType::U64 => "<u8",
        DType::F32 => "<f4",
        DType::F64 => "<f8",
    };
    let dims: Vec<String> = shape.iter().map(u64::to_string).collect();
    let dims = match dims.len() {
        1 => format!("{},", dims[0]),
        _ => dims.join(", "),
    };
    let mut header = format!("{{'descr': '{code}', 'fortran_order': False, 'shape': ({dims}), }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).expect("write");
        path
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(bytes).expect("compress");
        encoder.finish().expect("compress")
    }

    #[test]
    fn idx_headers_plain_and_gzipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bytes = idx_bytes(DType::U8, &[3, 2, 2], &[0; 12]);
        for (name, bytes) in [("a-idx3-ubyte", bytes.clone()), ("a.gz", gzip(&bytes))] {
            let header = idx_header(&write(&dir, name, &bytes)).expect("header");
            assert_eq!(header.shape, vec![3, 2, 2]);
            assert_eq!((header.rows(), header.row_len()), (3, 4));
            assert_eq!(header.data_offset, 16);
            assert_eq!(header.gzipped, name.ends_with(".gz"));
            assert_eq!(header.describe(), "3×2×2 uint8");
        }
    }

    #[test]
    fn idx_header_errors_name_the_file_and_the_fault() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cases: [(&str, &[u8], &str); 4] = [
            ("text", b"hello world", "not an IDX file"),
            (
                "type",
                &[0, 0, 0x07, 1, 0, 0, 0, 1],
                "unknown IDX element type 0x07",
            ),
            (
                "short",
                &[0, 0, 0x08, 3, 0, 0],
                "ends inside the IDX header",
            ),
            ("nodims", &[0, 0, 0x08, 0], "0 dimensions"),
        ];
        for (name, bytes, expected) in cases {
            let err = idx_header(&write(&dir, name, bytes)).expect_err(name);
            let text = err.to_string();
            assert!(text.contains(name) && text.contains(expected), "{text}");
        }
        let err = idx_header(&dir.path().join("missing")).expect_err("missing");
        assert!(matches!(err, FormatError::Io { .. }), "{err}");
    }

    #[test]
    fn npy_headers_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (dtype, shape) in [
            (DType::F32, vec![5, 3]),
            (DType::U8, vec![2, 1, 4, 4]),
            (DType::I64, vec![7]),
        ] {
            let n: u64 = shape.iter().product();
            let bytes = npy_bytes(dtype, &shape, &vec![0; n as usize * dtype.size()]);
            let header = npy_header(&write(&dir, "a.npy", &bytes)).expect("header");
            assert_eq!((header.dtype, header.shape.clone()), (dtype, shape));
            assert_eq!(header.data_offset % 64, 0);
            assert!(!header.big_endian);
        }
    }

    #[test]
    fn npy_header_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fortran = b"\x93NUMPY\x01\x00\x40\x00{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }      \n";
        let mut complex = npy_bytes(DType::F32, &[2], &[]);
        let at = complex.windows(3).position(|w| w == b"<f4").expect("descr");
        complex[at + 1..at + 3].copy_from_slice(b"c8");
        let cases: [(&str, &[u8], &str); 4] = [
            ("text.npy", b"x,y\n1,2\n", "not a .npy file"),
            ("fortran.npy", fortran, "Fortran order"),
            ("complex.npy", &complex, "unsupported dtype \"<c8\""),
            (
                "short.npy",
                b"\x93NUMPY\x01\x00\x40\x00{'descr'",
                "ends inside",
            ),
        ];
        for (name, bytes, expected) in cases {
            let err = npy_header(&write(&dir, name, bytes)).expect_err(name);
            let text = err.to_string();
            assert!(text.contains(name) && text.contains(expected), "{text}");
        }
    }
}
