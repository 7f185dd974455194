//! The post-hoc detectors against `tools/detector_reference.py` (OpenOOD's formulas in float64,
//! scikit-learn's covariances, torch autograd for GradNorm, exact NumPy neighbours), and the
//! pass's features against the GPU's own logits.

mod common;

use nac::detect::{fit_and_select, Context, DetectorSpec, Dims, PassSet, METHODS};
use nac::model::arch::Linear;
use nac::model::synthetic::{random_inputs, SyntheticModel};
use nac::model::{ArchSpec, Network, POOLED_LAYER};
use nac::nac::PooledStates;
use serde_json::Value;

const ARCH: ArchSpec = ArchSpec::WideResNet { depth: 10, width: 1 };

fn floats(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

fn f32s(v: &Value) -> Vec<f32> {
    floats(v).into_iter().map(|x| x as f32).collect()
}

/// Normwise relative tolerance per detector: scores are computed in f64 on the host and returned
/// as f32 (rounding ~6e-8); the GPU's f32 squared distances limit KNN and KDE.
fn tolerance(key: &str) -> f64 {
    match key {
        k if k.starts_with("knn") || k.starts_with("kde") => 1e-5,
        _ => 1e-6,
    }
}

#[test]
fn detectors_match_the_openood_reference() {
    let golden: Value = serde_json::from_str(include_str!("golden/detectors/case.json")).unwrap();
    let (classes, dim) = (golden["classes"].as_u64().unwrap() as usize, golden["dim"].as_u64().unwrap() as usize);
    let mut network: Network = SyntheticModel::new(ARCH, classes, 1).unwrap().network;
    network.fc = Linear { out_features: classes, in_features: dim, weight: f32s(&golden["fc_weight"]), bias: f32s(&golden["fc_bias"]) };
    let labels: Vec<usize> = golden["train_labels"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
    let train = PassSet::from_features(&network, f32s(&golden["train_features"]), Some(labels)).unwrap();
    let val = PassSet::from_features(&network, f32s(&golden["val_features"]), None).unwrap();
    let eval = PassSet::from_features(&network, f32s(&golden["eval_features"]), None).unwrap();
    let engine = common::engine();
    let cx = Context { engine: &engine, network: &network, preprocessing: "none" };
    let dims = Dims { dim, classes, train_samples: train.samples() };
    let scores = golden["scores"].as_object().unwrap();
    let mut covered = Vec::new();
    for (key, want) in scores {
        let spec = DetectorSpec::parse(key).unwrap();
        let candidates = spec.candidates(&dims, key).unwrap();
        assert_eq!(candidates.len(), 1, "{key}: one setting");
        let fitted = fit_and_select(&cx, spec.method, candidates, &train, Some(&val), None).unwrap();
        let got = fitted.detector.score(&cx, &eval).unwrap();
        common::assert_close(key, &got, &floats(want), tolerance(key));
        covered.push(spec.method.key);
    }
    for m in METHODS {
        assert!(covered.contains(&m.key), "no golden for {}", m.key);
    }
}

/// A sweep picks the candidate with the best validation AUROC, with the first maximum winning;
/// a swept setting without a criterion set is an error, not a silent default.
#[test]
fn a_sweep_selects_by_validation_auroc() {
    let golden: Value = serde_json::from_str(include_str!("golden/detectors/case.json")).unwrap();
    let (classes, dim) = (golden["classes"].as_u64().unwrap() as usize, golden["dim"].as_u64().unwrap() as usize);
    let mut network: Network = SyntheticModel::new(ARCH, classes, 1).unwrap().network;
    network.fc = Linear { out_features: classes, in_features: dim, weight: f32s(&golden["fc_weight"]), bias: f32s(&golden["fc_bias"]) };
    let labels: Vec<usize> = golden["train_labels"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
    let train = PassSet::from_features(&network, f32s(&golden["train_features"]), Some(labels)).unwrap();
    let eval = f32s(&golden["eval_features"]);
    let half = eval.len() / 2 / dim * dim;
    let id = PassSet::from_features(&network, eval[..half].to_vec(), None).unwrap();
    let ood = PassSet::from_features(&network, eval[half..].to_vec(), None).unwrap();
    let engine = common::engine();
    let cx = Context { engine: &engine, network: &network, preprocessing: "none" };
    let dims = Dims { dim, classes, train_samples: train.samples() };
    let spec = DetectorSpec::parse("knn:K=1|5|50|200").unwrap();
    let candidates = spec.candidates(&dims, "knn").unwrap();
    assert!(fit_and_select(&cx, spec.method, candidates.clone(), &train, None, None).is_err());
    let fitted = fit_and_select(&cx, spec.method, candidates, &train, None, Some((&id, &ood))).unwrap();
    assert_eq!(fitted.trials.len(), 4);
    let best = fitted.trials.iter().map(|t| t.auroc).fold(f64::NEG_INFINITY, f64::max);
    let first = fitted.trials.iter().find(|t| t.auroc == best).unwrap();
    assert_eq!(fitted.params, first.params);
    // Each trial's AUROC is the metric of that setting's own scores.
    for t in &fitted.trials {
        let k = t.params.get("K");
        let single = DetectorSpec::parse(&format!("knn:K={k}")).unwrap();
        let f = fit_and_select(&cx, single.method, single.candidates(&dims, "knn").unwrap(), &train, None, None).unwrap();
        let a = nac::metrics::auroc(&f.detector.score(&cx, &id).unwrap(), &f.detector.score(&cx, &ood).unwrap());
        assert_eq!(a, t.auroc, "K={k}");
    }
    // Values that cannot fit are refused by name when given by hand, dropped from OpenOOD's lists.
    let err = DetectorSpec::parse("knn:K=10000").unwrap().candidates(&dims, "knn:K=10000").unwrap_err().to_string();
    assert!(err.contains("K=10000"), "{err}");
    let swept = DetectorSpec::parse("knn:sweep").unwrap().candidates(&dims, "knn:sweep").unwrap();
    assert_eq!(swept.len(), 3, "K = 50, 100 and 200 fit 240 profiling samples: {swept:?}");
    for bad in ["nope", "gen:delta=1", "gen:gamma=x", "msp:T=1"] {
        assert!(DetectorSpec::parse(bad).is_err(), "{bad}");
    }
}

/// The features a pass leaves (`Σ_hw z` of `avgpool`) are the classifier's input: the logits
/// formed from them on the host give the GPU's own energy and max softmax.
#[test]
fn pooled_features_are_the_classifier_input() {
    let model = SyntheticModel::new(ARCH, 5, 3).unwrap();
    let engine = common::engine();
    let mut gpu_model = engine.upload(model.network.clone());
    let n = 9;
    let input = random_inputs(n, 3, 16, 16, 4);
    let pooled = PooledStates::compute(&engine, &mut gpu_model, &input, [n, 3, 16, 16], &[POOLED_LAYER], None).unwrap();
    let predicted = pooled.predictions();
    let set = PassSet::from_pooled(&engine, &model.network, pooled, None).unwrap();
    let cx = Context { engine: &engine, network: &model.network, preprocessing: "none" };
    let dims = Dims { dim: set.dim, classes: 5, train_samples: n };
    for (key, want) in [("ebo", &predicted.energy), ("msp", &predicted.max_softmax)] {
        let spec = DetectorSpec::parse(key).unwrap();
        let fitted = fit_and_select(&cx, spec.method, spec.candidates(&dims, key).unwrap(), &set, None, None).unwrap();
        let got = fitted.detector.score(&cx, &set).unwrap();
        common::assert_close(key, &got, &want.iter().map(|&v| v as f64).collect::<Vec<_>>(), 1e-5);
    }
}
