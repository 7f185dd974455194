//! NumPy `.npy` files (format versions 1-3, C order, little-endian): the array contract of the
//! CLI (`nac predict --input X.npy` takes float32 N×3×H×W).
//!
//! Our own parser rather than the `npyz` crate (0.9, evaluated for this): npyz allocates the
//! header length read from the file (up to 4 GiB for a version-2 header) before reading it,
//! multiplies the shape into an unchecked `u64` element count, reports malformed files as a
//! bare `io::Error` that names neither the file nor the field, and pulls in a general Python
//! literal parser (`py_literal`, with `pest` and `num-bigint`) for a three-key dict. We need
//! errors that name the file, the field and what was expected, every size checked against the
//! bytes present before anything is allocated, and only five little-endian dtypes in C order.
//! The header is parsed strictly as NumPy writes it (see [`parse_header`]), not searched for
//! substrings.

use std::path::Path;

use crate::error::{write_atomic, Error, Result};

/// The bytes of a version-1 `.npy` header for a C-order array of `dtype` and `shape`: the data
/// follows, starting on a 64-byte boundary (for writers that stream the data after it).
pub fn header_bytes(dtype: NpyDtype, shape: &[usize]) -> Vec<u8> {
    let shape = match shape.len() {
        1 => format!("({},)", shape[0]),
        _ => format!("({})", shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")),
    };
    let mut header = format!("{{'descr': '{}', 'fortran_order': False, 'shape': {shape}, }}", dtype.descr());
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat(unpadded.next_multiple_of(64) - unpadded));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len());
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out
}

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
                return Err(Error::Input(format!(
                    "{}: labels must be integers (uint8, int32, int64), found {}",
                    path.display(),
                    other.descr()
                )))
            }
        };
        values
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                usize::try_from(v).map_err(|_| Error::Input(format!("{}: label {i} is {v}; labels must be ≥ 0", path.display())))
            })
            .collect()
    }

    pub fn from_labels(labels: &[usize]) -> Self {
        NpyArray { shape: vec![labels.len()], dtype: NpyDtype::I64, bytes: labels.iter().flat_map(|&l| (l as i64).to_le_bytes()).collect() }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = header_bytes(self.dtype, &self.shape);
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

    /// Parses a whole `.npy` file; `path` only names the file in errors. Every size is checked
    /// against the bytes actually present before anything is allocated.
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Self> {
        let layout = Layout::parse(path, bytes, bytes.len())?;
        Ok(NpyArray { bytes: bytes[layout.data_start..].to_vec(), shape: layout.shape, dtype: layout.dtype })
    }

    /// Rows `rows` (along the first axis) of a `.npy` file, read without the rest of the data:
    /// the header is checked against the file's size first, then only those rows are read. The
    /// result's first dimension is `rows.len()`; the file's row count is returned beside it.
    pub fn load_rows(path: &Path, rows: std::ops::Range<usize>) -> Result<(Self, usize)> {
        use std::io::{Read, Seek};
        let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let meta = file.metadata().map_err(|e| Error::io(path, e))?;
        if !meta.is_file() {
            return Err(Error::Input(format!("{}: is not a regular file", path.display())));
        }
        let file_len =
            usize::try_from(meta.len()).map_err(|_| Error::Input(format!("{}: larger than this machine can address", path.display())))?;
        // The header length field, then the header itself (bounded by the file's size).
        let mut head = vec![0u8; file_len.min(12)];
        file.read_exact(&mut head).map_err(|e| Error::io(path, e))?;
        let header_len = match head.get(6..8) {
            Some([1, 0]) => head.get(8..10).map(|b| 10 + u16::from_le_bytes([b[0], b[1]]) as usize),
            Some([2 | 3, 0]) => head.get(8..12).map(|b| 12 + u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize),
            _ => None,
        };
        if let Some(len) = header_len.filter(|&len| len <= file_len) {
            head.resize(len, 0);
            file.read_exact(&mut head[12.min(len)..]).map_err(|e| Error::io(path, e))?;
        }
        let layout = Layout::parse(path, &head, file_len)?;
        let total = layout.shape.first().copied().ok_or_else(|| Error::Input(format!("{}: a 0-d array has no rows", path.display())))?;
        if rows.start > rows.end || rows.end > total {
            return Err(Error::Input(format!(
                "{}: rows {}..{} asked for, the array has {total} (shape {:?})",
                path.display(),
                rows.start,
                rows.end,
                layout.shape
            )));
        }
        let row_bytes = layout.data_len.checked_div(total).unwrap_or(0);
        let mut bytes = vec![0u8; rows.len() * row_bytes];
        file.seek(std::io::SeekFrom::Start((layout.data_start + rows.start * row_bytes) as u64)).map_err(|e| Error::io(path, e))?;
        file.read_exact(&mut bytes).map_err(|e| Error::io(path, e))?;
        let mut shape = layout.shape;
        shape[0] = rows.len();
        Ok((NpyArray { shape, dtype: layout.dtype, bytes }, total))
    }
}

