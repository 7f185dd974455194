//! Datasets (formats and the spec grammar), transforms and presets, corruptions and synthetic
//! outliers, and the prefetching batch loader.
//!
//! - [`Dataset`] opens a spec (`idx:`, `cifar10:`, `cifar10c:`, `folder:`, `npy:`, `npz:`,
//!   `csv:`, slices, `corrupt:`, `then:`, `outliers:`; grammar in `spec.rs`) and hands out
//!   decoded [`Image`]s.
//! - [`Transform`] turns an image into the model's CHW f32 input (presets and step lists).
//! - [`Corruption`] and [`synthetic_outliers`] derive shifted / outlier sets from a dataset.
//! - [`batches`] and [`load_all`] decode and transform on worker threads into NCHW batches.

mod corrupt;
mod formats;
mod loader;
mod spec;
mod transform;

pub use corrupt::{frost_with, synthetic_outliers, Corruption};
pub use loader::{batches, load_all, Batch, Batches};
pub use spec::{Adversarial, Dataset};
pub use transform::Transform;

/// Decodes a PNG/JPEG file's bytes exactly as `folder:` datasets decode their files (`name`
/// names the file in errors). For fuzzing and tests.
#[doc(hidden)]
pub fn decode_image_bytes(name: &str, bytes: &[u8]) -> Result<Image> {
    formats::decode_bytes(std::path::Path::new(name), bytes)
}

use crate::error::{Error, Result};

/// A decoded image: 8-bit pixels, HWC row-major (`pixels[(y * width + x) * channels + c]`).
#[derive(Clone, Debug, PartialEq)]
pub struct Image {
    pub width: u32,
    pub height: u32,
    /// 1 (gray) or 3 (RGB).
    pub channels: u8,
    pub pixels: Vec<u8>,
}

impl Image {
    /// Checks that the fields agree: 1 or 3 channels, a non-empty size, and exactly
    /// `width × height × channels` pixels.
    pub fn check(&self) -> Result<()> {
        // u32 × u32 × u8 can overflow 64 bits; an overflowing size matches no buffer.
        let expected = (self.width as usize).checked_mul(self.height as usize).and_then(|n| n.checked_mul(self.channels as usize));
        if !matches!(self.channels, 1 | 3) || expected.is_none_or(|e| e == 0 || self.pixels.len() != e) {
            let expected = expected.map_or_else(|| "more than usize::MAX".to_string(), |e| e.to_string());
            return Err(Error::Input(format!(
                "image {}×{} with {} channel(s) has {} pixel bytes; expected 1 or 3 channels, a non-empty size and width × height × channels = {expected} bytes",
                self.width,
                self.height,
                self.channels,
                self.pixels.len()
            )));
        }
        Ok(())
    }
}
