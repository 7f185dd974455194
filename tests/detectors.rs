//! The post-hoc detectors against `tools/detector_reference.py` (OpenOOD's formulas in float64,
//! scikit-learn's covariances, torch autograd for GradNorm, exact NumPy neighbours), and the
//! pass's features against the GPU's own logits.

mod common;

use nac::detect::{fit_and_select, Context, DetectorSpec, Dims, InputLoss, PassSet, METHODS};
use nac::model::arch::Linear;
use nac::model::synthetic::{random_inputs, SyntheticModel};
use nac::model::{ArchSpec, Network, POOLED_LAYER};
use nac::nac::{LayerStats, PooledStates};
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

/// The reference script's case: the golden, and a network whose head is its fc (its classes
/// and feature dimension).
fn golden_case() -> (Value, Network, usize, usize) {
    let golden: Value = serde_json::from_str(include_str!("golden/detectors/case.json")).unwrap();
    let (classes, dim) = (golden["classes"].as_u64().unwrap() as usize, golden["dim"].as_u64().unwrap() as usize);
    let mut network: Network = SyntheticModel::new(ARCH, classes, 1).unwrap().network;
    network.fc = Linear { out_features: classes, in_features: dim, weight: f32s(&golden["fc_weight"]), bias: f32s(&golden["fc_bias"]) };
    (golden, network, classes, dim)
}

