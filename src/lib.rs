//! Neuron Activation Coverage on any GPU.
//!
//! The crate loads ResNet / WideResNet checkpoints from safetensors, runs the forward pass and
//! the data-gradient backward pass of the NAC loss (cross-entropy to the uniform distribution)
//! in hand-written WGSL kernels through wgpu, and exposes the activations `z` and gradients
//! `g = ∂L/∂z` at named block boundaries. [`reference`] is an independent f64 CPU
//! implementation used to check every GPU number.

pub mod bench;
pub mod data;
pub mod detect;
pub mod engine;
pub mod error;
pub mod eval;
pub mod fingerprint;
pub mod gpu;
pub mod kernels;
pub mod limits;
pub mod metrics;
pub mod model;
pub mod nac;
pub mod npy;
pub mod reference;
pub mod rng;

pub use engine::{Attack, AttackKind, Engine, EngineOptions, LayerOutput, Loss, Model, PassOutput, PassRequest, PixelSpace, Target};
pub use error::{Error, Result};
