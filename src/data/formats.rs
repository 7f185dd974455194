//! Readers of the on-disk formats. Each returns HWC u8 pixels and optional labels; every error
//! names the file and where in it the problem is.

use std::fmt::Display;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::Image;
use crate::error::{Error, Result};
use crate::npy::{NpyArray, NpyDtype};

/// Equal-sized images back to back in one buffer (HWC each).
pub(crate) struct Packed {
    pub width: u32,
    pub height: u32,
    pub channels: u8,
    pub count: usize,
    pub pixels: Vec<u8>,
}

impl Packed {
    /// Checks the size fields of a format and builds the buffer holder.
    fn new(
        path: &Path,
        count: usize,
        height: usize,
        width: usize,
        channels: u8,
        pixels: Vec<u8>,
    ) -> Result<Packed> {
        let (Ok(h), Ok(w)) = (u32::try_from(height), u32::try_from(width)) else {
            return Err(input(
                path,
                format!("image size {height}×{width} does not fit 32 bits"),
            ));
        };
        if h == 0 || w == 0 {
            return Err(input(path, format!("image size {height}×{width} is empty")));
        }
        Ok(Packed {
            width: w,
            height: h,
            channels,
            count,
            pixels,
        })
    }

    /// Image `i` (< count).
    pub fn image(&self, i: usize) -> Image {
        let size = self.width as usize * self.height as usize * self.channels as usize;
        Image {
            width: self.width,
            height: self.height,
            channels: self.channels,
            pixels: self.pixels[i * size..(i + 1) * size].to_vec(),
        }
    }
}

fn input(path: &Path, message: impl Display) -> Error {
    Error::Input(format!("{}: {message}", path.display()))
}

/// The file's bytes, gunzipped when they start with the gzip magic 1f 8b (whatever the name).
fn read_maybe_gzip(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if !raw.starts_with(&[0x1f, 0x8b]) {
        return Ok(raw);
    }
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(&raw[..])
        .read_to_end(&mut out)
        .map_err(|e| {
            input(
                path,
                format!(
                    "corrupt gzip stream ({e}) after {} decompressed bytes",
                    out.len()
                ),
            )
        })?;
    Ok(out)
}

fn be_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// One IDX file of unsigned bytes with the expected magic (its low byte is the number of
/// dimensions): the dimensions and the data.
fn read_idx_file(path: &Path, magic: u32, what: &str) -> Result<(Vec<usize>, Vec<u8>)> {
    let bytes = read_maybe_gzip(path)?;
    let ndims = (magic & 0xff) as usize;
    let header = 4 + 4 * ndims;
    if bytes.len() < 4 {
        return Err(input(
            path,
            format!(
                "truncated: the IDX header needs {header} bytes, the file has {}",
                bytes.len()
            ),
        ));
    }
    let found = be_u32(&bytes, 0);
    if found != magic {
        return Err(input(
            path,
            format!("bad IDX magic 0x{found:08x} at offset 0: expected 0x{magic:08x} ({what})"),
        ));
    }
    if bytes.len() < header {
        return Err(input(
            path,
            format!(
                "truncated: the IDX header needs {header} bytes, the file has {}",
                bytes.len()
            ),
        ));
    }
    let dims: Vec<usize> = (0..ndims)
        .map(|d| be_u32(&bytes, 4 + 4 * d) as usize)
        .collect();
    let Some(data) = dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)) else {
        return Err(input(path, format!("IDX dimensions {dims:?} overflow")));
    };
    let expected = header + data;
    if bytes.len() != expected {
        let dims_text = dims
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join("×");
        return Err(input(
            path,
            format!(
                "{} IDX file: dimensions {dims_text} need {expected} bytes ({header} header + {data} data), the file has {} (data ends at offset {})",
                if bytes.len() < expected { "truncated" } else { "oversized" },
                bytes.len(),
                bytes.len().min(expected)
            ),
        ));
    }
    Ok((dims, bytes[header..].to_vec()))
}

