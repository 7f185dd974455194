//! Models: checkpoint reading, architecture detection, synthetic checkpoints.

pub mod arch;
pub mod pth;
pub mod synthetic;
pub mod weights;

pub use arch::{ArchSpec, Network, POOLED_LAYER};
pub use weights::TensorStore;

use std::path::Path;

use crate::error::Result;

/// Loads a checkpoint and builds its network (architecture detected unless given).
pub fn load(path: &Path, spec_override: Option<ArchSpec>) -> Result<Network> {
    let store = TensorStore::open(path)?;
    arch::from_store(&store, spec_override)
}

/// What [`load`] does after reading the file: parses safetensors `bytes` and builds the
/// network; `path` only names the file in errors.
pub fn from_bytes(path: &Path, bytes: &[u8], spec_override: Option<ArchSpec>) -> Result<Network> {
    let store = TensorStore::from_bytes(path, bytes)?;
    arch::from_store(&store, spec_override)
}
