//! Readers of the on-disk formats. Each returns HWC u8 pixels and optional labels; every error
//! names the file and where in it the problem is.
//!
//! Each reader has a byte-level form (`*_bytes`, taking the file's bytes and the path to name
//! in errors) that the path-based one calls after reading the file, so fuzzing and tests reach
//! exactly the code that datasets use. No size read from a file is trusted: every product is
//! checked, compared with the bytes actually present and with `crate::limits` before anything
//! is allocated for it, and gzip streams are decompressed only as far as a header claims.

use std::fmt::Display;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::Image;
use crate::error::{Error, Result};
use crate::limits;
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
    /// Checks the size fields of a format against the limits and the buffer, and builds the
    /// holder: at least one image, sides 1..=`MAX_IMAGE_SIDE`, 1 or 3 channels and exactly
    /// count × height × width × channels bytes.
    fn new(path: &Path, count: usize, height: usize, width: usize, channels: u8, pixels: Vec<u8>) -> Result<Packed> {
        if height == 0 || width == 0 {
            return Err(input(path, format!("image size {height}×{width} is empty")));
        }
        let what = format!("{}: image side", path.display());
        limits::check(&what, height.max(width), limits::MAX_IMAGE_SIDE, "MAX_IMAGE_SIDE")?;
        limits::check(&format!("{}: image count", path.display()), count, limits::MAX_SAMPLES, "MAX_SAMPLES")?;
        if count == 0 {
            return Err(input(path, "holds no images"));
        }
        if !matches!(channels, 1 | 3) {
            return Err(input(path, format!("{channels} channels: expected 1 or 3")));
        }
        let expected = limits::product(
            &format!("{}: {count} images of {height}×{width}×{channels}", path.display()),
            &[count, height, width, channels as usize],
        )?;
        if pixels.len() != expected {
            return Err(input(
                path,
                format!("{count} images of {height}×{width}×{channels} need {expected} pixel bytes, found {}", pixels.len()),
            ));
        }
        Ok(Packed {
            // Both fit: they are at most MAX_IMAGE_SIDE.
            width: width as u32,
            height: height as u32,
            channels,
            count,
            pixels,
        })
    }

    /// Image `i` (< count; `Dataset` checks the index first).
    pub fn image(&self, i: usize) -> Image {
        let size = self.width as usize * self.height as usize * self.channels as usize;
        Image { width: self.width, height: self.height, channels: self.channels, pixels: self.pixels[i * size..(i + 1) * size].to_vec() }
    }
}

fn input(path: &Path, message: impl Display) -> Error {
    Error::Input(format!("{}: {message}", path.display()))
}

/// A regular file's bytes. Anything else (a device such as /dev/zero, a FIFO, a folder) is
/// refused before reading: it could be endless or block forever.
fn read_file(path: &Path) -> Result<Vec<u8>> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if !meta.is_file() {
        return Err(input(path, "is not a regular file"));
    }
    std::fs::read(path).map_err(|e| Error::io(path, e))
}

fn is_gzip(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0x1f, 0x8b])
}

/// Up to `limit` bytes of `reader` (appended to `out`); a gzip error names the file and how
/// far decompression got.
fn read_up_to(path: &Path, reader: impl Read, limit: u64, out: &mut Vec<u8>) -> Result<()> {
    let before = out.len();
    reader
        .take(limit)
        .read_to_end(out)
        .map_err(|e| input(path, format!("corrupt gzip stream ({e}) after {} decompressed bytes", out.len() - before)))?;
    Ok(())
}

/// The bytes, gunzipped when they start with the gzip magic 1f 8b (whatever the name), at
/// most `MAX_DECOMPRESSED_BYTES` of them.
fn maybe_gunzip(path: &Path, raw: Vec<u8>) -> Result<Vec<u8>> {
    if !is_gzip(&raw) {
        return Ok(raw);
    }
    let mut out = Vec::new();
    let limit = limits::MAX_DECOMPRESSED_BYTES as u64;
    read_up_to(path, flate2::read::MultiGzDecoder::new(&raw[..]), limit + 1, &mut out)?;
    if out.len() as u64 > limit {
        return Err(input(path, format!("decompresses to more than {limit} bytes (MAX_DECOMPRESSED_BYTES, see `nac::limits`)")));
    }
    Ok(out)
}

