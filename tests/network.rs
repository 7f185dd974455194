//! Whole networks on the GPU against the f64 CPU reference: random weights written to a
//! temporary safetensors file in the public naming, loaded back, all layers requested.

mod common;

use common::{assert_close, engine, engine_with, random_vec, rel_err};
use nac::model::synthetic::SyntheticModel;
use nac::model::weights::StorageDtype;
use nac::model::ArchSpec;
use nac::rng::Rng;
use nac::{reference, EngineOptions};

const LOGITS_TOL: f64 = 1e-4;
const LAYER_TOL: f64 = 1e-3;

/// Saves a random model, loads it through the file path, runs GPU and CPU, compares.
fn check_network(spec: ArchSpec, classes: usize, shape: [usize; 4], seed: u64, options: Option<EngineOptions>) {
    let synthetic = SyntheticModel::new(spec, classes, seed).unwrap();
    let dir = std::env::temp_dir().join(format!("nac-test-{}-{seed}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{spec}.safetensors"));
    synthetic.save(&path, StorageDtype::F32).unwrap();

    let engine = options.map(engine_with).unwrap_or_else(engine);
    let mut model = engine.load_model(&path, None).unwrap();
    assert_eq!(model.network.spec, spec, "architecture detected from tensor names");
    let names = model.network.layer_names();
    let layers: Vec<&str> = names.iter().map(|s| s.as_str()).collect();

    let mut rng = Rng::new(seed ^ 0xabcdef);
    let input = random_vec(&mut rng, shape.iter().product(), 1.0);
    let got = engine.forward_backward(&mut model, &input, shape, &layers).unwrap();
    let want = reference::run(&synthetic.network, &input, shape, &layers).unwrap();

    let e = assert_close(&format!("{spec} logits"), &got.logits, &want.logits, LOGITS_TOL);
    eprintln!("{spec} {shape:?}: logits rel err {e:.2e}");
    assert_eq!(got.layers.len(), want.layers.len());
    for (g, w) in got.layers.iter().zip(&want.layers) {
        eprintln!("  {:8} z rel err {:.2e}, g rel err {:.2e}", g.name, rel_err(&g.z, &w.z), rel_err(&g.g, &w.g));
    }
    for (g, w) in got.layers.iter().zip(&want.layers) {
        assert_eq!(g.name, w.name);
        assert_eq!(g.shape, w.shape, "{spec} {} shape", g.name);
        assert_close(&format!("{spec} {} z", g.name), &g.z, &w.z, LAYER_TOL);
        assert_close(&format!("{spec} {} g", g.name), &g.g, &w.g, LAYER_TOL);
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn resnet18_32x32_matches_reference() {
    check_network(ArchSpec::ResNet18_32x32, 10, [3, 3, 32, 32], 1, None);
}

#[test]
fn torchvision_resnet50_matches_reference_at_small_input() {
    check_network(ArchSpec::TorchResNet { depth: 50 }, 17, [3, 3, 48, 40], 2, None);
}

#[test]
fn wide_resnet_16_4_matches_reference() {
    check_network(ArchSpec::WideResNet { depth: 16, width: 4 }, 10, [3, 3, 32, 32], 3, None);
}
