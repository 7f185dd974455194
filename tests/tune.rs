//! Conv variants chosen by measurement: the tuning cache's round trip, its fallbacks (stale,
//! unreadable), and that the choice never changes a result.

mod common;

use common::{assert_close, engine_with, temp_dir};
use nac::kernels::tune::Tuning;
use nac::kernels::ConvVariant;
use nac::model::synthetic::{random_inputs, SyntheticModel};
use nac::model::ArchSpec;
use nac::{Engine, EngineOptions};

const SHAPE: [usize; 4] = [3, 3, 12, 12];

fn tuned(dir: &std::path::Path) -> Engine {
    engine_with(EngineOptions { tuning: Tuning::Measure { cache_dir: Some(dir.to_path_buf()) }, ..EngineOptions::default() })
}

/// Logits, every layer's z and g, and the conv variants of a small WideResNet's forward +
/// backward pass (strided convs and shortcuts in both directions).
fn run(engine: &Engine) -> (Vec<f32>, Vec<String>) {
    let synthetic = SyntheticModel::new(ArchSpec::WideResNet { depth: 10, width: 1 }, 10, 3).unwrap();
    let mut model = engine.upload(synthetic.network);
    let layers = ["block1", "block2", "block3"];
    let input = random_inputs(SHAPE[0], SHAPE[1], SHAPE[2], SHAPE[3], 9);
    let out = engine.forward_backward(&mut model, &input, SHAPE, &layers).unwrap();
    let variants = engine.conv_variants(&mut model, SHAPE, &layers).unwrap().into_iter().map(|(_, v)| v).collect();
    let mut values = out.logits;
    for layer in out.layers {
        values.extend(layer.z);
        values.extend(layer.g);
    }
    (values, variants)
}

/// [`run`]'s values with the samples passed one at a time, last first, reassembled in order.
fn run_one_at_a_time(engine: &Engine) -> Vec<f32> {
    let synthetic = SyntheticModel::new(ArchSpec::WideResNet { depth: 10, width: 1 }, 10, 3).unwrap();
    let mut model = engine.upload(synthetic.network);
    let layers = ["block1", "block2", "block3"];
    let input = random_inputs(SHAPE[0], SHAPE[1], SHAPE[2], SHAPE[3], 9);
    let per_sample = input.len() / SHAPE[0];
    let mut passes: Vec<_> = (0..SHAPE[0])
        .rev()
        .map(|s| {
            let one = &input[s * per_sample..(s + 1) * per_sample];
            (s, engine.forward_backward(&mut model, one, [1, SHAPE[1], SHAPE[2], SHAPE[3]], &layers).unwrap())
        })
        .collect();
    passes.sort_by_key(|(s, _)| *s);
    let mut values: Vec<f32> = passes.iter().flat_map(|(_, p)| p.logits.clone()).collect();
    for l in 0..layers.len() {
        values.extend(passes.iter().flat_map(|(_, p)| p.layers[l].z.clone()));
        values.extend(passes.iter().flat_map(|(_, p)| p.layers[l].g.clone()));
    }
    values
}

/// A pass under some choice of variants against the fixed default's: bit for bit unless a
/// split-K variant was chosen (which only reorders the additions), then within 1e-5.
fn assert_same(what: &str, got: &[f32], variants: &[String], fixed: &[f32]) {
    if variants.iter().any(|v| ConvVariant::parse(v).is_some_and(|v| v.splits() > 1)) {
        let want: Vec<f64> = fixed.iter().map(|&v| v as f64).collect();
        assert_close(what, got, &want, 1e-5);
    } else {
        assert!(got == fixed, "{what}: a variant's choice changed the pass ({variants:?})");
    }
}

fn cache_file(dir: &std::path::Path) -> std::path::PathBuf {
    let files: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(files.len(), 1, "one cache file per adapter, found {files:?}");
    files[0].clone()
}

#[test]
fn tuning_cache_round_trip_and_fallbacks() {
    let fixed = engine_with(EngineOptions::default());
    let (fixed_logits, fixed_variants) = run(&fixed);
    let default = ConvVariant::default_for(fixed.gpu.info.device_type).name();
    assert!(fixed_variants.iter().all(|v| *v == default), "--no-tune uses the fixed default: {fixed_variants:?}");

    // Measured: every shape gets a candidate, the file records them, results are unchanged.
    let dir = temp_dir("tune");
    let (logits, variants) = run(&tuned(&dir));
    assert_same("tuned", &logits, &variants, &fixed_logits);
    assert!(variants.iter().all(|v| ConvVariant::parse(v).is_some()));
    let path = cache_file(&dir);
    let text = std::fs::read_to_string(&path).unwrap();
    let mut file: serde_json::Value = serde_json::from_str(&text).unwrap();
    let choices = file["choices"].as_object().unwrap().clone();
    assert!(choices.len() >= 6, "forward and backward shapes are tuned: {choices:?}");

    // Round trip: a cache naming another candidate for every shape is used as it is.
    // Split-K candidates too: their reduction calls are inserted into the plan in both
    // directions.
    let unsplit = ConvVariant::CANDIDATES.iter().map(|v| v.name()).find(|n| *n != default).unwrap();
    for forced in [unsplit, "tiled-k4".to_string(), "direct-8x4x4-k4".to_string()] {
        for (_, v) in file["choices"].as_object_mut().unwrap().iter_mut() {
            *v = forced.clone().into();
        }
        std::fs::write(&path, serde_json::to_string(&file).unwrap()).unwrap();
        let (logits, variants) = run(&tuned(&dir));
        assert!(variants.iter().all(|v| *v == forced), "the cache was not read: {variants:?}");
        assert_same(&forced, &logits, &variants, &fixed_logits);
        // Variants (split K too) depend on the shape, not the batch: the same bits one sample
        // at a time, last first.
        assert!(run_one_at_a_time(&tuned(&dir)) == logits, "{forced}: batches of one, last first, changed the pass");
    }

    // Stale (another adapter, driver or kernel source): ignored and rewritten.
    file["identity"] = "another adapter | kernels 0".into();
    std::fs::write(&path, serde_json::to_string(&file).unwrap()).unwrap();
    let (logits, variants) = run(&tuned(&dir));
    assert_same("retuned", &logits, &variants, &fixed_logits);
    let rewritten: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_ne!(rewritten["identity"], "another adapter | kernels 0");
    assert_eq!(rewritten["choices"].as_object().unwrap().len(), choices.len());

    // Unreadable: ignored and rewritten, never an error.
    std::fs::write(&path, b"{ not json").unwrap();
    let (logits, variants) = run(&tuned(&dir));
    assert_same("unreadable cache", &logits, &variants, &fixed_logits);
    assert!(serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(&path).unwrap()).is_ok());

    // No cache folder: still tuned, nothing written.
    let none = engine_with(EngineOptions { tuning: Tuning::Measure { cache_dir: None }, ..EngineOptions::default() });
    let (logits, variants) = run(&none);
    assert_same("no cache folder", &logits, &variants, &fixed_logits);
    std::fs::remove_dir_all(&dir).unwrap();
}