fn be_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// One IDX file of unsigned bytes with the expected magic (its low byte is the number of
/// dimensions), raw or gzip: the dimensions and the data. A gzip stream is decompressed only
/// up to the size the header claims (plus one byte, to notice an oversized file).
fn idx_bytes(path: &Path, raw: &[u8], magic: u32, what: &str) -> Result<(Vec<usize>, Vec<u8>)> {
    let gzip = is_gzip(raw);
    let ndims = (magic & 0xff) as usize;
    let header = 4 + 4 * ndims;
    let mut decoder = gzip.then(|| flate2::read::MultiGzDecoder::new(raw));
    let head: Vec<u8> = match &mut decoder {
        Some(d) => {
            let mut head = Vec::with_capacity(header);
            read_up_to(path, d, header as u64, &mut head)?;
            head
        }
        None => raw[..raw.len().min(header)].to_vec(),
    };
    let truncated_header = || {
        input(
            path,
            format!(
                "truncated: the IDX header needs {header} bytes, the file has {}{}",
                head.len(),
                if gzip { " (decompressed)" } else { "" }
            ),
        )
    };
    if head.len() < 4 {
        return Err(truncated_header());
    }
    let found = be_u32(&head, 0);
    if found != magic {
        return Err(input(path, format!("bad IDX magic 0x{found:08x} at offset 0: expected 0x{magic:08x} ({what})")));
    }
    if head.len() < header {
        return Err(truncated_header());
    }
    let dims: Vec<usize> = (0..ndims).map(|d| be_u32(&head, 4 + 4 * d) as usize).collect();
    let dims_text = dims.iter().map(usize::to_string).collect::<Vec<_>>().join("×");
    let data = limits::product(&format!("{}: IDX dimensions {dims_text}", path.display()), &dims)?;
    let expected = limits::mul(&format!("{}: IDX size", path.display()), 1, data)?
        .checked_add(header)
        .ok_or_else(|| input(path, format!("IDX dimensions {dims_text} overflow")))?;
    let (found_len, body) = match decoder {
        Some(d) => {
            limits::check(
                &format!("{}: the decompressed size its IDX header claims ({dims_text})", path.display()),
                expected,
                limits::MAX_DECOMPRESSED_BYTES,
                "MAX_DECOMPRESSED_BYTES",
            )?;
            // Grows with the data actually decompressed, never sized by the claim.
            let mut body = Vec::new();
            read_up_to(path, d, data as u64 + 1, &mut body)?;
            (header + body.len(), body)
        }
        None if raw.len() == expected => (expected, raw[header..].to_vec()),
        None => (raw.len(), Vec::new()),
    };
    if found_len != expected {
        let claim = match ndims {
            3 => format!("{} images of {}×{}", dims[0], dims[1], dims[2]),
            1 => format!("{} labels", dims[0]),
            _ => format!("dimensions {dims_text}"),
        };
        let per = dims[1..].iter().product::<usize>();
        let held =
            if found_len >= expected || per == 0 { String::new() } else { format!(", which holds {} whole", (found_len - header) / per) };
        return Err(input(
            path,
            format!(
                "{} IDX file: the header claims {claim}, which need {expected} bytes ({header} header + {data} data); the file has {}{}{held}",
                if found_len < expected { "truncated" } else { "oversized" },
                if found_len > expected { format!("more than {expected}") } else { found_len.to_string() },
                if gzip { " (decompressed)" } else { "" },
            ),
        ));
    }
    Ok((dims, body))
}

/// IDX images (magic 0x803, N×H×W) and optionally labels (magic 0x801) from their bytes (raw
/// or gzip); the paths name them in errors.
pub(crate) fn idx_from_bytes(images: &Path, image_bytes: &[u8], labels: Option<(&Path, &[u8])>) -> Result<(Packed, Option<Vec<usize>>)> {
    let (dims, pixels) = idx_bytes(images, image_bytes, 0x0803, "unsigned-byte images N×H×W")?;
    let packed = Packed::new(images, dims[0], dims[1], dims[2], 1, pixels)?;
    let labels = match labels {
        Some((path, bytes)) => {
            let (dims, bytes) = idx_bytes(path, bytes, 0x0801, "unsigned-byte labels N")?;
            check_count(path, dims[0], images, packed.count)?;
            Some(bytes.into_iter().map(usize::from).collect())
        }
        None => None,
    };
    Ok((packed, labels))
}

/// An IDX image file (magic 0x803, N×H×W) and its labels (magic 0x801): the explicit file, or
/// else the sibling named with `images-idx3` replaced by `labels-idx1` when it exists.
pub(crate) fn read_idx(images: &Path, labels: Option<&Path>) -> Result<(Packed, Option<Vec<usize>>)> {
    let sibling = images
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| n.contains("images-idx3"))
        .map(|n| images.with_file_name(n.replace("images-idx3", "labels-idx1")))
        .filter(|p| p.is_file());
    let image_bytes = read_file(images)?;
    match labels.map(Path::to_path_buf).or(sibling) {
        Some(path) => {
            let label_bytes = read_file(&path)?;
            idx_from_bytes(images, &image_bytes, Some((&path, &label_bytes)))
        }
        None => idx_from_bytes(images, &image_bytes, None),
    }
}

