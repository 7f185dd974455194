//! Datasets (formats and the spec grammar), transforms and presets, corruptions and synthetic
//! outliers, and the prefetching batch loader.
//!
//! - [`Dataset`] opens a spec (`idx:`, `cifar10:`, `folder:`, `npy:`, `csv:`, slices,
//!   `corrupt:`, `outliers:`; grammar in `spec.rs`) and hands out decoded [`Image`]s.
//! - [`Transform`] turns an image into the model's CHW f32 input (presets and step lists).
//! - [`Corruption`] and [`synthetic_outliers`] derive shifted / outlier sets from a dataset.
//! - [`batches`] and [`load_all`] decode and transform on worker threads into NCHW batches.

mod corrupt;
mod formats;
mod loader;
mod spec;
mod transform;

pub use corrupt::{synthetic_outliers, Corruption};
pub use loader::{batches, load_all, Batch, Batches};
pub use spec::Dataset;
pub use transform::Transform;

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
        let expected = self.width as usize * self.height as usize * self.channels as usize;
        if !matches!(self.channels, 1 | 3) || expected == 0 || self.pixels.len() != expected {
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
