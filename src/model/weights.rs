//! Reading checkpoints: safetensors files, memory-mapped, f32/f16/bf16 converted to f32 on load.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};

use crate::error::{Error, Result};

/// One tensor of a checkpoint, converted to f32.
#[derive(Clone, Debug)]
pub struct RawTensor {
    pub shape: Vec<usize>,
    pub dtype: Dtype,
    pub data: Vec<f32>,
}

/// All tensors of one checkpoint file, by name. A `module.` prefix (DataParallel checkpoints)
/// is stripped when every name carries it.
#[derive(Debug)]
pub struct TensorStore {
    pub path: PathBuf,
    pub tensors: BTreeMap<String, RawTensor>,
    /// The safetensors `__metadata__` strings (empty for `torch.save` files): what the tensors
    /// cannot say, such as a Vision Transformer's `num_heads`.
    pub metadata: BTreeMap<String, String>,
}

/// Tensors whose dtype is not a float and that the architectures never read.
fn is_ignorable_counter(name: &str) -> bool {
    name.ends_with("num_batches_tracked")
}

impl TensorStore {
    /// Memory-maps and parses a safetensors file.
    pub fn open(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the map is read-only and dropped before this function returns; a file changed
        // underneath us while loading can at worst produce wrong numbers, never unsoundness
        // in our code (we copy out of the map immediately).
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        Self::from_bytes(path, &map)
    }

    /// Parses safetensors bytes, or a PyTorch `torch.save` checkpoint (zip; see
    /// [`crate::model::pth`]); `path` is only used in error messages.
    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Self> {
        if super::pth::is_pth(bytes) {
            let tensors = super::pth::read(path, bytes)?;
            return Self::from_entries(path, tensors.iter().map(|t| (t.name.as_str(), t.dtype, t.shape.as_slice(), t.bytes.as_slice())));
        }
        let err = |message: String| Error::Weights { path: path.to_path_buf(), message };
        let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| err(invalid_safetensors(bytes, &e)))?;
        let metadata: BTreeMap<String, String> = header.metadata().clone().unwrap_or_default().into_iter().collect();
        let st = SafeTensors::deserialize(bytes).map_err(|e| err(invalid_safetensors(bytes, &e)))?;
        let views: Vec<(String, safetensors::tensor::TensorView)> = st.iter().map(|(n, v)| (n.to_string(), v)).collect();
        let mut store = Self::from_entries(path, views.iter().map(|(n, v)| (n.as_str(), v.dtype(), v.shape(), v.data())))?;
        store.metadata = metadata;
        Ok(store)
    }

    /// Tensors `(name, dtype, shape, little-endian bytes)` converted to f32; a `module.` prefix
    /// on every name is stripped and BatchNorm counters skipped.
    fn from_entries<'a>(path: &Path, entries: impl Iterator<Item = (&'a str, Dtype, &'a [usize], &'a [u8])> + Clone) -> Result<Self> {
        let err = |message: String| Error::Weights { path: path.to_path_buf(), message };
        let strip_module = entries.clone().next().is_some() && entries.clone().all(|(n, ..)| n.starts_with("module."));
        let mut tensors = BTreeMap::new();
        for (name, dtype, shape, data) in entries {
            let key = if strip_module { &name["module.".len()..] } else { name };
            if is_ignorable_counter(key) {
                continue;
            }
            let data = convert_to_f32(dtype, data)
                .ok_or_else(|| err(format!("tensor `{key}`: dtype {dtype:?} is not supported; expected F32, F16 or BF16")))?;
            tensors.insert(key.to_string(), RawTensor { shape: shape.to_vec(), dtype, data });
        }
        Ok(TensorStore { path: path.to_path_buf(), tensors, metadata: BTreeMap::new() })
    }
}

/// Why `bytes` are not a valid safetensors file, for an error message. The `safetensors`
/// crate's error does not always say which tensor is at fault (`TensorInvalidInfo`, an
/// incomplete buffer), so the header is read again here (an 8-byte little-endian length, then
/// JSON `{name: {dtype, shape, data_offsets: [a, b]}, "__metadata__": {...}}`) to name the
/// culprit; nothing is allocated for a length before it is checked against the file.
pub(crate) fn invalid_safetensors(bytes: &[u8], error: &safetensors::SafeTensorError) -> String {
    let why = diagnose(bytes).unwrap_or_else(|| error.to_string());
    format!("not a valid safetensors file ({} bytes): {why}", bytes.len())
}

