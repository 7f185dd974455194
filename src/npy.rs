//! NumPy `.npy` files (format versions 1-3, C order, little-endian): the array contract of the
//! CLI (`nac predict --input X.npy` takes float32 N×3×H×W).

use std::path::Path;

use crate::error::{write_atomic, Error, Result};

/// Element types this crate reads and writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NpyDtype {
    F32,
    F64,
    U8,
    I32,
    I64,
}

impl NpyDtype {
    fn descr(self) -> &'static str {
        match self {
            NpyDtype::F32 => "<f4",
            NpyDtype::F64 => "<f8",
            NpyDtype::U8 => "|u1",
            NpyDtype::I32 => "<i4",
            NpyDtype::I64 => "<i8",
        }
    }

    fn size(self) -> usize {
        match self {
            NpyDtype::F32 => 4,
            NpyDtype::F64 => 8,
            NpyDtype::U8 => 1,
            NpyDtype::I32 => 4,
            NpyDtype::I64 => 8,
        }
    }

    fn parse(descr: &str) -> Option<Self> {
        match descr {
            "<f4" => Some(NpyDtype::F32),
            "<f8" => Some(NpyDtype::F64),
            "|u1" | "<u1" => Some(NpyDtype::U8),
            "<i4" => Some(NpyDtype::I32),
            "<i8" => Some(NpyDtype::I64),
            _ => None,
        }
    }
}

/// A parsed array: shape, element type and raw little-endian bytes.
#[derive(Clone, Debug)]
pub struct NpyArray {
    pub shape: Vec<usize>,
    pub dtype: NpyDtype,
    pub bytes: Vec<u8>,
}

impl NpyArray {
    pub fn from_f32(shape: Vec<usize>, data: &[f32]) -> Self {
        NpyArray { shape, dtype: NpyDtype::F32, bytes: data.iter().flat_map(|v| v.to_le_bytes()).collect() }
    }

    /// The values as f32; only float32 arrays are accepted (no silent precision change).
    pub fn to_f32(&self, path: &Path) -> Result<Vec<f32>> {
        if self.dtype != NpyDtype::F32 {
            return Err(Error::Input(format!(
                "{}: dtype {} is not float32; convert with `x.astype(np.float32)`",
                path.display(),
                self.dtype.descr()
            )));
        }
        Ok(self.bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
    }

    /// Class labels: a 1-D integer array (uint8, int32 or int64) of non-negative values.
    pub fn to_labels(&self, path: &Path) -> Result<Vec<usize>> {
        if self.shape.len() != 1 {
            return Err(Error::Input(format!("{}: labels must be a 1-D array, found shape {:?}", path.display(), self.shape)));
        }
        let values: Vec<i64> = match self.dtype {
            NpyDtype::U8 => self.bytes.iter().map(|&b| b as i64).collect(),
            NpyDtype::I32 => self.bytes.chunks_exact(4).map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64).collect(),
            NpyDtype::I64 => self.bytes.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap())).collect(),
            other => {
                return Err(Error::Input(format!("{}: labels must be integers (uint8, int32, int64), found {}", path.display(), other.descr())))
            }
        };
        values
            .iter()
            .enumerate()
            .map(|(i, &v)| usize::try_from(v).map_err(|_| Error::Input(format!("{}: label {i} is {v}; labels must be ≥ 0", path.display()))))
            .collect()
    }

    pub fn from_labels(labels: &[usize]) -> Self {
        NpyArray { shape: vec![labels.len()], dtype: NpyDtype::I64, bytes: labels.iter().flat_map(|&l| (l as i64).to_le_bytes()).collect() }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let shape = match self.shape.len() {
            1 => format!("({},)", self.shape[0]),
            _ => format!("({})", self.shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")),
        };
        let mut header = format!("{{'descr': '{}', 'fortran_order': False, 'shape': {shape}, }}", self.dtype.descr());
        // Pad so that the data starts on a 64-byte boundary, header ends with '\n'.
        let unpadded = 10 + header.len() + 1;
        header.push_str(&" ".repeat(unpadded.next_multiple_of(64) - unpadded));
        header.push('\n');
        let mut out = Vec::with_capacity(10 + header.len() + self.bytes.len());
        out.extend_from_slice(b"\x93NUMPY\x01\x00");
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(&self.bytes);
        out
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        write_atomic(path, &self.to_bytes())
    }

    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::parse(path, &bytes)
    }

    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Self> {
        let bad = |m: String| Error::Input(format!("{}: not a valid .npy file: {m}", path.display()));
        if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
            return Err(bad("missing the \\x93NUMPY magic at offset 0".into()));
        }
        let (header_len, header_start) = match bytes[6] {
            1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
            2 | 3 if bytes.len() >= 12 => (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12),
            v => return Err(bad(format!("unsupported format version {v}"))),
        };
        let data_start = header_start + header_len;
        if bytes.len() < data_start {
            return Err(bad(format!("header of {header_len} bytes runs past the end of the file ({} bytes)", bytes.len())));
        }
        let header = std::str::from_utf8(&bytes[header_start..data_start]).map_err(|_| bad("header is not text".into()))?;
        let field = |key: &str| -> Result<&str> {
            let at = header.find(&format!("'{key}'")).ok_or_else(|| bad(format!("header has no '{key}' field")))?;
            Ok(header[at + key.len() + 2..].trim_start().trim_start_matches(':').trim_start())
        };
        let descr_field = field("descr")?;
        let descr = descr_field.trim_start_matches('\'').split('\'').next().unwrap_or("");
        let dtype = NpyDtype::parse(descr)
            .ok_or_else(|| bad(format!("dtype '{descr}' is not supported (expected <f4, <f8, |u1, <i4 or <i8)")))?;
        if field("fortran_order")?.starts_with("True") {
            return Err(bad("Fortran-order arrays are not supported; save with np.ascontiguousarray".into()));
        }
        let shape_field = field("shape")?;
        let close = shape_field.find(')').ok_or_else(|| bad("unterminated shape".into()))?;
        let shape = shape_field[1..close]
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| s.parse::<usize>().map_err(|_| bad(format!("bad shape entry `{s}`"))))
            .collect::<Result<Vec<usize>>>()?;
        let expected = shape.iter().product::<usize>() * dtype.size();
        let data = &bytes[data_start..];
        if data.len() != expected {
            return Err(bad(format!(
                "shape {shape:?} of {} needs {expected} data bytes after offset {data_start}, found {}",
                descr,
                data.len()
            )));
        }
        Ok(NpyArray { shape, dtype, bytes: data.to_vec() })
    }
}