/// Where a `.npy` file's data lies, from its header: checked against the file's length.
struct Layout {
    shape: Vec<usize>,
    dtype: NpyDtype,
    data_start: usize,
    data_len: usize,
}

impl Layout {
    /// `bytes` holds at least the header (or the whole file, whose length is `file_len`).
    fn parse(path: &Path, bytes: &[u8], file_len: usize) -> Result<Self> {
        let bad = |m: String| Error::Input(format!("{}: not a valid .npy file: {m}", path.display()));
        if file_len < 6 || bytes.get(..6) != Some(&b"\x93NUMPY"[..]) {
            return Err(bad("missing the \\x93NUMPY magic at offset 0".into()));
        }
        let (major, minor) = match bytes.get(6..8) {
            Some(v) => (v[0], v[1]),
            None => return Err(bad(format!("file of {} bytes ends inside the format version", file_len))),
        };
        let (len_bytes, header_start) = match (major, minor) {
            (1, 0) => (2, 10),
            (2, 0) | (3, 0) => (4, 12),
            _ => return Err(bad(format!("unsupported format version {major}.{minor} (expected 1.0, 2.0 or 3.0)"))),
        };
        let Some(len_field) = bytes.get(8..header_start) else {
            return Err(bad(format!("file of {} bytes ends inside the {len_bytes}-byte header length of version {major}.0", file_len)));
        };
        let header_len = len_field.iter().rev().fold(0usize, |acc, &b| (acc << 8) | b as usize);
        let data_start = header_start.checked_add(header_len);
        let Some(header) = data_start.and_then(|end| bytes.get(header_start..end)) else {
            return Err(bad(format!(
                "header of {header_len} bytes at offset {header_start} runs past the end of the file ({} bytes)",
                file_len
            )));
        };
        let h = parse_header(header).map_err(|m| bad(format!("header: {m}")))?;
        let dtype = NpyDtype::parse(&h.descr).ok_or_else(|| {
            let why = match h.descr.as_bytes().first() {
                Some(b'>') => " (big-endian; convert with `x.astype(x.dtype.newbyteorder('<'))`)",
                _ => "",
            };
            bad(format!("dtype '{}' is not supported{why} (expected <f4, <f8, |u1, <i4 or <i8)", h.descr.escape_default()))
        })?;
        if h.fortran_order && h.shape.len() > 1 {
            return Err(bad("Fortran-order arrays are not supported; save with np.ascontiguousarray".into()));
        }
        let overflow = || bad(format!("shape {:?} of {} holds more bytes than this machine can address", h.shape, h.descr));
        let elements = h.shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)).ok_or_else(overflow)?;
        let expected = elements.checked_mul(dtype.size()).ok_or_else(overflow)?;
        let data_start = header_start + header.len();
        if file_len - data_start != expected {
            return Err(bad(format!(
                "shape {:?} of {} needs {expected} data bytes after offset {data_start}, found {}",
                h.shape,
                h.descr,
                file_len - data_start
            )));
        }
        Ok(Layout { shape: h.shape, dtype, data_start, data_len: expected })
    }
}

/// The three fields of a `.npy` header.
struct Header {
    descr: String,
    fortran_order: bool,
    shape: Vec<usize>,
}

/// Parses the header text strictly as the Python literal NumPy writes:
/// `{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }`, then padding (spaces) and a
/// newline. The dict holds exactly the keys `descr`, `fortran_order` and `shape`, each once, in
/// any order; `descr` is a string (a structured dtype's list is refused), `fortran_order` a
/// bool, `shape` a tuple of non-negative integers (`()`, `(n,)`, `(a, b)`, trailing comma
/// allowed, Python 2's `L` suffix accepted). Works on bytes, so non-ASCII text is an error,
/// never a slicing panic. The error says what was expected at which byte of the header.
fn parse_header(text: &[u8]) -> std::result::Result<Header, String> {
    let mut p = Cursor { text, at: 0 };
    let (mut descr, mut fortran_order, mut shape) = (None, None, None);
    p.expect(b'{')?;
    loop {
        if p.eat(b'}') {
            break;
        }
        let key = p.string()?;
        p.expect(b':')?;
        let value_at = p.at;
        let duplicate = match key.as_str() {
            "descr" => {
                if p.peek() != Some(b'\'') && p.peek() != Some(b'"') {
                    return Err(format!(
                        "byte {value_at}: 'descr' must be a dtype string such as '<f4' (structured dtypes are not supported)"
                    ));
                }
                descr.replace(p.string()?).is_some()
            }
            "fortran_order" => fortran_order.replace(p.boolean()?).is_some(),
            "shape" => shape.replace(p.shape()?).is_some(),
            other => {
                return Err(format!(
                    "byte {value_at}: unexpected key '{}' (expected 'descr', 'fortran_order', 'shape')",
                    other.escape_default()
                ))
            }
        };
        if duplicate {
            return Err(format!("byte {value_at}: key '{key}' appears twice"));
        }
        if !p.eat(b',') {
            p.expect(b'}')?;
            break;
        }
    }
    if let Some((i, &b)) = text.iter().enumerate().skip(p.at).find(|(_, b)| !b.is_ascii_whitespace()) {
        return Err(format!("byte {i}: unexpected {} after the closing '}}' (expected padding and a newline)", show(b)));
    }
    let missing = |k: &str| format!("no '{k}' key");
    Ok(Header {
        descr: descr.ok_or_else(|| missing("descr"))?,
        fortran_order: fortran_order.ok_or_else(|| missing("fortran_order"))?,
        shape: shape.ok_or_else(|| missing("shape"))?,
    })
}

