//! The post-hoc detectors against `tools/detector_reference.py` (OpenOOD's formulas in float64,
//! scikit-learn's covariances, torch autograd for GradNorm, exact NumPy neighbours), and the
//! pass's features against the GPU's own logits.

mod common;

use nac::detect::{fit_and_select, Context, DetectorSpec, Dims, InputLoss, PassSet, METHODS};
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
        // The exact Weibull MLE here against libMR's (MATLAB wblfit's root finder, 1e-6 tolerance).
        "openmax" => 1e-5,
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
    // OpenMax's Weibull fits: ours is the exact MLE; libMR and SciPy stop at their tolerances.
    for (c, fit) in golden["openmax_weibull"].as_array().unwrap().iter().enumerate() {
        let (scale, shape) = nac::detect::weibull_fit(&floats(&fit["y"])).unwrap();
        for source in ["libmr", "scipy"] {
            let want = floats(&fit[source]);
            let error = ((scale - want[0]) / want[0]).abs().max(((shape - want[1]) / want[1]).abs());
            println!("OpenMax class {c}: Weibull (scale, shape) within {error:.1e} of {source}");
            assert!(error < 2e-5, "class {c}: ({scale}, {shape}) against {source} {want:?}");
        }
    }
    // The "+ip" methods' loss gradients at the features (autograd), before any perturbation.
    let mut covered = Vec::new();
    for (key, want) in golden["feature_gradients"].as_object().unwrap() {
        let spec = DetectorSpec::parse(key).unwrap();
        let fitted = fit_and_select(&cx, spec.method, spec.candidates(&dims, key).unwrap(), &train, Some(&val), None).unwrap();
        let Some(InputLoss::Features(loss)) = fitted.detector.input_loss() else { panic!("{key}: a feature loss") };
        let got: Vec<f32> = loss.gradient(&eval.features).unwrap().into_iter().map(|v| v as f32).collect();
        let error = common::assert_close(&format!("{key} ∂loss/∂f"), &got, &floats(want), 1e-6);
        println!("{key}: feature gradient within {error:.1e}");
        covered.push(spec.method.key);
    }
    for m in METHODS.iter().filter(|m| m.perturbs_input() && m.key != "odin") {
        assert!(covered.contains(&m.key), "no feature gradient golden for {}", m.key);
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
    // OpenMax's tail must fit every class's correctly classified samples (60 per class here).
    let spec = DetectorSpec::parse("openmax:tail=70").unwrap();
    let err = fit_and_select(&cx, spec.method, spec.candidates(&dims, "openmax").unwrap(), &train, None, None).err().unwrap().to_string();
    assert!(err.contains("fewer than tail=70") && err.contains("class "), "{err}");
    for bad in ["nope", "gen:delta=1", "gen:gamma=x", "msp:T=1"] {
        assert!(DetectorSpec::parse(bad).is_err(), "{bad}");
    }
    for (bad, named) in [("openmax:alpha=9", "alpha=9"), ("odin:eps=2", "eps=2"), ("kde+ip:bandwidth=0", "bandwidth=0")] {
        let err = DetectorSpec::parse(bad).unwrap().candidates(&dims, bad).unwrap_err().to_string();
        assert!(err.contains(named), "{bad}: {err}");
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

/// ODIN's perturbation on the GPU against the f64 reference: the sign of ∂CE(softmax(f(x)/T),
/// argmax f(x))/∂x, the step ε/std per channel, and the features of x' (normwise 1e-5; a sign
/// may differ only where the reference gradient is ~0, which moves x' by less than it matters).
#[test]
fn odin_perturbation_matches_the_reference() {
    use nac::detect::perturb::perturbed_sets;
    use nac::detect::InputLoss;
    use nac::{reference, Loss, Target};
    let synthetic = SyntheticModel::new(ARCH, 4, 11).unwrap();
    let engine = common::engine();
    let mut model = engine.upload(synthetic.network.clone());
    let shape = [5, 3, 12, 12];
    let input = random_inputs(shape[0], 3, 12, 12, 8);
    let std = nac::data::Transform::parse("gray2rgb,normalize:0.5/0.4/0.3:0.5/0.25/0.2").unwrap().pixel_space().1;
    assert_eq!(std, vec![0.5, 0.25, 0.2]);
    let (t, epsilons) = (10.0, [0.0014, 0.05]);
    let loss = Loss { target: Target::Prediction, temperature: t as f32 };
    let batches = [Ok((2, input[2 * 432..].to_vec(), [3, 3, 12, 12])), Ok((0, input[..2 * 432].to_vec(), [2, 3, 12, 12]))];
    let sets = perturbed_sets(&engine, &mut model, &InputLoss::Logits(loss), &std, &epsilons, 5, None, batches).unwrap();
    let x: Vec<f64> = input.iter().map(|&v| v as f64).collect();
    let grad = reference::run_with(&synthetic.network, &x, shape, &[], loss, None, true).unwrap().input_grad.unwrap();
    let clean = reference::run(&synthetic.network, &input, shape, &[POOLED_LAYER]).unwrap().layers.remove(0).z;
    let cx = Context { engine: &engine, network: &synthetic.network, preprocessing: "none" };
    let spec = DetectorSpec::parse(&format!("odin:T={t}")).unwrap();
    let dims = Dims { dim: sets[0].dim, classes: 4, train_samples: 5 };
    let odin = fit_and_select(&cx, spec.method, spec.candidates(&dims, "odin").unwrap(), &sets[0], None, None).unwrap().detector;
    for (eps, set) in epsilons.iter().zip(&sets) {
        let moved: Vec<f32> = input
            .iter()
            .zip(&grad)
            .enumerate()
            .map(|(i, (&v, &g))| v - *eps as f32 * (if g >= 0.0 { 1.0 } else { -1.0 } / std[i / 144 % 3]))
            .collect();
        let want = reference::run(&synthetic.network, &moved, shape, &[POOLED_LAYER]).unwrap();
        let features = &want.layers[0].z;
        let error = common::assert_close(&format!("ODIN ε={eps} features"), &set.features, features, 1e-5);
        println!("ODIN ε={eps}: perturbed features within {error:.1e}");
        let moved_norm = features.iter().zip(&clean).map(|(a, b)| (a - b).powi(2)).sum::<f64>().sqrt();
        assert!(moved_norm > 1e-3 * features.iter().map(|a| a * a).sum::<f64>().sqrt(), "ε={eps} barely moved the features");
        let msp: Vec<f64> = want
            .logits
            .chunks(4)
            .map(|l| {
                let m = l.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v / t));
                1.0 / l.iter().map(|v| (v / t - m).exp()).sum::<f64>()
            })
            .collect();
        common::assert_close(&format!("ODIN ε={eps} scores"), &odin.score(&cx, set).unwrap(), &msp, 1e-6);
    }
    // The perturbation raises the max softmax on average (what ODIN relies on).
    let clean_msp =
        odin.score(&cx, &PassSet::from_features(&synthetic.network, clean.iter().map(|&v| v as f32).collect(), None).unwrap()).unwrap();
    let moved = odin.score(&cx, &sets[1]).unwrap();
    assert!(moved.iter().sum::<f32>() > clean_msp.iter().sum::<f32>(), "{moved:?} vs {clean_msp:?}");
    // Missing or repeated samples are refused.
    let twice = [Ok((0, input[..432].to_vec(), [1, 3, 12, 12])), Ok((0, input[..432].to_vec(), [1, 3, 12, 12]))];
    assert!(perturbed_sets(&engine, &mut model, &InputLoss::Logits(loss), &std, &epsilons, 2, None, twice).is_err());
}