/// An IDX image file (magic 0x803, N×H×W) and its labels (magic 0x801): the explicit file, or
/// else the sibling named with `images-idx3` replaced by `labels-idx1` when it exists.
pub(crate) fn read_idx(
    images: &Path,
    labels: Option<&Path>,
) -> Result<(Packed, Option<Vec<usize>>)> {
    let (dims, pixels) = read_idx_file(images, 0x0803, "unsigned-byte images N×H×W")?;
    let packed = Packed::new(images, dims[0], dims[1], dims[2], 1, pixels)?;
    let sibling = images
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| n.contains("images-idx3"))
        .map(|n| images.with_file_name(n.replace("images-idx3", "labels-idx1")))
        .filter(|p| p.is_file());
    let labels = match labels.map(Path::to_path_buf).or(sibling) {
        Some(path) => {
            let (dims, bytes) = read_idx_file(&path, 0x0801, "unsigned-byte labels N")?;
            check_count(&path, dims[0], images, packed.count)?;
            Some(bytes.into_iter().map(usize::from).collect())
        }
        None => None,
    };
    Ok((packed, labels))
}

fn check_count(labels: &Path, found: usize, images: &Path, expected: usize) -> Result<()> {
    if found != expected {
        return Err(input(
            labels,
            format!(
                "{found} labels for the {expected} images of {}",
                images.display()
            ),
        ));
    }
    Ok(())
}

/// CIFAR binary batches: records of the label byte(s) then 1024 R, 1024 G, 1024 B bytes
/// (32×32 row-major planes). CIFAR-100 records hold the coarse then the fine label; the fine
/// one is kept.
pub(crate) fn read_cifar(files: &[PathBuf], cifar100: bool) -> Result<(Packed, Vec<usize>)> {
    let (label_bytes, classes) = if cifar100 { (2, 100) } else { (1, 10) };
    let record = label_bytes + 3072;
    let (mut pixels, mut labels) = (Vec::new(), Vec::new());
    for path in files {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let whole = bytes.len() / record;
        if bytes.is_empty() || bytes.len() % record != 0 {
            return Err(input(
                path,
                format!(
                    "truncated record {whole} at byte offset {}: records are {record} bytes, {} bytes remain",
                    whole * record,
                    bytes.len() - whole * record
                ),
            ));
        }
        for (k, rec) in bytes.chunks_exact(record).enumerate() {
            let label = rec[label_bytes - 1] as usize;
            if label >= classes {
                return Err(input(
                    path,
                    format!(
                        "label {label} at byte offset {}: expected < {classes}",
                        k * record + label_bytes - 1
                    ),
                ));
            }
            labels.push(label);
            let planes = &rec[label_bytes..];
            pixels.extend((0..1024).flat_map(|p| [planes[p], planes[1024 + p], planes[2048 + p]]));
        }
    }
    let path = files
        .first()
        .map(PathBuf::as_path)
        .unwrap_or(Path::new("."));
    Ok((Packed::new(path, labels.len(), 32, 32, 3, pixels)?, labels))
}

fn dtype_name(dtype: NpyDtype) -> &'static str {
    match dtype {
        NpyDtype::F32 => "float32",
        NpyDtype::F64 => "float64",
        NpyDtype::U8 => "uint8",
        NpyDtype::I32 => "int32",
        NpyDtype::I64 => "int64",
    }
}

/// A uint8 `.npy` of N×H×W (gray) or N×H×W×C (C = 1 or 3) and an optional integer labels `.npy`.
pub(crate) fn read_npy(
    images: &Path,
    labels: Option<&Path>,
) -> Result<(Packed, Option<Vec<usize>>)> {
    let array = NpyArray::load(images)?;
    if array.dtype != NpyDtype::U8 {
        return Err(input(
            images,
            format!("images must be uint8 (|u1), found {}; convert with `x.astype(np.uint8)` (values 0-255)", dtype_name(array.dtype)),
        ));
    }
    let (n, h, w, c) = match array.shape[..] {
        [n, h, w] => (n, h, w, 1),
        [n, h, w, c @ (1 | 3)] => (n, h, w, c as u8),
        _ => {
            return Err(input(
                images,
                format!(
                    "shape {:?}: expected N×H×W or N×H×W×C with C = 1 or 3",
                    array.shape
                ),
            ))
        }
    };
    let packed = Packed::new(images, n, h, w, c, array.bytes)?;
    let labels = match labels {
        Some(path) => {
            let labels = NpyArray::load(path)?.to_labels(path)?;
            check_count(path, labels.len(), images, n)?;
            Some(labels)
        }
        None => None,
    };
    Ok((packed, labels))
}