fn diagnose(bytes: &[u8]) -> Option<String> {
    let Some(len) = bytes.get(..8) else {
        return Some(format!("{} bytes cannot hold the 8-byte header length", bytes.len()));
    };
    let n = u64::from_le_bytes(len.try_into().ok()?);
    let rest = (bytes.len() - 8) as u64;
    if n > rest {
        return Some(format!("the header length {n} claims more bytes than the {rest} after it"));
    }
    let header = &bytes[8..8 + n as usize];
    let data_len = rest - n;
    let json: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(header).ok()?;
    let mut spans: Vec<(u64, u64, &str)> = Vec::new();
    for (name, info) in &json {
        if name == "__metadata__" {
            continue;
        }
        let fail = |why: String| Some(format!("tensor `{name}`: {why}"));
        let Some(info) = info.as_object() else {
            return fail("its entry is not an object {dtype, shape, data_offsets}".into());
        };
        let dtype_text = info.get("dtype").cloned().unwrap_or_default();
        let Ok(dtype) = serde_json::from_value::<Dtype>(dtype_text.clone()) else {
            return fail(format!("unknown dtype {dtype_text}"));
        };
        let Some(shape) =
            info.get("shape").and_then(|v| v.as_array()).and_then(|v| v.iter().map(|d| d.as_u64()).collect::<Option<Vec<u64>>>())
        else {
            return fail("`shape` is not a list of non-negative integers".into());
        };
        let Some([a, b]) = info.get("data_offsets").and_then(|v| v.as_array()).and_then(|v| {
            let v: Option<Vec<u64>> = v.iter().map(|d| d.as_u64()).collect();
            v.and_then(|v| <[u64; 2]>::try_from(v).ok())
        }) else {
            return fail("`data_offsets` is not a pair [begin, end] of non-negative integers".into());
        };
        if b < a {
            return fail(format!("data offsets [{a}, {b}] end before they begin"));
        }
        if b > data_len {
            return fail(format!("data offsets [{a}, {b}] run past the end of the file ({data_len} data bytes after the header)"));
        }
        let bits = shape.iter().try_fold(dtype.bitsize() as u64, |acc, &d| acc.checked_mul(d));
        match bits {
            None => return fail(format!("{dtype:?} shape {shape:?} overflows the byte count")),
            Some(bits) if bits % 8 != 0 || bits / 8 != b - a => {
                return fail(format!(
                    "{dtype:?} shape {shape:?} needs {} bytes, its data offsets [{a}, {b}] hold {}",
                    bits.div_ceil(8),
                    b - a
                ))
            }
            Some(_) => {}
        }
        spans.push((a, b, name));
    }
    spans.sort();
    let mut end = 0;
    for &(a, b, name) in &spans {
        if a != end {
            let what = if a < end { "overlaps the tensor before it" } else { "leaves a gap after the tensor before it" };
            return Some(format!("tensor `{name}`: data offsets [{a}, {b}] {what} (which ends at {end})"));
        }
        end = b;
    }
    if end != data_len {
        return Some(format!("the tensors' data ends at byte {end}, but {data_len} data bytes follow the header"));
    }
    None
}

fn convert_to_f32(dtype: Dtype, bytes: &[u8]) -> Option<Vec<f32>> {
    // Copy out byte-wise: the tensor's offset in the file need not be aligned for f32 reads.
    Some(match dtype {
        Dtype::F32 => bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        Dtype::F16 => bytes.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        Dtype::BF16 => bytes.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        _ => return None,
    })
}

/// Storage precision for writing checkpoints (synthetic models, exported weights).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StorageDtype {
    F32,
    F16,
    BF16,
}

/// Serialises named f32 tensors to safetensors bytes in the requested precision.
pub fn serialize_tensors(
    tensors: &[(String, Vec<usize>, Vec<f32>)],
    dtype: StorageDtype,
    metadata: Option<std::collections::HashMap<String, String>>,
) -> Result<Vec<u8>> {
    let encoded: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(name, shape, data)| {
            let (dt, bytes): (Dtype, Vec<u8>) = match dtype {
                StorageDtype::F32 => (Dtype::F32, data.iter().flat_map(|v| v.to_le_bytes()).collect()),
                StorageDtype::F16 => (Dtype::F16, data.iter().flat_map(|v| half::f16::from_f32(*v).to_le_bytes()).collect()),
                StorageDtype::BF16 => (Dtype::BF16, data.iter().flat_map(|v| half::bf16::from_f32(*v).to_le_bytes()).collect()),
            };
            (name.clone(), dt, shape.clone(), bytes)
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = encoded
        .iter()
        .map(|(n, dt, shape, bytes)| {
            safetensors::tensor::TensorView::new(*dt, shape.clone(), bytes)
                .map(|v| (n.clone(), v))
                .map_err(|e| Error::Input(format!("tensor `{n}`: {e}")))
        })
        .collect::<Result<_>>()?;
    safetensors::serialize(views, metadata).map_err(|e| Error::Input(format!("serialising safetensors: {e}")))
}
