//! PyTorch checkpoints (`torch.save`, the zip format of PyTorch ≥ 1.6: `ARCHIVE/data.pkl` and
//! one raw little-endian storage per tensor under `ARCHIVE/data/`) read without Python.
//!
//! `data.pkl` goes through a restricted unpickler: it knows only the opcodes a tensor state
//! dict uses and only four kinds of global (`collections.OrderedDict`,
//! `torch._utils._rebuild_tensor_v2`, `torch._utils._rebuild_parameter`, the `torch.*Storage`
//! classes). Nothing is ever called or imported: a pickle naming any other global (`os.system`,
//! `builtins.eval`, …) or using any other opcode is refused with its name, so a hostile file
//! cannot run code. Every length and index read from the file is checked against the bytes
//! present before it is used.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use safetensors::Dtype;

use crate::error::{Error, Result};

/// A tensor read from a checkpoint: its stored dtype, shape and contiguous little-endian bytes.
pub struct PthTensor {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub bytes: Vec<u8>,
}

/// Whether `bytes` look like a `torch.save` zip archive (rather than safetensors).
pub fn is_pth(bytes: &[u8]) -> bool {
    bytes.starts_with(b"PK\x03\x04")
}

/// The tensors of the state dict in a `torch.save` file, unwrapped from the usual containers
/// (`{'state_dict': …}`, `{'model': …}`, `{'model_state_dict': …}`, `{'net': …}`), with a
/// `model.` prefix shared by every name removed (the caller strips `module.` as for
/// safetensors). `path` only names the file in errors.
pub fn read(path: &Path, bytes: &[u8]) -> Result<Vec<PthTensor>> {
    let fail = |message: String| Error::Weights { path: path.to_path_buf(), message };
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).map_err(|e| fail(format!("not a PyTorch zip checkpoint: {e}")))?;
    let pickle_name = (0..archive.len())
        .filter_map(|i| archive.name_for_index(i).map(str::to_string))
        .find(|n| n.ends_with("/data.pkl") && n.matches('/').count() == 1)
        .ok_or_else(|| fail("no ARCHIVE/data.pkl entry: not a torch.save checkpoint".into()))?;
    let prefix = pickle_name.trim_end_matches("data.pkl").to_string();
    let pickle = read_entry(&mut archive, &pickle_name, bytes.len()).map_err(&fail)?;
    let top = Unpickler::new(&pickle).run().map_err(|e| fail(format!("{pickle_name}: {e}")))?;
    let entries = state_dict(&top).map_err(&fail)?;
    let strip_model = !entries.is_empty() && entries.iter().all(|(n, _)| n.starts_with("model."));
    let mut tensors = Vec::with_capacity(entries.len());
    for (name, t) in entries {
        let name = if strip_model { name["model.".len()..].to_string() } else { name };
        let storage = read_entry(&mut archive, &format!("{prefix}data/{}", t.storage.key), bytes.len()).map_err(&fail)?;
        let bytes = t.gather(&storage).map_err(|e| fail(format!("tensor `{name}`: {e}")))?;
        tensors.push(PthTensor { name, dtype: t.storage.kind.dtype(), shape: t.shape.clone(), bytes });
    }
    Ok(tensors)
}

fn read_entry(archive: &mut zip::ZipArchive<std::io::Cursor<&[u8]>>, name: &str, file_len: usize) -> std::result::Result<Vec<u8>, String> {
    let mut entry = archive.by_name(name).map_err(|e| format!("entry `{name}`: {e}"))?;
    // Torch stores entries uncompressed: an entry cannot be larger than the file holding it.
    if entry.size() > file_len as u64 {
        return Err(format!("entry `{name}` claims {} bytes, more than the {file_len}-byte file", entry.size()));
    }
    let mut out = Vec::with_capacity(entry.size() as usize);
    entry.read_to_end(&mut out).map_err(|e| format!("entry `{name}`: {e}"))?;
    Ok(out)
}

/// The storage classes a state dict's tensors use.
#[derive(Clone, Copy, Debug, PartialEq)]
enum StorageKind {
    Float,
    Half,
    BFloat16,
    Double,
    Long,
    Int,
    Short,
    Char,
    Byte,
    Bool,
}

