//! The attack stage of adversarial sets (`fgsm:`, `pgd:`, `apgd:` specs, see `data::spec`):
//! each loaded batch, after the preprocessing, is attacked on the GPU against the model being
//! evaluated, then the corruptions written outside the attack run on the examples rounded to
//! 8 bits at the model input's size, and are normalised again. The attack runs on its own
//! upload of the model, so the pass that pools the set can hold the first one meanwhile.

use crate::data::{Adversarial, Batch, Dataset, Image, Transform};
use crate::engine::{Engine, Model, PixelSpace};
use crate::error::{Error, Result};
use crate::model::Network;

pub struct Attacker<'a> {
    engine: &'a Engine,
    model: Model,
    set: &'a Dataset,
    stage: &'a Adversarial,
    pixels: PixelSpace,
}

impl<'a> Attacker<'a> {
    /// The attack stage of `set` against `network` (`None` for a set without one).
    pub fn new(engine: &'a Engine, network: &Network, set: &'a Dataset, transform: &Transform) -> Option<Self> {
        let stage = set.adversarial()?;
        let (mean, std) = transform.pixel_space();
        Some(Attacker { engine, model: engine.upload(network.clone()), set, stage, pixels: PixelSpace { mean, std } })
    }

    /// Replaces `batch` (samples `start..` of `indices`, or of the set without) by its
    /// adversarial examples.
    pub fn attack(&mut self, batch: &mut Batch, indices: Option<&[usize]>) -> Result<()> {
        let [n, channels, h, w] = batch.shape;
        let index = |k: usize| indices.map_or(batch.start + k, |chosen| chosen[batch.start + k]);
        let positions: Vec<usize> = (0..n).map(|k| self.set.base_position(index(k))).collect();
        let labels = batch.labels.as_deref().ok_or_else(|| Error::Input(format!("`{}`: the attack needs labels", self.set.spec())))?;
        let stage = self.stage;
        let examples = self
            .engine
            .attack(&mut self.model, &batch.input, batch.shape, labels, &positions, &stage.attack, &self.pixels)
            .map_err(|e| match e {
                Error::NotFinite { .. } => Error::Input(e.locate_sample(|k| self.set.locate(index(k))).to_string()),
                e => e,
            })?;
        batch.input = examples;
        if stage.after.is_empty() {
            return Ok(());
        }
        let (hw, per) = (h * w, channels * h * w);
        let (mean, std) = (&self.pixels.mean, &self.pixels.std);
        for (k, sample) in batch.input.chunks_mut(per).enumerate() {
            let pixels: Vec<u8> = (0..per)
                .map(|i| {
                    let (y_x, c) = (i / channels, i % channels);
                    let v = sample[c * hw + y_x] * std[c] + mean[c];
                    (v * 255.0).round().clamp(0.0, 255.0) as u8
                })
                .collect();
            let image = Image { width: w as u32, height: h as u32, channels: channels as u8, pixels };
            let corrupted = stage.corrupt(image, positions[k]).map_err(|e| Error::Input(format!("{}: {e}", self.set.locate(index(k)))))?;
            if (corrupted.width, corrupted.height, corrupted.channels) != (w as u32, h as u32, channels as u8) {
                return Err(Error::Input(format!(
                    "{}: a corruption after the attack changed the example's size from {w}×{h}×{channels} to {}×{}×{}",
                    self.set.locate(index(k)),
                    corrupted.width,
                    corrupted.height,
                    corrupted.channels
                )));
            }
            for (i, &v) in corrupted.pixels.iter().enumerate() {
                let (y_x, c) = (i / channels, i % channels);
                sample[c * hw + y_x] = (v as f32 / 255.0 - mean[c]) / std[c];
            }
        }
        Ok(())
    }
}
