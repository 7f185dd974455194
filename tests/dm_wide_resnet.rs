//! Parity with RobustBench's own `DMWideResNet` class: the state dicts and float64 outputs that
//! `tools/dm_wide_resnet_golden.py` wrote from it (`tests/golden/dm_wrn/`: ReLU and Swish, depth
//! 10, width 1, random weights and BatchNorm statistics) against the engine and the f64
//! reference on the loaded file. The class normalises inside the model; here the host does it,
//! as a preprocessing preset would, and the input gradient is carried back through it (÷ std).
//!
//! Tolerances (normwise relative): the engine (f32) ≤ 1e-5 on the logits and pooled features,
//! ≤ 1e-4 on the gradients; the f64 reference ≤ 1e-12 on everything (measured: engine ≤ 8e-7, reference ≤ 2e-15 on
//! lavapipe; the gradient bound leaves room for a ReLU mask that another GPU rounds the other way).

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use common::{assert_close, engine, rel_err};
use nac::model::ArchSpec;
use nac::{reference, Loss, PassRequest, Target};
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

const ENGINE_TOL: f64 = 1e-5;
const ENGINE_GRAD_TOL: f64 = 1e-4;
const REFERENCE_TOL: f64 = 1e-12;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/dm_wrn")
}

/// The golden's metadata and its tensors as f64.
fn golden(case: &str) -> (Value, HashMap<String, Vec<f64>>) {
    let bytes = std::fs::read(dir().join(format!("{case}.golden.safetensors"))).unwrap();
    let (_, metadata) = SafeTensors::read_metadata(&bytes).unwrap();
    let meta: Value = serde_json::from_str(&metadata.metadata().as_ref().unwrap()["golden"]).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let tensors = st
        .tensors()
        .into_iter()
        .map(|(name, t)| {
            let d = t.data();
            let v: Vec<f64> = match t.dtype() {
                Dtype::F32 => d.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap()) as f64).collect(),
                Dtype::F64 => d.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().unwrap())).collect(),
                Dtype::I64 => d.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap()) as f64).collect(),
                other => panic!("{case}: unexpected dtype {other:?} for {name}"),
            };
            (name, v)
        })
        .collect();
    (meta, tensors)
}

fn check_case(case: &str, arch: &str) {
    let (meta, t) = golden(case);
    let engine = engine();
    // The state dict carries no activation: it is given as `--arch` would give it.
    let mut model = engine.load_model(&dir().join(format!("{case}.model.safetensors")), Some(arch.parse().unwrap())).unwrap();
    let want_spec: ArchSpec = meta["arch"].as_str().unwrap().parse().unwrap();
    assert_eq!(model.network.spec, want_spec, "{case}");
    // The class keeps mean and std as float32 buffers (cast to f64 with the model).
    let stats = |key: &str| -> Vec<f64> { meta[key].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32 as f64).collect() };
    let (mean, std) = (stats("mean"), stats("std"));
    let pixels = &t["inputs"];
    let shape = [pixels.len() / (3 * 32 * 32), 3, 32, 32];
    let plane = 32 * 32;
    let normalised: Vec<f64> = pixels.iter().enumerate().map(|(i, &v)| (v - mean[i / plane % 3]) / std[i / plane % 3]).collect();
    let input: Vec<f32> = normalised.iter().map(|&v| v as f32).collect();
    let labels: Vec<usize> = t["labels"].iter().map(|&l| l as usize).collect();
    // ∂L/∂pixels = ∂L/∂normalised ÷ std.
    let to_pixels = |g: &[f64]| -> Vec<f64> { g.iter().enumerate().map(|(i, &v)| v / std[i / plane % 3]).collect() };

    for (loss, key) in [(Loss::NAC, "grad_nac"), (Loss { target: Target::Label, temperature: 1.0 }, "grad_ce")] {
        let labels = (loss.target == Target::Label).then_some(&labels[..]);
        let request = PassRequest { layers: &["avgpool"], loss, input_gradient: true, labels };
        let got = engine.pass(&mut model, &input, shape, &request).unwrap();
        let grad = to_pixels(&got.input_grad.iter().map(|&v| v as f64).collect::<Vec<_>>());
        let e = rel_err(&grad.iter().map(|&v| v as f32).collect::<Vec<_>>(), &t[key]);
        assert!(e <= ENGINE_GRAD_TOL, "{case} {key}: engine relative error {e:.2e}");
        let reference = reference::run_with(&model.network, &normalised, shape, &["avgpool"], loss, labels, true).unwrap();
        let ref_grad = to_pixels(reference.input_grad.as_ref().unwrap());
        let r = max_rel(&ref_grad, &t[key]);
        assert!(r <= REFERENCE_TOL, "{case} {key}: reference relative error {r:.2e}");
        eprintln!("{case} {key}: engine {e:.2e}, reference {r:.2e}");
        if loss == Loss::NAC {
            let e = assert_close(&format!("{case} logits"), &got.logits, &t["logits"], ENGINE_TOL);
            let f = assert_close(&format!("{case} features"), &got.layers[0].z, &t["features"], ENGINE_TOL);
            let g = assert_close(&format!("{case} features g"), &got.layers[0].g, &t["features_grad_nac"], ENGINE_GRAD_TOL);
            let r = [(&reference.logits, "logits"), (&reference.layers[0].z, "features"), (&reference.layers[0].g, "features_grad_nac")]
                .map(|(v, k)| max_rel(v, &t[k]));
            assert!(r.iter().all(|&r| r <= REFERENCE_TOL), "{case}: reference logits/features/g relative errors {r:?}");
            eprintln!("{case}: engine logits {e:.2e}, features {f:.2e}, features g {g:.2e}; reference {r:?}");
        }
    }
}

/// Normwise relative error of f64 values.
fn max_rel(got: &[f64], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    let diff = got.iter().zip(want).map(|(a, b)| (a - b).powi(2)).sum::<f64>().sqrt();
    diff / want.iter().map(|b| b * b).sum::<f64>().sqrt().max(f64::MIN_POSITIVE)
}

#[test]
fn swish_matches_robustbench() {
    check_case("dm_wrn_10_1_swish", "dm-wrn-swish");
}

#[test]
fn relu_matches_robustbench() {
    check_case("dm_wrn_10_1_relu", "dm-wrn-10-1-relu");
}