impl StorageKind {
    fn from_class(name: &str) -> Option<Self> {
        Some(match name {
            "FloatStorage" => StorageKind::Float,
            "HalfStorage" => StorageKind::Half,
            "BFloat16Storage" => StorageKind::BFloat16,
            "DoubleStorage" => StorageKind::Double,
            "LongStorage" => StorageKind::Long,
            "IntStorage" => StorageKind::Int,
            "ShortStorage" => StorageKind::Short,
            "CharStorage" => StorageKind::Char,
            "ByteStorage" => StorageKind::Byte,
            "BoolStorage" => StorageKind::Bool,
            _ => return None,
        })
    }

    fn dtype(self) -> Dtype {
        match self {
            StorageKind::Float => Dtype::F32,
            StorageKind::Half => Dtype::F16,
            StorageKind::BFloat16 => Dtype::BF16,
            StorageKind::Double => Dtype::F64,
            StorageKind::Long => Dtype::I64,
            StorageKind::Int => Dtype::I32,
            StorageKind::Short => Dtype::I16,
            StorageKind::Char => Dtype::I8,
            StorageKind::Byte => Dtype::U8,
            StorageKind::Bool => Dtype::BOOL,
        }
    }

    fn size(self) -> usize {
        match self {
            StorageKind::Double | StorageKind::Long => 8,
            StorageKind::Float | StorageKind::Int => 4,
            StorageKind::Half | StorageKind::BFloat16 | StorageKind::Short => 2,
            StorageKind::Char | StorageKind::Byte | StorageKind::Bool => 1,
        }
    }
}

#[derive(Clone, Debug)]
struct StorageRef {
    kind: StorageKind,
    key: String,
    numel: usize,
}

#[derive(Clone, Debug)]
struct TensorRef {
    storage: StorageRef,
    offset: usize,
    shape: Vec<usize>,
    stride: Vec<usize>,
}

impl TensorRef {
    /// The tensor's elements in C order, gathered from its storage by offset and strides.
    fn gather(&self, storage: &[u8]) -> std::result::Result<Vec<u8>, String> {
        let size = self.storage.kind.size();
        let numel = self.storage.numel;
        if storage.len() != numel.checked_mul(size).ok_or("storage size overflows")? {
            return Err(format!(
                "storage `{}` holds {} bytes, but the pickle says {numel} elements of {size} bytes",
                self.storage.key,
                storage.len()
            ));
        }
        if self.shape.len() != self.stride.len() {
            return Err(format!("shape {:?} and stride {:?} differ in length", self.shape, self.stride));
        }
        let count = self.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or("the shape's element count overflows")?;
        if count == 0 {
            return Ok(Vec::new());
        }
        // A state dict's tensors are stored, not broadcast: more elements than the storage
        // holds (stride 0) would size an allocation the file does not bound.
        if count > numel {
            return Err(format!(
                "shape {:?} has {count} elements, more than its storage of {numel} (a broadcast view is not a stored tensor)",
                self.shape
            ));
        }
        // The last element's position bounds every other one.
        let last = self.shape.iter().zip(&self.stride).try_fold(self.offset, |a, (&d, &s)| a.checked_add((d - 1).checked_mul(s)?));
        if last.is_none_or(|l| l >= numel) {
            return Err(format!(
                "shape {:?}, stride {:?} and offset {} reach past its storage of {numel} elements",
                self.shape, self.stride, self.offset
            ));
        }
        let mut out = Vec::with_capacity(count * size);
        let mut index = vec![0usize; self.shape.len()];
        for _ in 0..count {
            let at = self.offset + index.iter().zip(&self.stride).map(|(i, s)| i * s).sum::<usize>();
            out.extend_from_slice(&storage[at * size..(at + 1) * size]);
            for d in (0..index.len()).rev() {
                index[d] += 1;
                if index[d] < self.shape[d] {
                    break;
                }
                index[d] = 0;
            }
        }
        Ok(out)
    }
}

/// The callables a state dict's pickle may name.
#[derive(Clone, Debug)]
enum Global {
    OrderedDict,
    RebuildTensor,
    RebuildParameter,
    Storage(StorageKind),
}

#[derive(Clone, Debug)]
enum Value {
    None,
    Bool,
    Int(i64),
    Float,
    Str(String),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    Global(Global),
    Storage(StorageRef),
    Tensor(TensorRef),
    Mark,
}