#[test]
fn detectors_match_the_openood_reference() {
    let (golden, network, classes, dim) = golden_case();
    let labels: Vec<usize> = golden["train_labels"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
    let mut train = PassSet::from_features(&network, f32s(&golden["train_features"]), Some(labels)).unwrap();
    let mut val = PassSet::from_features(&network, f32s(&golden["val_features"]), None).unwrap();
    let mut eval = PassSet::from_features(&network, f32s(&golden["eval_features"]), None).unwrap();
    // Gram and MDSEns read the statistics of two layers' maps (formed by the reference script).
    for (set, key) in [(&mut train, "train"), (&mut val, "val"), (&mut eval, "eval")] {
        for (layer, channels) in golden["layer_channels"].as_object().unwrap() {
            let values = f32s(&golden["layer_stats"][layer][key]);
            let (channels, powers) = (channels.as_u64().unwrap() as usize, golden["gram_powers"].as_u64().unwrap() as usize);
            set.layer_stats.push(LayerStats { layer: layer.clone(), channels, powers, values });
        }
    }
    let engine = common::engine();
    let cx = Context { engine: &engine, network: &network, preprocessing: "none" };
    let dims = Dims { dim, classes, train_samples: train.samples(), layers: 4 };
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
        let Some(InputLoss::Layer { loss, layer }) = fitted.detector.input_loss() else { panic!("{key}: a layer loss") };
        let rows: Vec<f32> = match layer {
            None => eval.features.clone(),
            Some(layer) => {
                let stats = eval.layer_stats.iter().find(|s| s.layer == layer).unwrap();
                (0..stats.samples()).flat_map(|i| stats.mean(i).to_vec()).collect()
            }
        };
        let got: Vec<f32> = loss.gradient(&rows).unwrap().into_iter().map(|v| v as f32).collect();
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
    let (golden, network, classes, dim) = golden_case();
    let labels: Vec<usize> = golden["train_labels"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
    let train = PassSet::from_features(&network, f32s(&golden["train_features"]), Some(labels)).unwrap();
    let eval = f32s(&golden["eval_features"]);
    let half = eval.len() / 2 / dim * dim;
    let id = PassSet::from_features(&network, eval[..half].to_vec(), None).unwrap();
    let ood = PassSet::from_features(&network, eval[half..].to_vec(), None).unwrap();
    let engine = common::engine();
    let cx = Context { engine: &engine, network: &network, preprocessing: "none" };
    let dims = Dims { dim, classes, train_samples: train.samples(), layers: 4 };
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
    let dims = Dims { dim: set.dim, classes: 5, train_samples: n, layers: 4 };
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
    let dims = Dims { dim: sets[0].dim, classes: 4, train_samples: 5, layers: 4 };
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

/// `[samples][(1 + powers)·C]` layer statistics in f64 from NCHW maps: channel means, then
/// per power q the Gram row sums sign(r)|r|^(1/q) of F^q F^qᵀ (the C × C product formed in
/// full, as OpenOOD's `G_p` forms it).
fn reference_stats(z: &[f64], [n, c, h, w]: [usize; 4], powers: usize) -> Vec<f64> {
    let hw = h * w;
    let mut out = Vec::new();
    for b in 0..n {
        let map = &z[b * c * hw..(b + 1) * c * hw];
        out.extend((0..c).map(|ch| map[ch * hw..(ch + 1) * hw].iter().sum::<f64>() / hw as f64));
        for q in 1..=powers {
            let fq: Vec<f64> = map.iter().map(|v| v.powi(q as i32)).collect();
            for i in 0..c {
                let r: f64 = (0..c).map(|j| (0..hw).map(|k| fq[i * hw + k] * fq[j * hw + k]).sum::<f64>()).sum();
                out.push(r.signum() * r.abs().powf(1.0 / q as f64));
            }
        }
    }
    out
}

/// The layer-statistics kernel against the f64 reference on every layer of a WRN-10-5 (80 to
/// 320 channels: one and two blocks of 256; 400 positions: two tiles of 256) and a ResNet with
/// max-pool, five powers (normwise per layer and power, 2e-5: f32 sums of products of up to
/// ten activations); and the statistics do not depend on how the set is batched.
#[test]
fn layer_statistics_match_the_reference_and_ignore_batching() {
    let engine = common::engine();
    let powers = 5;
    for (spec, shape) in
        [(ArchSpec::WideResNet { depth: 10, width: 5 }, [3, 3, 20, 20]), (ArchSpec::TorchResNet { depth: 18 }, [2, 3, 29, 35])]
    {
        let synthetic = SyntheticModel::new(spec, 4, 21).unwrap();
        let mut model = engine.upload(synthetic.network.clone());
        let names = synthetic.network.layer_names();
        let layers: Vec<&str> = names.iter().map(String::as_str).collect();
        let input = random_inputs(shape[0], 3, shape[2], shape[3], 5);
        let whole = PooledStates::compute_streamed_with_stats(
            &engine,
            &mut model,
            shape[0],
            &layers,
            None,
            Some(powers),
            [Ok((0, &input[..], shape))],
        )
        .unwrap()
        .read_stats(&engine)
        .unwrap();
        let reference = nac::reference::run(&synthetic.network, &input, shape, &layers).unwrap();
        for (stats, want) in whole.iter().zip(&reference.layers) {
            let s = want.shape;
            let expected = reference_stats(&want.z, [shape[0], s[1], s[2], s[3]], powers);
            let row = (1 + powers) * stats.channels;
            for part in 0..=powers {
                let pick = |v: &[f32]| -> Vec<f32> {
                    v.chunks(row).flat_map(|r| r[part * stats.channels..(part + 1) * stats.channels].to_vec()).collect()
                };
                let want: Vec<f64> =
                    expected.chunks(row).flat_map(|r| r[part * stats.channels..(part + 1) * stats.channels].to_vec()).collect();
                let what = format!("{spec} {} {}", stats.layer, if part == 0 { "means".to_string() } else { format!("Gram power {part}") });
                let error = common::assert_close(&what, &pick(&stats.values), &want, 2e-5);
                println!("{what} ({} channels, {}×{}): within {error:.1e}", stats.channels, s[2], s[3]);
            }
        }
        // Batches of one, last first: the same values bit for bit.
        let per = 3 * shape[2] * shape[3];
        let singles: Vec<_> =
            (0..shape[0]).rev().map(|i| Ok((i, input[i * per..(i + 1) * per].to_vec(), [1, 3, shape[2], shape[3]]))).collect();
        let split = PooledStates::compute_streamed_with_stats(&engine, &mut model, shape[0], &layers, None, Some(powers), singles)
            .unwrap()
            .read_stats(&engine)
            .unwrap();
        for (a, b) in whole.iter().zip(&split) {
            assert!(
                a.values.iter().zip(&b.values).all(|(x, y)| x.to_bits() == y.to_bits()),
                "{spec} {}: batching changed the statistics",
                a.layer
            );
        }
    }
}

/// MDSEns end to end on the GPU against the f64 reference: fitted on block1's channel means from
/// the shared pass, the input moved by `ε·sign⁺(∂ ½ d_ĉ/∂x)/std` with the gradient seeded at
/// block1 (the reference's: central differences of `⟨∂ ½ d_ĉ/∂mean, mean(x)⟩`, per input
/// value), and the means of x' read by its forward pass (normwise 1e-5; a sign may differ only
/// where the reference gradient is below 1e-4 of its largest); batches of one, in reverse order,
/// give the same perturbed sets bit for bit.
#[test]
fn mdsens_perturbation_matches_the_reference() {
    use nac::detect::perturb::perturbed_sets;
    use nac::{reference, Loss};
    let synthetic = SyntheticModel::new(ARCH, 4, 13).unwrap();
    let network = &synthetic.network;
    let engine = common::engine();
    let mut model = engine.upload(network.clone());
    let (n_train, n, h, w) = (40, 2, 8, 8);
    let train_input = random_inputs(n_train, 3, h, w, 3);
    let labels: Vec<usize> = (0..n_train).map(|i| i % 4).collect();
    let layers = ["block1", POOLED_LAYER];
    let batches = [Ok((0, &train_input[..], [n_train, 3, h, w]))];
    let pooled = PooledStates::compute_streamed_with_stats(&engine, &mut model, n_train, &layers, Some(&labels), Some(0), batches).unwrap();
    let train = PassSet::from_pooled(&engine, network, pooled, Some(labels)).unwrap();
    let cx = Context { engine: &engine, network, preprocessing: "none" };
    let dims = Dims { dim: train.dim, classes: 4, train_samples: n_train, layers: 4 };
    let eps = 0.02;
    let spec = DetectorSpec::parse(&format!("mdsens:eps={eps}")).unwrap();
    let mds = fit_and_select(&cx, spec.method, spec.candidates(&dims, "mdsens").unwrap(), &train, None, None).unwrap().detector;
    let Some(loss) = mds.input_loss() else { panic!("MDSEns perturbs its input") };
    let InputLoss::Layer { layer: Some("block1"), loss: feature_loss } = loss else { panic!("MDSEns's loss is of block1's means") };
    let std = [0.5f32, 0.25, 0.2];
    let input = random_inputs(n, 3, h, w, 9);
    let sets = perturbed_sets(&engine, &mut model, &loss, &std, &[eps], n, None, [Ok((0, input.clone(), [n, 3, h, w]))]).unwrap();
    // Batches of one, last first: the same perturbed features and means, bit for bit.
    let per = 3 * h * w;
    let singles: Vec<_> = (0..n).rev().map(|i| Ok((i, input[i * per..(i + 1) * per].to_vec(), [1, 3, h, w]))).collect();
    let split = perturbed_sets(&engine, &mut model, &loss, &std, &[eps], n, None, singles).unwrap();
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&split[0].features), bits(&sets[0].features), "batching changed the perturbed features");
    assert_eq!(bits(&split[0].layer_stats[0].values), bits(&sets[0].layer_stats[0].values), "batching changed the perturbed means");

    // The f64 reference: block1's channel means and the features, as a PassSet MDSEns scores.
    let shape = [n, 3, h, w];
    let run = |x: &[f64]| reference::run_with(network, x, shape, &layers, Loss::NAC, None, false).unwrap();
    let means = |x: &[f64]| -> Vec<f64> {
        let out = run(x);
        let z = &out.layers[0].z;
        let hw = out.layers[0].shape[2] * out.layers[0].shape[3];
        z.chunks(hw).map(|c| c.iter().sum::<f64>() / hw as f64).collect()
    };
    let as_set = |x: &[f64]| {
        let out = run(x);
        let mut set = PassSet::from_features(network, out.layers[1].z.iter().map(|&v| v as f32).collect(), None).unwrap();
        let values: Vec<f32> = means(x).iter().map(|&v| v as f32).collect();
        set.layer_stats = vec![LayerStats { layer: "block1".into(), channels: values.len() / n, powers: 0, values }];
        set
    };
    let x: Vec<f64> = input.iter().map(|&v| v as f64).collect();
    let m0: Vec<f32> = means(&x).iter().map(|&v| v as f32).collect();
    let u = feature_loss.gradient(&m0).unwrap();
    let directional = |x: &[f64]| -> f64 { means(x).iter().zip(&u).map(|(m, u)| m * u).sum() };
    let step = 1e-4;
    let g_ref: Vec<f64> = (0..x.len())
        .map(|i| {
            let mut moved = x.clone();
            moved[i] = x[i] + step;
            let up = directional(&moved);
            moved[i] = x[i] - step;
            (up - directional(&moved)) / (2.0 * step)
        })
        .collect();
    let largest = g_ref.iter().fold(0f64, |m, g| m.max(g.abs()));
    assert!(largest > 0.0, "the reference gradient vanishes");
    let plane = h * w;
    let sign = |g: f64| if g >= 0.0 { 1.0 } else { -1.0 };
    let moved: Vec<f64> = x.iter().zip(&g_ref).enumerate().map(|(i, (&v, &g))| v - eps * sign(g) / std[i / plane % 3] as f64).collect();
    // The engine's gradient seeded with the same loss at block1 has the reference's signs.
    let seed = |z: &[f32], [_, c, lh, lw]: [usize; 4]| {
        let g: Vec<f32> =
            u.chunks(c).flat_map(|row| row.iter().flat_map(|&g| std::iter::repeat_n(g as f32 / (lh * lw) as f32, lh * lw))).collect();
        assert_eq!(g.len(), z.len());
        Ok(g)
    };
    let g_gpu = engine.input_gradient_from_layer(&mut model, &input, shape, "block1", &seed).unwrap();
    let error = common::assert_close("MDSEns ∂L/∂x", &g_gpu, &g_ref, 1e-4);
    println!("MDSEns: input gradient within {error:.1e} of central differences");
    let flipped = g_gpu.iter().zip(&g_ref).filter(|(a, b)| sign(**a as f64) != sign(**b) && b.abs() > 1e-4 * largest).count();
    assert_eq!(flipped, 0, "signs differ where the reference gradient is not ~0");
    let want = as_set(&moved);
    let got_means = &sets[0].layer_stats[0].values;
    let error = common::assert_close("MDSEns perturbed block1 means", got_means, &means(&moved), 1e-5);
    println!("MDSEns: perturbed block1 means within {error:.1e}");
    let clean = mds.score(&cx, &as_set(&x)).unwrap();
    let got = mds.score(&cx, &sets[0]).unwrap();
    common::assert_close(
        "MDSEns perturbed scores",
        &got,
        &mds.score(&cx, &want).unwrap().iter().map(|&v| v as f64).collect::<Vec<_>>(),
        1e-5,
    );
    // The step lowers the distance to the closest class (what MDSEns relies on).
    assert!(got.iter().sum::<f32>() > clean.iter().sum::<f32>(), "{got:?} vs {clean:?}");
}

/// Gram's and MDSEns's fitting problems are errors naming what is missing: no layer maps in
/// the pass, statistics that are not one row per sample, too few profiling samples per class to hold a tenth out, held-out samples that
/// never leave the bounds (a normaliser of 0, which OpenOOD divides by), a layer index past the
/// network's.
#[test]
fn gram_and_mdsens_fitting_problems_are_named() {
    let (golden, network, classes, dim) = golden_case();
    let engine = common::engine();
    let cx = Context { engine: &engine, network: &network, preprocessing: "none" };
    let features = f32s(&golden["train_features"]);
    let set = |n: usize, stats: Option<f32>| {
        let labels: Vec<usize> = (0..n).map(|i| i % classes).collect();
        let mut s = PassSet::from_features(&network, features[..n * dim].to_vec(), Some(labels)).unwrap();
        if let Some(v) = stats {
            let mut rng = nac::rng::Rng::new(3);
            let values = (0..n * 6 * 3).map(|_| if v == 0.0 { 1.0 } else { rng.normal() * v }).collect();
            s.layer_stats = vec![LayerStats { layer: "block1".into(), channels: 3, powers: 5, values }];
        }
        s
    };
    let dims = Dims { dim, classes, train_samples: 80, layers: 4 };
    let fit = |key: &str, train: &PassSet| {
        let spec = DetectorSpec::parse(key).unwrap();
        fit_and_select(&cx, spec.method, spec.candidates(&dims, key).unwrap(), train, None, None).err().map(|e| e.to_string())
    };
    let mut short = set(80, Some(1.0));
    short.layer_stats[0].values.truncate(79 * 18);
    for (key, train, want) in [
        ("gram", set(80, None), "reads the maps of layers before `avgpool`"),
        ("gram", set(36, Some(1.0)), "no class has 10 profiling samples"),
        ("gram", set(80, Some(0.0)), "within the bounds at layer `block1`"),
        ("mdsens", set(80, None), "statistics of layer `block1`"),
        ("gram", short, "not whole rows for the set's 80 samples"),
    ] {
        let err = fit(key, &train).unwrap_or_else(|| panic!("{key}: expected an error containing {want}"));
        assert!(err.contains(want), "{key}: {err}");
    }
    assert_eq!(fit("gram", &set(80, Some(1.0))), None, "a healthy Gram fit");
    let err = DetectorSpec::parse("mdsens:layer=4").unwrap().candidates(&dims, "mdsens:layer=4").unwrap_err().to_string();
    assert!(err.contains("layer=4"), "{err}");
}