fn check_count(labels: &Path, found: usize, images: &Path, expected: usize) -> Result<()> {
    if found != expected {
        return Err(input(labels, format!("{found} labels for the {expected} images of {}", images.display())));
    }
    Ok(())
}

/// The records of one CIFAR binary batch file, appended to `pixels` (HWC) and `labels`.
fn cifar_records(path: &Path, bytes: &[u8], cifar100: bool, pixels: &mut Vec<u8>, labels: &mut Vec<usize>) -> Result<()> {
    let (label_bytes, classes) = if cifar100 { (2, 100) } else { (1, 10) };
    let record = label_bytes + 3072;
    let whole = bytes.len() / record;
    if bytes.is_empty() {
        return Err(input(path, format!("empty file: expected records of {record} bytes")));
    }
    if !bytes.len().is_multiple_of(record) {
        return Err(input(
            path,
            format!(
                "truncated record {whole} at byte offset {}: records are {record} bytes, {} bytes remain",
                whole * record,
                bytes.len() - whole * record
            ),
        ));
    }
    let total = labels.len() + whole;
    limits::check(&format!("{}: records so far", path.display()), total, limits::MAX_SAMPLES, "MAX_SAMPLES")?;
    if cifar100 {
        if let Some(k) = bytes.chunks_exact(record).position(|rec| rec[0] >= 20) {
            return Err(input(path, format!("coarse label {} at byte offset {}: expected < 20", bytes[k * record], k * record)));
        }
    }
    pixels.reserve(whole * 3072);
    labels.reserve(whole);
    for (k, rec) in bytes.chunks_exact(record).enumerate() {
        let label = rec[label_bytes - 1] as usize;
        if label >= classes {
            return Err(input(path, format!("label {label} at byte offset {}: expected < {classes}", k * record + label_bytes - 1)));
        }
        labels.push(label);
        let planes = &rec[label_bytes..];
        pixels.extend((0..1024).flat_map(|p| [planes[p], planes[1024 + p], planes[2048 + p]]));
    }
    Ok(())
}

/// One CIFAR binary batch file from its bytes (see [`read_cifar`]).
pub(crate) fn cifar_from_bytes(path: &Path, bytes: &[u8], cifar100: bool) -> Result<(Packed, Vec<usize>)> {
    let (mut pixels, mut labels) = (Vec::new(), Vec::new());
    cifar_records(path, bytes, cifar100, &mut pixels, &mut labels)?;
    Ok((Packed::new(path, labels.len(), 32, 32, 3, pixels)?, labels))
}

