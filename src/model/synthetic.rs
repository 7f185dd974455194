//! Synthetic checkpoints with random weights in the public naming: for tests, `nac selfcheck`
//! and benchmarks. Deterministic for a given seed.

use std::path::Path;

use super::arch::{self, ArchSpec, Network, ParamKind, TensorSource};
use super::weights::{serialize_tensors, StorageDtype};
use crate::error::{write_atomic, Result};
use crate::limits;
use crate::rng::Rng;

/// Draws each parameter from a distribution that keeps activations of deep networks in range
/// (He-scaled conv weights, BatchNorm statistics near identity), and records what it drew.
struct RandomSource {
    rng: Rng,
    drawn: Vec<(String, Vec<usize>, Vec<f32>)>,
}

impl TensorSource for RandomSource {
    fn take(&mut self, name: &str, shape: &[usize], kind: ParamKind) -> Result<Vec<f32>> {
        let n = limits::product(&format!("tensor `{name}` of shape {shape:?}"), shape)?;
        limits::check(&format!("tensor `{name}`: elements of shape {shape:?}"), n, limits::MAX_TENSOR_ELEMENTS, "MAX_TENSOR_ELEMENTS")?;
        let rng = &mut self.rng;
        let data: Vec<f32> = (0..n)
            .map(|_| match kind {
                ParamKind::ConvWeight { fan_in } => rng.normal() * (2.0 / fan_in as f32).sqrt(),
                ParamKind::BnWeight => rng.uniform(0.4, 1.0),
                ParamKind::BnBias => rng.uniform(-0.2, 0.2),
                ParamKind::BnMean => rng.uniform(-0.2, 0.2),
                ParamKind::BnVar => rng.uniform(0.5, 2.0),
                ParamKind::FcWeight { fan_in } => rng.normal() * (1.0 / fan_in as f32).sqrt(),
                ParamKind::FcBias => rng.uniform(-0.1, 0.1),
                ParamKind::LnWeight => rng.uniform(0.5, 1.5),
                ParamKind::LnBias => rng.uniform(-0.2, 0.2),
                ParamKind::Embedding => rng.normal() * 0.5,
            })
            .collect();
        self.drawn.push((name.to_string(), shape.to_vec(), data.clone()));
        Ok(data)
    }
}

/// A random network and its tensors in checkpoint naming (in the order they were drawn).
pub struct SyntheticModel {
    pub network: Network,
    pub tensors: Vec<(String, Vec<usize>, Vec<f32>)>,
}

impl SyntheticModel {
    pub fn new(spec: ArchSpec, num_classes: usize, seed: u64) -> Result<Self> {
        let mut src = RandomSource { rng: Rng::new(seed), drawn: Vec::new() };
        let network = arch::build(spec, num_classes, &mut src)?;
        Ok(SyntheticModel { network, tensors: src.drawn })
    }

    /// Serialises the checkpoint; the network keeps the f32 values, so a lossy `dtype` makes
    /// the file differ from `self.network` by the rounding. A Vision Transformer's heads go in
    /// the metadata (the tensors do not record them), as does a DMWideResNet's activation, so
    /// the file loads without `--arch`.
    pub fn to_safetensors(&self, dtype: StorageDtype) -> Result<Vec<u8>> {
        let metadata = match self.network.spec {
            ArchSpec::VisionTransformer(v) => Some([(arch::VIT_HEADS_METADATA.to_string(), v.heads.to_string())].into()),
            ArchSpec::DmWideResNet { activation, .. } => {
                Some([(arch::ACTIVATION_METADATA.to_string(), activation.name().to_string())].into())
            }
            _ => None,
        };
        serialize_tensors(&self.tensors, dtype, metadata)
    }

    pub fn save(&self, path: &Path, dtype: StorageDtype) -> Result<()> {
        write_atomic(path, &self.to_safetensors(dtype)?)
    }
}

/// `n` standard-normal inputs of shape `[n, channels, height, width]` (NCHW), deterministic in
/// `seed`: the test and golden inputs.
pub fn random_inputs(n: usize, channels: usize, height: usize, width: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..n * channels * height * width).map(|_| rng.normal()).collect()
}