fn show(b: u8) -> String {
    if b.is_ascii_graphic() || b == b' ' {
        format!("'{}'", b as char)
    } else {
        format!("byte 0x{b:02x}")
    }
}

struct Cursor<'a> {
    text: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn skip_space(&mut self) {
        while self.text.get(self.at).is_some_and(|b| b.is_ascii_whitespace()) {
            self.at += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_space();
        self.text.get(self.at).copied()
    }

    fn eat(&mut self, c: u8) -> bool {
        let hit = self.peek() == Some(c);
        if hit {
            self.at += 1;
        }
        hit
    }

    /// "byte N: expected WHAT, found X" at the next non-space byte.
    fn wanted(&mut self, what: &str) -> String {
        let found = match self.peek() {
            Some(b) => show(b),
            None => "the end of the header".into(),
        };
        format!("byte {}: expected {what}, found {found}", self.at)
    }

    fn expect(&mut self, c: u8) -> std::result::Result<(), String> {
        if self.eat(c) {
            return Ok(());
        }
        Err(self.wanted(&format!("'{}'", c as char)))
    }

    /// A quoted string of printable ASCII without escapes.
    fn string(&mut self) -> std::result::Result<String, String> {
        let quote = match self.peek() {
            Some(q @ (b'\'' | b'"')) => q,
            _ => return Err(self.wanted("a quoted string")),
        };
        let start = self.at + 1;
        let len = self.text[start..].iter().position(|&b| b == quote || b == b'\\' || !(b.is_ascii_graphic() || b == b' '));
        match len.map(|n| (n, self.text[start + n])) {
            Some((n, b)) if b == quote => {
                self.at = start + n + 1;
                Ok(String::from_utf8_lossy(&self.text[start..start + n]).into_owned())
            }
            Some((n, b)) => Err(format!("byte {}: {} inside a string (expected printable ASCII without escapes)", start + n, show(b))),
            None => Err(format!("byte {}: unterminated string", self.at)),
        }
    }

    fn boolean(&mut self) -> std::result::Result<bool, String> {
        self.skip_space();
        for (word, value) in [(&b"True"[..], true), (&b"False"[..], false)] {
            if self.text[self.at..].starts_with(word) {
                self.at += word.len();
                return Ok(value);
            }
        }
        Err(self.wanted("True or False for 'fortran_order'"))
    }

    /// A non-negative integer that fits `usize` (optionally with Python 2's `L` suffix).
    fn integer(&mut self) -> std::result::Result<usize, String> {
        self.skip_space();
        let start = self.at;
        let digits = self.text[start..].iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 {
            return Err(self.wanted("a non-negative integer in 'shape'"));
        }
        self.at += digits;
        if self.text.get(self.at) == Some(&b'L') {
            self.at += 1;
        }
        let text = String::from_utf8_lossy(&self.text[start..start + digits]).into_owned();
        text.parse::<usize>().map_err(|_| format!("byte {start}: shape entry {text} does not fit in {} bits", usize::BITS))
    }

    /// `()`, `(n,)` or `(a, b, ...)` with an optional trailing comma; `(n)` is an int, not a tuple.
    fn shape(&mut self) -> std::result::Result<Vec<usize>, String> {
        if self.peek() != Some(b'(') {
            return Err(self.wanted("a tuple such as (3, 4) for 'shape'"));
        }
        self.at += 1;
        let mut dims = Vec::new();
        if self.eat(b')') {
            return Ok(dims);
        }
        loop {
            dims.push(self.integer()?);
            let comma = self.eat(b',');
            if self.eat(b')') {
                if dims.len() == 1 && !comma {
                    return Err(format!("byte {}: a one-element shape needs a trailing comma, as in (n,)", self.at - 1));
                }
                return Ok(dims);
            }
            if !comma {
                return Err(self.wanted("',' or ')' in 'shape'"));
            }
        }
    }
}
