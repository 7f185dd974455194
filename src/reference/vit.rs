//! The f64 reference of torchvision's Vision Transformer (placeholder until written).

use super::{LayerTensors, ReferenceOutput};
use crate::engine::Loss;
use crate::error::{Error, Result};
use crate::model::arch::Network;

pub fn run_with(
    _net: &Network,
    _input: &[f64],
    _shape: [usize; 4],
    _layers: &[&str],
    _loss: Loss,
    _labels: Option<&[usize]>,
    _input_gradient: bool,
) -> Result<ReferenceOutput> {
    let _ = std::marker::PhantomData::<LayerTensors>;
    Err(Error::Input("reference: Vision Transformer not written yet".into()))
}

pub fn logits_from_layer(_net: &Network, _layer: &str, _z: &[f64], _shape: [usize; 4]) -> Result<Vec<f64>> {
    Err(Error::Input("reference: Vision Transformer not written yet".into()))
}
