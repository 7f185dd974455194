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
    /// Samples whose gradient to the input is compared (the golden stores 3 × 4·3·H·W bytes each).
    pub n_grad: usize,
    /// Also check that the fused kernels and NAC-ME end to end reproduce the cached path (four
    /// more passes; left out where a pass is expensive, since the cheap cases test the same code).
    pub fused: bool,
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
        n_grad: 4,
        fused: true,
    },
    GoldenCase {
        name: "wrn-16-4",
        arch: "wrn-16-4",
        classes: 10,
        model_seed: 21,
        input_seed: 23,
        n_profile: 20,
        n_test: 10,
        size: 32,
        n_grad: 4,
        fused: true,
    },
    GoldenCase {
        name: "vit_small",
        arch: "vit-i32-p4-d4-w64-h4-m128",
        classes: 10,
        model_seed: 31,
        input_seed: 33,
        n_profile: 20,
        n_test: 10,
        size: 32,
        n_grad: 4,
        fused: true,
    },
    // ViT-B/16's shapes (197 tokens, width 768, 12 heads of 64, MLP 3072) at depth 1: a pass
    // costs ~9 GFLOP per sample (the test takes ~40 s on lavapipe), so few samples and one
    // input gradient (600 KB per loss; the golden is 1.99 MB).
    GoldenCase {
        name: "vit_b16_d1",
        arch: "vit-i224-p16-d1-w768-h12-m3072",
        classes: 10,
        model_seed: 41,
        input_seed: 43,
        n_profile: 4,
        n_test: 2,
        size: 224,
        n_grad: 1,
        fused: false,
    },
];
