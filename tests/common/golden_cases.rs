//! The golden cases: random-weight networks and random inputs, regenerated from these seeds by
//! `tools/golden_inputs.rs` (for the PyTorch reference) and by `tests/golden.rs`.

pub struct GoldenCase {
    pub name: &'static str,
    pub arch: &'static str,
    pub classes: usize,
    pub model_seed: u64,
    pub input_seed: u64,
    /// The first `n_profile` inputs build the profile; the next `n_test` are scored.
    pub n_profile: usize,
    pub n_test: usize,
    pub size: usize,
}

pub const CASES: &[GoldenCase] = &[
    GoldenCase {
        name: "resnet18_32x32",
        arch: "resnet18_32x32",
        classes: 10,
        model_seed: 11,
        input_seed: 15,
        n_profile: 20,
        n_test: 10,
        size: 32,
    },
    GoldenCase { name: "wrn-16-4", arch: "wrn-16-4", classes: 10, model_seed: 21, input_seed: 23, n_profile: 20, n_test: 10, size: 32 },
];