/// Pixel-row CSV (plain or gzip): each row is a square gray image's pixels (0-255, row-major)
/// then the label. A first row that is not all numbers is a header and skipped.
pub(crate) fn read_csv(path: &Path) -> Result<(Packed, Vec<usize>)> {
    let bytes = read_maybe_gzip(path)?;
    let text = std::str::from_utf8(&bytes).map_err(|e| {
        input(
            path,
            format!("not UTF-8 text (at byte {})", e.valid_up_to()),
        )
    })?;
    let (mut pixels, mut labels) = (Vec::new(), Vec::new());
    let mut columns = None;
    let mut first = true;
    for (line_index, line) in text.lines().enumerate() {
        let line_no = line_index + 1;
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if std::mem::take(&mut first) && fields.iter().any(|f| f.parse::<f64>().is_err()) {
            continue;
        }
        let cols = *columns.get_or_insert(fields.len());
        let side = (cols.saturating_sub(1) as f64).sqrt().round() as usize;
        if side == 0 || side * side + 1 != cols {
            return Err(input(path, format!("line {line_no}: {cols} columns; expected a square image's pixels (e.g. 784 = 28×28) then the label")));
        }
        if fields.len() != cols {
            return Err(input(
                path,
                format!(
                    "line {line_no}: {} columns, expected {cols} like the first data row",
                    fields.len()
                ),
            ));
        }
        let value = |column: usize, max: f64, what: &str| -> Result<f64> {
            let field = fields[column - 1];
            match field.parse::<f64>() {
                Ok(v) if v.fract() == 0.0 && (0.0..=max).contains(&v) => Ok(v),
                _ => Err(input(
                    path,
                    format!("line {line_no}, column {column}: `{field}` is not {what}"),
                )),
            }
        };
        for column in 1..cols {
            pixels.push(value(column, 255.0, "a pixel value (an integer 0-255)")? as u8);
        }
        labels.push(value(cols, u32::MAX as f64, "a label (an integer ≥ 0)")? as usize);
    }
    let side = columns.map_or(0, |c| ((c - 1) as f64).sqrt().round() as usize);
    if side == 0 {
        return Err(input(path, "no data rows"));
    }
    Ok((
        Packed::new(path, labels.len(), side, side, 1, pixels)?,
        labels,
    ))
}

fn is_image_file(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
}

/// The image files in `dir` (and below it when `recursive`), sorted by path.
fn images_in(dir: &Path, recursive: bool) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        if path.is_dir() {
            if recursive {
                found.extend(images_in(&path, true)?);
            }
        } else if is_image_file(&path) {
            found.push(path);
        }
    }
    found.sort();
    Ok(found)
}

/// An image folder: sub-folders holding images are the classes (sorted by name, label = rank),
/// otherwise the images directly in `dir` without labels.
pub(crate) fn list_folder(dir: &Path) -> Result<(Vec<PathBuf>, Option<Vec<usize>>)> {
    let mut subdirs = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        if path.is_dir() {
            subdirs.push(path);
        }
    }
    subdirs.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    let (mut files, mut labels) = (Vec::new(), Vec::new());
    for sub in &subdirs {
        let images = images_in(sub, true)?;
        if !images.is_empty() {
            let class = labels.last().map_or(0, |&l| l + 1);
            labels.extend(std::iter::repeat_n(class, images.len()));
            files.extend(images);
        }
    }
    if !files.is_empty() {
        return Ok((files, Some(labels)));
    }
    let files = images_in(dir, false)?;
    if files.is_empty() {
        return Err(input(
            dir,
            "no .png/.jpg/.jpeg images in the folder or its sub-folders",
        ));
    }
    Ok((files, None))
}

/// Decodes one PNG/JPEG file: gray (with or without alpha) → 1 channel, anything else → RGB.
pub(crate) fn decode_file(path: &Path) -> Result<Image> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let decoded = image::load_from_memory(&bytes)
        .map_err(|e| input(path, format!("cannot decode the image: {e}")))?;
    let (width, height) = (decoded.width(), decoded.height());
    let image = if decoded.color().has_color() {
        Image {
            width,
            height,
            channels: 3,
            pixels: decoded.into_rgb8().into_raw(),
        }
    } else {
        Image {
            width,
            height,
            channels: 1,
            pixels: decoded.into_luma8().into_raw(),
        }
    };
    image.check().map_err(|e| input(path, e))?;
    Ok(image)
}