/// CIFAR binary batches: records of the label byte(s) then 1024 R, 1024 G, 1024 B bytes
/// (32×32 row-major planes). CIFAR-100 records hold the coarse then the fine label; the fine
/// one is kept.
pub(crate) fn read_cifar(files: &[PathBuf], cifar100: bool) -> Result<(Packed, Vec<usize>)> {
    let Some(first) = files.first() else {
        return Err(Error::Input("no CIFAR batch files given".into()));
    };
    let (mut pixels, mut labels) = (Vec::new(), Vec::new());
    for path in files {
        let bytes = read_file(path)?;
        cifar_records(path, &bytes, cifar100, &mut pixels, &mut labels)?;
    }
    Ok((Packed::new(first, labels.len(), 32, 32, 3, pixels)?, labels))
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

/// The images of a uint8 array of N×H×W (gray) or N×H×W×C (C = 1 or 3); `path` names it.
fn images_from_array(path: &Path, array: NpyArray) -> Result<Packed> {
    if array.dtype != NpyDtype::U8 {
        return Err(input(
            path,
            format!("images must be uint8 (|u1), found {}; convert with `x.astype(np.uint8)` (values 0-255)", dtype_name(array.dtype)),
        ));
    }
    let (n, h, w, c) = match array.shape[..] {
        [n, h, w] => (n, h, w, 1),
        [n, h, w, c @ (1 | 3)] => (n, h, w, c as u8),
        _ => return Err(input(path, format!("shape {:?}: expected N×H×W or N×H×W×C with C = 1 or 3", array.shape))),
    };
    // Packed::new checks the sides and that the shape's product is the data's length.
    Packed::new(path, n, h, w, c, array.bytes)
}

/// A uint8 `.npy` of N×H×W (gray) or N×H×W×C (C = 1 or 3) and an optional integer labels `.npy`.
pub(crate) fn read_npy(images: &Path, labels: Option<&Path>) -> Result<(Packed, Option<Vec<usize>>)> {
    let packed = images_from_array(images, NpyArray::load(images)?)?;
    let labels = match labels {
        Some(path) => {
            let labels = NpyArray::load(path)?.to_labels(path)?;
            check_count(path, labels.len(), images, packed.count)?;
            Some(labels)
        }
        None => None,
    };
    Ok((packed, labels))
}

/// One severity of a released CIFAR-10-C corruption: `DIR/NAME.npy` holds the five severities
/// back to back (N = 5 × rows, uint8 N×H×W×C), `DIR/labels.npy` the N labels; severity s is
/// rows (s − 1)·N/5 … s·N/5 of both (N/5 = 10,000 in the release). Only those rows are read.
pub(crate) fn read_cifar10c(dir: &Path, name: &str, severity: u8) -> Result<(Packed, Vec<usize>)> {
    let (images, labels) = (dir.join(format!("{name}.npy")), dir.join("labels.npy"));
    let (_, total) = NpyArray::load_rows(&images, 0..0)?;
    if total == 0 || !total.is_multiple_of(5) {
        return Err(input(&images, format!("{total} images: expected the 5 severities back to back, a positive multiple of 5 rows")));
    }
    let per = total / 5;
    let rows = (severity as usize - 1) * per..severity as usize * per;
    let (array, _) = NpyArray::load_rows(&images, rows.clone())?;
    let packed = images_from_array(&images, array)?;
    let (array, label_total) = NpyArray::load_rows(&labels, 0..0)?;
    if label_total != total {
        return Err(input(&labels, format!("{label_total} labels for the {total} images of {} (5 severities × {per})", images.display())));
    }
    let (array, _) = match array.shape.len() {
        1 => NpyArray::load_rows(&labels, rows)?,
        _ => (array, 0),
    };
    Ok((packed, array.to_labels(&labels)?))
}

/// One `.npy` entry of an `.npz` archive (`np.savez`, stored, or `np.savez_compressed`,
/// deflated), or `None` when absent; the declared size is checked before it is read.
fn npz_entry(path: &Path, archive: &mut zip::ZipArchive<std::fs::File>, key: &str) -> Result<Option<NpyArray>> {
    let name = format!("{key}.npy");
    let shown = PathBuf::from(format!("{} (entry {name})", path.display()));
    let mut entry = match archive.by_name(&name) {
        Ok(e) => e,
        Err(zip::result::ZipError::FileNotFound) => return Ok(None),
        Err(e) => return Err(input(&shown, format!("cannot read the entry: {e}"))),
    };
    let size = entry.size();
    limits::check(&format!("{}: declared size", shown.display()), size as usize, limits::MAX_DECOMPRESSED_BYTES, "MAX_DECOMPRESSED_BYTES")?;
    let mut bytes = Vec::new();
    read_up_to(&shown, (&mut entry).take(size + 1), size + 1, &mut bytes)?;
    if bytes.len() as u64 != size {
        return Err(input(&shown, format!("declares {size} bytes but holds {}", bytes.len())));
    }
    NpyArray::parse(&shown, &bytes).map(Some)
}

/// An `.npz` archive with a uint8 `images` array (N×H×W or N×H×W×C) and optionally integer
/// `labels` (N), as CIFAR-10.2 ships (`cifar102_test.npz`).
pub(crate) fn read_npz(path: &Path) -> Result<(Packed, Option<Vec<usize>>)> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if !meta.is_file() {
        return Err(input(path, "is not a regular file"));
    }
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut archive = zip::ZipArchive::new(file).map_err(|e| input(path, format!("not an .npz (zip) archive: {e}")))?;
    let Some(images) = npz_entry(path, &mut archive, "images")? else {
        let names: Vec<&str> = archive.file_names().collect();
        return Err(input(
            path,
            format!("no `images.npy` entry (the archive holds {}); expected `images` and `labels` arrays", names.join(", ")),
        ));
    };
    let packed = images_from_array(&PathBuf::from(format!("{} (entry images.npy)", path.display())), images)?;
    let labels = match npz_entry(path, &mut archive, "labels")? {
        Some(array) => {
            let shown = PathBuf::from(format!("{} (entry labels.npy)", path.display()));
            let labels = array.to_labels(&shown)?;
            check_count(&shown, labels.len(), path, packed.count)?;
            Some(labels)
        }
        None => None,
    };
    Ok((packed, labels))
}

