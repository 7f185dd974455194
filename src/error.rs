//! One error type for the whole crate: every variant says what was expected and what was found.

use std::fmt;
use std::path::PathBuf;

#[derive(Debug)]
pub enum Error {
    /// No usable GPU adapter, or the requested one does not exist.
    NoAdapter(String),
    /// Device creation or a GPU operation failed.
    Gpu(String),
    /// A file could not be read or written.
    Io { path: PathBuf, source: std::io::Error },
    /// A weights file is malformed or does not match the architecture.
    Weights { path: PathBuf, message: String },
    /// Bad input data (shape, dtype, value) or a bad argument.
    Input(String),
    /// The pass produced a non-finite value for sample `sample` of a batch or set (an input
    /// too large for f32 arithmetic, or weights that overflow on it). Callers that know where
    /// the sample came from say so with [`Error::locate_sample`].
    NotFinite { sample: usize, message: String },
}

pub type Result<T> = std::result::Result<T, Error>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NoAdapter(m) => write!(f, "no GPU adapter: {m}"),
            Error::Gpu(m) => write!(f, "GPU error: {m}"),
            Error::Io { path, source } => write!(f, "{}: {source}", path.display()),
            Error::Weights { path, message } => write!(f, "{}: {message}", path.display()),
            Error::Input(m) => write!(f, "{m}"),
            Error::NotFinite { sample, message } => write!(f, "sample {sample}: {message}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }

    /// Names the source of a [`Error::NotFinite`] sample (`locate(index)`, e.g. a file and
    /// entry); other errors pass unchanged.
    pub fn locate_sample(self, locate: impl Fn(usize) -> String) -> Self {
        match self {
            Error::NotFinite { sample, message } => Error::Input(format!("{}: {message}", locate(sample))),
            other => other,
        }
    }
}

/// What a non-finite network output means for the user.
pub const NOT_FINITE_HELP: &str = "the network's outputs are not finite (f32 overflow inside the network): \
the input's values are far outside what the preprocessing produces, or the weights overflow on it";

/// Writes `bytes` to `path` atomically: a temporary file in the same folder, then a rename,
/// so a crash never leaves a half-written output.
pub fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |w| w.write_all(bytes).map_err(|e| Error::io(path, e)))
}

/// Like [`write_atomic`] for output produced piece by piece: `write` streams into the temporary
/// file, which becomes `path` only if it returns `Ok`.
pub fn write_atomic_with(path: &std::path::Path, write: impl FnOnce(&mut dyn std::io::Write) -> Result<()>) -> Result<()> {
    let tmp = temp_path(path);
    let result = (|| -> Result<()> {
        let file = std::fs::File::create(&tmp).map_err(|e| Error::io(path, e))?;
        let mut buffered = std::io::BufWriter::new(file);
        write(&mut buffered)?;
        let file = buffered.into_inner().map_err(|e| Error::io(path, e.into_error()))?;
        file.sync_all().map_err(|e| Error::io(path, e))?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// The temporary file [`write_atomic`] writes before renaming it to `path`.
fn temp_path(path: &std::path::Path) -> PathBuf {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    dir.join(format!(".{name}.tmp-{}", std::process::id()))
}

/// Fails unless [`write_atomic`] could write `path`: creates and removes its temporary file.
/// Commands call it before hours of GPU work, not after.
pub fn check_writable(path: &std::path::Path) -> Result<()> {
    if path.is_dir() {
        return Err(Error::Input(format!("{}: is a directory, expected an output file path", path.display())));
    }
    let tmp = temp_path(path);
    std::fs::File::create(&tmp).map_err(|e| Error::io(path, e))?;
    let _ = std::fs::remove_file(&tmp);
    Ok(())
}