impl Value {
    fn kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool => "bool",
            Value::Int(_) => "int",
            Value::Float => "float",
            Value::Str(_) => "str",
            Value::Tuple(_) => "tuple",
            Value::List(_) => "list",
            Value::Dict(_) => "dict",
            Value::Global(_) => "class",
            Value::Storage(_) => "storage",
            Value::Tensor(_) => "tensor",
            Value::Mark => "mark",
        }
    }

    fn usize(&self, what: &str) -> std::result::Result<usize, String> {
        match self {
            Value::Int(v) => usize::try_from(*v).map_err(|_| format!("{what} is {v}, expected a non-negative integer")),
            other => Err(format!("{what} is a {}, expected an integer", other.kind())),
        }
    }

    fn usizes(&self, what: &str) -> std::result::Result<Vec<usize>, String> {
        match self {
            Value::Tuple(items) | Value::List(items) => items.iter().map(|v| v.usize(what)).collect(),
            other => Err(format!("{what} is a {}, expected a tuple of integers", other.kind())),
        }
    }
}

struct Unpickler<'a> {
    data: &'a [u8],
    at: usize,
    stack: Vec<Value>,
    memo: HashMap<u32, Value>,
}

impl<'a> Unpickler<'a> {
    fn new(data: &'a [u8]) -> Self {
        Unpickler { data, at: 0, stack: Vec::new(), memo: HashMap::new() }
    }

    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| format!("byte {}: {n} bytes needed, {} left (truncated pickle)", self.at, self.data.len() - self.at))?;
        let out = &self.data[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn u8(&mut self) -> std::result::Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> std::result::Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }

    fn line(&mut self) -> std::result::Result<String, String> {
        let rest = &self.data[self.at..];
        let end = rest.iter().position(|&b| b == b'\n').ok_or_else(|| format!("byte {}: unterminated GLOBAL name", self.at))?;
        let text = String::from_utf8_lossy(&rest[..end]).into_owned();
        self.at += end + 1;
        Ok(text)
    }

    fn string(&mut self, len: usize) -> std::result::Result<Value, String> {
        let at = self.at;
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes).map(|s| Value::Str(s.to_string())).map_err(|_| format!("byte {at}: a string that is not UTF-8"))
    }

    fn pop(&mut self) -> std::result::Result<Value, String> {
        self.stack.pop().ok_or_else(|| format!("byte {}: the pickle pops an empty stack", self.at))
    }

    /// The values above the topmost mark, which is removed.
    fn pop_mark(&mut self) -> std::result::Result<Vec<Value>, String> {
        let mark =
            self.stack.iter().rposition(|v| matches!(v, Value::Mark)).ok_or_else(|| format!("byte {}: no MARK on the stack", self.at))?;
        let items = self.stack.split_off(mark + 1);
        self.stack.pop();
        Ok(items)
    }

    fn top_mut(&mut self) -> std::result::Result<&mut Value, String> {
        let at = self.at;
        self.stack.last_mut().ok_or_else(|| format!("byte {at}: the pickle pops an empty stack"))
    }

    fn memo_put(&mut self, key: u32) -> std::result::Result<(), String> {
        let top = self.stack.last().cloned().ok_or_else(|| format!("byte {}: memoizing an empty stack", self.at))?;
        self.memo.insert(key, top);
        Ok(())
    }

    fn memo_get(&mut self, key: u32) -> std::result::Result<(), String> {
        let value = self.memo.get(&key).cloned().ok_or_else(|| format!("byte {}: memo entry {key} was never stored", self.at))?;
        self.stack.push(value);
        Ok(())
    }

    fn global(&self, module: &str, name: &str) -> std::result::Result<Global, String> {
        match (module, name) {
            ("collections", "OrderedDict") => Ok(Global::OrderedDict),
            ("torch._utils", "_rebuild_tensor_v2") => Ok(Global::RebuildTensor),
            ("torch._utils", "_rebuild_parameter") => Ok(Global::RebuildParameter),
            ("torch", class) => StorageKind::from_class(class)
                .map(Global::Storage)
                .ok_or_else(|| format!("global `torch.{class}` is not allowed in a tensor state dict (refused, nothing was run)")),
            _ => Err(format!("global `{module}.{name}` is not allowed in a tensor state dict (refused, nothing was run)")),
        }
    }

    fn reduce(&self, callable: Value, args: Value) -> std::result::Result<Value, String> {
        let Value::Tuple(args) = args else { return Err(format!("REDUCE arguments are a {}, expected a tuple", args.kind())) };
        match callable {
            Value::Global(Global::OrderedDict) if args.is_empty() => Ok(Value::Dict(Vec::new())),
            Value::Global(Global::RebuildTensor) => {
                if args.len() < 4 {
                    return Err(format!("_rebuild_tensor_v2 takes (storage, offset, size, stride, …), got {} arguments", args.len()));
                }
                let Value::Storage(storage) = &args[0] else { return Err(format!("_rebuild_tensor_v2's storage is a {}", args[0].kind())) };
                Ok(Value::Tensor(TensorRef {
                    storage: storage.clone(),
                    offset: args[1].usize("the storage offset")?,
                    shape: args[2].usizes("the size")?,
                    stride: args[3].usizes("the stride")?,
                }))
            }
            Value::Global(Global::RebuildParameter) => match args.first() {
                Some(Value::Tensor(t)) => Ok(Value::Tensor(t.clone())),
                _ => Err("_rebuild_parameter takes a tensor".into()),
            },
            other => Err(format!("REDUCE of a {} with {} arguments is not part of a tensor state dict", other.kind(), args.len())),
        }
    }

    fn persistent(&self, pid: Value) -> std::result::Result<Value, String> {
        let Value::Tuple(items) = pid else { return Err(format!("a persistent id is a {}, expected a tuple", pid.kind())) };
        match items.as_slice() {
            [Value::Str(tag), Value::Global(Global::Storage(kind)), Value::Str(key), Value::Str(_location), numel] if tag == "storage" => {
                Ok(Value::Storage(StorageRef { kind: *kind, key: key.clone(), numel: numel.usize("the storage size")? }))
            }
            _ => Err("a persistent id that is not ('storage', torch.*Storage, key, location, size)".into()),
        }
    }

    fn run(mut self) -> std::result::Result<Value, String> {
        loop {
            let at = self.at;
            let op = self.u8()?;
            match op {
                0x80 => {
                    self.u8()?; // PROTO
                }
                0x95 => {
                    self.take(8)?; // FRAME
                }
                b'.' => return self.pop(),
                b'(' => self.stack.push(Value::Mark),
                b'}' => self.stack.push(Value::Dict(Vec::new())),
                b']' => self.stack.push(Value::List(Vec::new())),
                b')' => self.stack.push(Value::Tuple(Vec::new())),
                b'N' => self.stack.push(Value::None),
                0x88 | 0x89 => self.stack.push(Value::Bool),
                b'K' => {
                    let v = self.u8()?;
                    self.stack.push(Value::Int(v as i64));
                }
                b'M' => {
                    let b = self.take(2)?;
                    self.stack.push(Value::Int(u16::from_le_bytes([b[0], b[1]]) as i64));
                }
                b'J' => {
                    let v = self.u32()? as i32;
                    self.stack.push(Value::Int(v as i64));
                }
                0x8a => {
                    let n = self.u8()? as usize;
                    let b = self.take(n)?;
                    if n > 8 {
                        return Err(format!("byte {at}: an integer of {n} bytes"));
                    }
                    let mut v: i64 = 0;
                    for (i, &byte) in b.iter().enumerate() {
                        v |= (byte as i64) << (8 * i);
                    }
                    if n > 0 && n < 8 && b[n - 1] & 0x80 != 0 {
                        v -= 1i64 << (8 * n);
                    }
                    self.stack.push(Value::Int(v));
                }
                b'G' => {
                    self.take(8)?;
                    self.stack.push(Value::Float);
                }
                b'X' => {
                    let n = self.u32()? as usize;
                    let s = self.string(n)?;
                    self.stack.push(s);
                }
                0x8c => {
                    let n = self.u8()? as usize;
                    let s = self.string(n)?;
                    self.stack.push(s);
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    let g = self.global(&module, &name)?;
                    self.stack.push(Value::Global(g));
                }
                0x93 => {
                    let (name, module) = (self.pop()?, self.pop()?);
                    let (Value::Str(module), Value::Str(name)) = (module, name) else {
                        return Err(format!("byte {at}: STACK_GLOBAL of non-strings"));
                    };
                    let g = self.global(&module, &name)?;
                    self.stack.push(Value::Global(g));
                }
                b'q' => {
                    let k = self.u8()? as u32;
                    self.memo_put(k)?;
                }
                b'r' => {
                    let k = self.u32()?;
                    self.memo_put(k)?;
                }
                0x94 => {
                    let k = self.memo.len() as u32;
                    self.memo_put(k)?;
                }
                b'h' => {
                    let k = self.u8()? as u32;
                    self.memo_get(k)?;
                }
                b'j' => {
                    let k = self.u32()?;
                    self.memo_get(k)?;
                }
                b't' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::Tuple(items));
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    if self.stack.len() < n {
                        return Err(format!("byte {at}: TUPLE{n} on a stack of {}", self.stack.len()));
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.stack.push(Value::Tuple(items));
                }
                b'R' => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let v = self.reduce(callable, args).map_err(|e| format!("byte {at}: {e}"))?;
                    self.stack.push(v);
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let v = self.persistent(pid).map_err(|e| format!("byte {at}: {e}"))?;
                    self.stack.push(v);
                }
                b's' => {
                    let (value, key) = (self.pop()?, self.pop()?);
                    match self.top_mut()? {
                        Value::Dict(d) => d.push((key, value)),
                        other => return Err(format!("byte {at}: SETITEM on a {}", other.kind())),
                    }
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    if items.len() % 2 != 0 {
                        return Err(format!("byte {at}: SETITEMS with an odd number of values"));
                    }
                    let mut pairs = Vec::with_capacity(items.len() / 2);
                    let mut it = items.into_iter();
                    while let (Some(k), Some(v)) = (it.next(), it.next()) {
                        pairs.push((k, v));
                    }
                    match self.top_mut()? {
                        Value::Dict(d) => d.extend(pairs),
                        other => return Err(format!("byte {at}: SETITEMS on a {}", other.kind())),
                    }
                }
                b'a' => {
                    let v = self.pop()?;
                    match self.top_mut()? {
                        Value::List(l) => l.push(v),
                        other => return Err(format!("byte {at}: APPEND on a {}", other.kind())),
                    }
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    match self.top_mut()? {
                        Value::List(l) => l.extend(items),
                        other => return Err(format!("byte {at}: APPENDS on a {}", other.kind())),
                    }
                }
                b'b' => {
                    // BUILD: an OrderedDict's instance state (a state dict's `_metadata`) is not
                    // needed; BUILD on anything else is not part of a state dict.
                    let _state = self.pop()?;
                    if !matches!(self.top_mut()?, Value::Dict(_)) {
                        return Err(format!("byte {at}: BUILD on something other than a dict"));
                    }
                }
                other => return Err(format!("byte {at}: opcode 0x{other:02x} is not allowed in a tensor state dict")),
            }
        }
    }
}

