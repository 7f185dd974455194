//! Neuron Activation Coverage: binning of neuron states (more to come: profiles, NAC-UE
//! scoring and NAC-ME on the GPU).

pub mod bins;

pub use bins::BinEdges;