/// A pixel-row CSV from its bytes (plain or gzip; see [`read_csv`]).
pub(crate) fn csv_from_bytes(path: &Path, raw: Vec<u8>) -> Result<(Packed, Vec<usize>)> {
    let bytes = maybe_gunzip(path, raw)?;
    let text = std::str::from_utf8(&bytes).map_err(|e| input(path, format!("not UTF-8 text (at byte {})", e.valid_up_to())))?;
    let (mut pixels, mut labels) = (Vec::new(), Vec::new());
    let mut columns: Option<(usize, usize)> = None;
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
        let (cols, _) = match columns {
            Some(c) => c,
            None => {
                let cols = fields.len();
                // The exact integer square root of cols − 1 (no float rounding).
                let pixels = cols - 1;
                let side = (pixels as f64).sqrt() as usize;
                let side = (side.saturating_sub(1)..=side + 1).find(|s| s.checked_mul(*s) == Some(pixels)).unwrap_or(0);
                if side == 0 {
                    return Err(input(
                        path,
                        format!("line {line_no}: {cols} columns; expected a square image's pixels (e.g. 784 = 28×28) then the label"),
                    ));
                }
                limits::check(
                    &format!("{}: line {line_no}: the image side", path.display()),
                    side,
                    limits::MAX_IMAGE_SIDE,
                    "MAX_IMAGE_SIDE",
                )?;
                *columns.insert((cols, side))
            }
        };
        if fields.len() != cols {
            return Err(input(path, format!("line {line_no}: {} columns, expected {cols} like the first data row", fields.len())));
        }
        let value = |column: usize, max: f64, what: &str| -> Result<f64> {
            let field = fields[column - 1];
            match field.parse::<f64>() {
                Ok(v) if v.fract() == 0.0 && (0.0..=max).contains(&v) => Ok(v),
                _ => Err(input(path, format!("line {line_no}, column {column}: `{field}` is not {what}"))),
            }
        };
        for column in 1..cols {
            pixels.push(value(column, 255.0, "a pixel value (an integer 0-255)")? as u8);
        }
        labels.push(value(cols, u32::MAX as f64, "a label (an integer 0 to 4294967295)")? as usize);
    }
    let Some((_, side)) = columns else {
        return Err(input(path, "no data rows"));
    };
    Ok((Packed::new(path, labels.len(), side, side, 1, pixels)?, labels))
}

/// Pixel-row CSV (plain or gzip): each row is a square gray image's pixels (0-255, row-major)
/// then the label. A first row that is not all numbers is a header and skipped.
pub(crate) fn read_csv(path: &Path) -> Result<(Packed, Vec<usize>)> {
    csv_from_bytes(path, read_file(path)?)
}

fn is_image_file(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
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
        return Err(input(dir, "no .png/.jpg/.jpeg images in the folder or its sub-folders"));
    }
    Ok((files, None))
}

/// Decodes one PNG/JPEG file's bytes (`path` names it in errors): gray (with or without
/// alpha) → 1 channel, anything else → RGB. The decoder refuses, before allocating, an image
/// whose header claims a side over `MAX_IMAGE_SIDE` or more than `MAX_DECODE_ALLOC` bytes.
pub(crate) fn decode_bytes(path: &Path, bytes: &[u8]) -> Result<Image> {
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| input(path, format!("cannot read the image: {e}")))?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(limits::MAX_IMAGE_SIDE as u32);
    limits.max_image_height = Some(limits::MAX_IMAGE_SIDE as u32);
    limits.max_alloc = Some(limits::MAX_DECODE_ALLOC);
    reader.limits(limits);
    let decoded = reader.decode().map_err(|e| match e {
        image::ImageError::Limits(e) => input(
            path,
            format!(
                "cannot decode the image: {e} (sides up to {} pixels, MAX_IMAGE_SIDE, and {} bytes of decoder memory, MAX_DECODE_ALLOC; see `nac::limits`)",
                limits::MAX_IMAGE_SIDE,
                limits::MAX_DECODE_ALLOC
            ),
        ),
        e => input(path, format!("cannot decode the image: {e}")),
    })?;
    let (width, height) = (decoded.width(), decoded.height());
    let image = if decoded.color().has_color() {
        Image { width, height, channels: 3, pixels: decoded.into_rgb8().into_raw() }
    } else {
        Image { width, height, channels: 1, pixels: decoded.into_luma8().into_raw() }
    };
    image.check().map_err(|e| input(path, e))?;
    Ok(image)
}

/// Decodes one PNG/JPEG file (see [`decode_bytes`]).
pub(crate) fn decode_file(path: &Path) -> Result<Image> {
    decode_bytes(path, &read_file(path)?)
}