/// The `(name, tensor)` pairs of the state dict in the unpickled `top`.
fn state_dict(top: &Value) -> std::result::Result<Vec<(String, TensorRef)>, String> {
    fn tensors(value: &Value) -> Option<Vec<(String, TensorRef)>> {
        let Value::Dict(items) = value else { return None };
        items
            .iter()
            .map(|(k, v)| match (k, v) {
                (Value::Str(name), Value::Tensor(t)) => Some((name.clone(), t.clone())),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()
            .filter(|t| !t.is_empty())
    }
    if let Some(t) = tensors(top) {
        return Ok(t);
    }
    let Value::Dict(items) = top else { return Err(format!("the checkpoint holds a {}, expected a dict of tensors", top.kind())) };
    for wrapper in ["state_dict", "model_state_dict", "model", "net", "state"] {
        if let Some((_, v)) = items.iter().find(|(k, _)| matches!(k, Value::Str(s) if s == wrapper)) {
            if let Some(t) = tensors(v) {
                return Ok(t);
            }
        }
    }
    let keys: Vec<String> = items
        .iter()
        .take(8)
        .map(|(k, v)| if let Value::Str(s) = k { format!("`{s}` ({})", v.kind()) } else { k.kind().to_string() })
        .collect();
    Err(format!("no dict of tensors at the top or under state_dict/model_state_dict/model/net/state (top-level keys: {})", keys.join(", ")))
}
