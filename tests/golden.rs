//! Parity with the PyTorch reference (`tools/torch_reference.py`, official NAC semantics): the
//! committed goldens in `tests/golden/` against this crate on the same random weights and inputs,
//! regenerated here from the seeds the goldens record (fingerprints checked first).
//!
//! The cases (`tests/common/golden_cases.rs`): ResNet18_32x32, WRN-16-4, and torchvision's
//! `VisionTransformer` twice (a small one, and ViT-B/16's shapes at depth 1), whose layers are
//! pooled as the official code hooks them: `layer_i` summed over all tokens, `layer_norm` at
//! the class token.
//!
//! Tolerances (issues 3 and 16): logits and pooled sums ≤ 1e-4 relative (normwise, per layer);
//! histograms equal count for count except for ambiguous samples (counted, and checked to be
//! the only differences); scores ≤ 1e-5 absolute; NAC-ME ≤ 1e-6.
//!
//! A state is ambiguous when it lies within 1e-7 of an interior edge (a few f32 ulps: sigmoid
//! rounding differs between implementations), or when its bin changes as Σz and Σg move by 1e-5
//! of their layer's largest magnitude (ten times the measured difference between the two f32
//! implementations of the pass). Σg sums gradients of both signs, so a small Σg carries a large
//! relative error, and α in the thousands amplifies it: such a state's bin is not determined by
//! f32 arithmetic at all. A sum that is exactly 0 (a channel that is all zero after its ReLU,
//! or whose gradient is) is exact in both implementations, so its state 0.5 is not ambiguous.

mod common;

use std::collections::HashMap;
use std::path::Path;

use nac::model::synthetic::{random_inputs, SyntheticModel};
use nac::nac::{nac_me, nac_me_pooled, Binning, Counted, LabelledImages, LayerParams, MeSettings, PooledStates, Profile};
use nac::{Engine, Loss, Model, PassRequest, Target};
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

#[path = "common/golden_cases.rs"]
mod golden_cases;

struct Golden {
    meta: Value,
    f32s: HashMap<String, Vec<f32>>,
    f64s: HashMap<String, Vec<f64>>,
    ints: HashMap<String, Vec<i64>>,
}

fn load_golden(name: &str) -> Golden {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(format!("{name}.safetensors"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let (_, metadata) = SafeTensors::read_metadata(&bytes).unwrap();
    let meta: Value = serde_json::from_str(&metadata.metadata().as_ref().unwrap()["golden"]).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut g = Golden { meta, f32s: HashMap::new(), f64s: HashMap::new(), ints: HashMap::new() };
    for (name, t) in st.tensors() {
        let d = t.data();
        match t.dtype() {
            Dtype::F32 => drop(g.f32s.insert(name, d.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect())),
            Dtype::F64 => drop(g.f64s.insert(name, d.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().unwrap())).collect())),
            Dtype::I16 => drop(g.ints.insert(name, d.chunks_exact(2).map(|b| i16::from_le_bytes(b.try_into().unwrap()) as i64).collect())),
            Dtype::I64 => drop(g.ints.insert(name, d.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap())).collect())),
            other => panic!("unexpected dtype {other:?} for {name}"),
        }
    }
    g
}

/// If the bin of the state formed from `(sz, sg)` is ambiguous when the sums are known to
/// `±(dz, dg)` (see the module comment), the range of bins it may fall in.
fn ambiguous(sz: f32, sg: f32, dz: f64, dg: f64, alpha: f64, edges: &[f64]) -> Option<(i64, i64)> {
    if sz == 0.0 || sg == 0.0 {
        return None;
    }
    let interior = &edges[1..edges.len() - 1];
    let state = |v: f64| 1.0 / (1.0 + (-alpha * v).exp());
    let bin = |s: f64| edges.partition_point(|&e| e <= s) as i64 - 1;
    let (sz, sg) = (sz as f64, sg as f64);
    // Sums that straddle 0 take the sign of neither side.
    let corners = [(sz - dz) * (sg - dg), (sz - dz) * (sg + dg), (sz + dz) * (sg - dg), (sz + dz) * (sg + dg)];
    let (lo, hi) = corners.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    let s = state(sz * sg);
    let (b_lo, b_hi) = (bin(state(lo)), bin(state(hi)));
    let near_edge = interior.iter().any(|&e| (s - e).abs() <= 1e-7);
    (near_edge || b_lo != b_hi).then(|| (b_lo.min(bin(s) - 1), b_hi.max(bin(s) + 1)))
}

/// Compares GPU counts `[bins][neurons]` with the golden bins of the profiling samples. An
/// ambiguous sample may land in a neighbouring bin; every other count must agree. Returns
/// (ambiguous samples, samples that moved per neuron).
fn check_histogram(
    what: &str,
    gpu: &[u32],
    golden_bins: &[i64],
    ambiguity: &[Option<(i64, i64)>],
    edges: &[f64],
    neurons: usize,
) -> (usize, Vec<usize>) {
    let bins = edges.len() - 1;
    let samples = golden_bins.len() / neurons;
    let mut certain = vec![0i64; bins * neurons];
    let mut golden = vec![0i64; bins * neurons];
    let mut allowed = vec![false; bins * neurons];
    let mut ambiguous = vec![0i64; neurons];
    for s in 0..samples {
        for n in 0..neurons {
            let b = golden_bins[s * neurons + n];
            if b >= 0 {
                golden[b as usize * neurons + n] += 1;
            }
            if let Some((lo, hi)) = ambiguity[s * neurons + n] {
                ambiguous[n] += 1;
                for nb in lo.max(0)..=hi.min(bins as i64 - 1) {
                    allowed[nb as usize * neurons + n] = true;
                }
            } else if b >= 0 {
                certain[b as usize * neurons + n] += 1;
            }
        }
    }
    let mut moved = vec![0; neurons];
    for n in 0..neurons {
        let mut extra = 0;
        for b in 0..bins {
            let i = b * neurons + n;
            let d = gpu[i] as i64 - certain[i];
            assert!(d >= 0, "{what}: neuron {n} bin {b}: GPU count {} below the {} certain samples", gpu[i], certain[i]);
            assert!(
                d == 0 || allowed[i],
                "{what}: neuron {n} bin {b}: GPU count {} vs golden {}, and no sample near an edge explains it",
                gpu[i],
                golden[i]
            );
            extra += d;
            moved[n] += (gpu[i] as i64 - golden[i]).max(0) as usize;
        }
        assert_eq!(extra, ambiguous[n], "{what}: neuron {n}: the samples near an edge must all be counted");
    }
    (ambiguous.iter().sum::<i64>() as usize, moved)
}

fn run_case(engine: &Engine, case: &golden_cases::GoldenCase) {
    let g = load_golden(case.name);
    let c = &g.meta["case"];
    let model_src = SyntheticModel::new(case.arch.parse().unwrap(), case.classes, case.model_seed).unwrap();
    assert_eq!(model_src.network.fingerprint(), c["model_fingerprint"].as_str().unwrap(), "regenerated weights differ from the golden's");
    let (np, nt, size) = (case.n_profile, case.n_test, case.size);
    let inputs = random_inputs(np + nt, 3, size, size, case.input_seed);
    assert_eq!(nac::fingerprint::of_f32(&inputs), c["inputs_fingerprint"].as_str().unwrap(), "regenerated inputs differ");
    let per = 3 * size * size;
    let (profile_in, test_in) = inputs.split_at(np * per);
    let mut model: Model = engine.upload(model_src.network);
    let network = model.network.clone();
    let layers: Vec<String> = network.layer_names();
    let layer_refs: Vec<&str> = layers.iter().map(|s| s.as_str()).collect();
    let all = [np + nt, 3, size, size];

    // Logits of every sample from a forward pass.
    let forward = PassRequest { layers: &[], loss: Loss::NAC, input_gradient: false, labels: None };
    let logits = engine.pass(&mut model, &inputs, all, &forward).unwrap().logits;
    let want: Vec<f64> = g.f32s["logits"].iter().map(|&v| v as f64).collect();
    common::assert_close(&format!("{} logits", case.name), &logits, &want, 1e-4);

    // Pooled sums, all layers, one pass per set.
    let profile_set = PooledStates::compute(engine, &mut model, profile_in, [np, 3, size, size], &layer_refs, None).unwrap();
    let test_set = PooledStates::compute(engine, &mut model, test_in, [nt, 3, size, size], &layer_refs, None).unwrap();
    for layer in &layers {
        let (sz, sg) = (&g.f32s[&format!("sum_z.{layer}")], &g.f32s[&format!("sum_g.{layer}")]);
        let neurons = sz.len() / (np + nt);
        let mut pairs = profile_set.read_values(engine, layer).unwrap();
        pairs.extend(test_set.read_values(engine, layer).unwrap());
        let (gz, gg): (Vec<f32>, Vec<f32>) = pairs.chunks_exact(2).map(|p| (p[0], p[1])).unzip();
        let wide = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<_>>();
        common::assert_close(&format!("{} {layer} pooled Σz ({neurons} neurons)", case.name), &gz, &wide(sz), 1e-4);
        common::assert_close(&format!("{} {layer} pooled Σg ({neurons} neurons)", case.name), &gg, &wide(sg), 1e-4);
    }
    let predicted = profile_set.predictions().class;
    let logits = &g.f32s["logits"];
    for (i, &p) in predicted.iter().enumerate() {
        let row = &logits[i * case.classes..(i + 1) * case.classes];
        let best = (0..case.classes).fold(0, |b, k| if row[k] > row[b] { k } else { b });
        assert_eq!(p, best, "sample {i}: predicted class");
    }

    // The gradient to the input for three losses, on the first inputs (PyTorch autograd).
    let n_grad = case.n_grad;
    let grad_shape = [n_grad, 3, size, size];
    let labels: Vec<usize> = g.ints["labels"][..n_grad].iter().map(|&l| l as usize).collect();
    for (name, loss, labels) in [
        ("nac", Loss::NAC, None),
        ("label", Loss { target: Target::Label, temperature: 1.0 }, Some(&labels[..])),
        ("prediction_t1000", Loss { target: Target::Prediction, temperature: 1000.0 }, None),
    ] {
        let request = PassRequest { layers: &[], loss, input_gradient: true, labels };
        let got = engine.pass(&mut model, &inputs[..n_grad * per], grad_shape, &request).unwrap();
        let want: Vec<f64> = g.f32s[&format!("input_grad.{name}")].iter().map(|&v| v as f64).collect();
        common::assert_close(&format!("{} ∂L/∂x ({name})", case.name), &got.input_grad, &want, 1e-4);
    }

    // Every setting: histograms and scores from the cached pairs.
    let mut fused_checked = false;
    for setting in g.meta["settings"].as_array().unwrap() {
        let name = setting["name"].as_str().unwrap();
        let params: Vec<LayerParams> = setting["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                LayerParams::new(
                    l["name"].as_str().unwrap(),
                    l["o"].as_f64().unwrap(),
                    l["m"].as_u64().unwrap() as usize,
                    l["alpha"].as_f64().unwrap(),
                )
            })
            .collect();
        let mut profile = Profile::new(engine, &network, &params, "golden").unwrap();
        profile.add_pooled(engine, &profile_set).unwrap();
        let mut allowance = vec![0f64; nt];
        let counts = profile.counts(engine).unwrap();
        for (l, p) in params.iter().enumerate() {
            let edges = &g.f64s[&format!("edges.{name}.{}", p.layer)];
            assert_eq!(&profile.edges(l).edges, edges, "{name} {}: edges", p.layer);
            let bins = &g.ints[&format!("bins.{name}.{}", p.layer)];
            let (sz, sg) = (&g.f32s[&format!("sum_z.{}", p.layer)], &g.f32s[&format!("sum_g.{}", p.layer)]);
            let scale = |v: &[f32]| 1e-5 * v.iter().fold(0f64, |m, x| m.max(x.abs() as f64));
            let (dz, dg) = (scale(sz), scale(sg));
            let ambiguity: Vec<Option<(i64, i64)>> = sz.iter().zip(sg).map(|(&a, &b)| ambiguous(a, b, dz, dg, p.alpha, edges)).collect();
            let neurons = sz.len() / (np + nt);
            let what = format!("{} {name} {}", case.name, p.layer);
            let (near, moved) = check_histogram(&what, &counts[l], &bins[..np * neurons], &ambiguity[..np * neurons], edges, neurons);
            eprintln!("{what}: histogram equal except {} moved of {near} ambiguous profiling states", moved.iter().sum::<usize>());
            // How far each test sample's layer score may legitimately move: an ambiguous state by
            // the largest coverage difference between the bins it may fall in (GPU counts), a
            // neuron with moved profiling samples by the coverage they carry.
            let bins_n = p.m as i64 - 1;
            let coverage =
                |b: i64, n: usize| if (0..bins_n).contains(&b) { (counts[l][b as usize * neurons + n] as f64 / p.o).min(1.0) } else { 0.0 };
            for (t, a) in allowance.iter_mut().enumerate() {
                let mut sum = 0.0;
                for (n, &moved_n) in moved.iter().enumerate() {
                    let i = (np + t) * neurons + n;
                    if let Some((lo, hi)) = ambiguity[i] {
                        let here = coverage(bins[i], n);
                        sum += (lo..=hi).map(|b| (coverage(b, n) - here).abs()).fold(0.0, f64::max);
                    }
                    sum += (moved_n as f64 / p.o).min(1.0);
                }
                *a += sum / (neurons * params.len()) as f64;
            }
        }
        let scores = profile.score_pooled(engine, &test_set).unwrap();
        let want = &g.f64s[&format!("scores.{name}")];
        // Every score within 1e-5 plus what its ambiguous states can move it by (mostly 0).
        let mut worst = 0f64;
        let mut excused = Vec::new();
        for t in 0..nt {
            let d = (scores.score[t] as f64 - want[t]).abs();
            assert!(
                d <= 1e-5 + allowance[t],
                "{} {name}: sample {t} score {} vs {} (allowance {:.2e})",
                case.name,
                scores.score[t],
                want[t],
                allowance[t]
            );
            if d > 1e-5 {
                excused.push(format!("sample {t}: |Δ| {d:.2e} ≤ allowance {:.2e}", allowance[t]));
            } else {
                worst = worst.max(d);
            }
        }
        eprintln!("{} {name}: scores max |Δ| {worst:.2e}; beyond 1e-5 (explained by ambiguous states): {excused:?}", case.name);
        assert!(worst <= 1e-5);

        // The fused kernels (states straight from the pass's z and g) on the official preset
        // must reproduce the cached path exactly: same sums in the same order.
        if case.fused && !fused_checked {
            fused_checked = true;
            let mut fused = Profile::new(engine, &network, &params, "golden").unwrap();
            fused.add(engine, &mut model, profile_in, [np, 3, size, size]).unwrap();
            assert_eq!(fused.counts(engine).unwrap(), counts, "{} {name}: fused histograms differ from the cached path", case.name);
            let fused_scores = fused.score(engine, &mut model, test_in, [nt, 3, size, size]).unwrap();
            assert_eq!(fused_scores, scores, "{} {name}: fused scores differ from the cached path", case.name);
        }
    }

    // NAC-ME on the feature layer: each setting from one labelled pass; the official one also
    // end to end, and the last one through the fused masked histogram.
    let labels: Vec<usize> = g.ints["labels"].iter().map(|&l| l as usize).collect();
    let labelled = PooledStates::compute(engine, &mut model, &inputs, all, &[network.feature_layer()], Some(&labels)).unwrap();
    let me_list = g.meta["nac_me"].as_array().unwrap();
    for (i, me) in me_list.iter().enumerate() {
        let settings = MeSettings {
            layer: Some(me["layer"].as_str().unwrap().into()),
            alpha: me["alpha"].as_f64().unwrap(),
            m: me["m"].as_u64().unwrap() as usize,
            o: me["o"].as_f64().unwrap(),
        };
        let want = me["value"].as_f64().unwrap();
        let got = nac_me_pooled(engine, &network, &labelled, &settings).unwrap();
        eprintln!("{} NAC-ME {settings:?}: {} vs {want} (|Δ| {:.1e})", case.name, got.value, (got.value - want).abs());
        assert!((got.value - want).abs() <= 1e-6, "{} NAC-ME {settings:?}: {} vs {want}", case.name, got.value);
        assert_eq!(got.correct as u64, me["correct"].as_u64().unwrap());
        assert_eq!(got.layer, network.feature_layer());
        if !case.fused {
            continue;
        }
        if i == 0 {
            let direct = nac_me(engine, &mut model, LabelledImages { input: &inputs, shape: all, labels: &labels }, &settings).unwrap();
            assert_eq!(direct, got, "nac_me end to end");
        }
        if i == me_list.len() - 1 {
            let params = [LayerParams::new(&got.layer, settings.o, settings.m, settings.alpha)];
            let mut fused = Profile::with_binning(engine, &network, &params, "", Binning::Uniform, Counted::Correct).unwrap();
            fused.add_labelled(engine, &mut model, &inputs, all, &labels).unwrap();
            let value = fused.coverage(engine).unwrap()[0];
            assert!((value - want).abs() <= 1e-6, "fused masked NAC-ME {value} vs {want}");
        }
    }
}

fn case(name: &str) -> &'static golden_cases::GoldenCase {
    golden_cases::CASES.iter().find(|c| c.name == name).unwrap()
}

#[test]
fn golden_parity_resnet18_32x32() {
    run_case(&common::engine(), case("resnet18_32x32"));
}

#[test]
fn golden_parity_wrn_16_4() {
    run_case(&common::engine(), case("wrn-16-4"));
}

#[test]
fn golden_parity_vit_small() {
    run_case(&common::engine(), case("vit_small"));
}

#[test]
fn golden_parity_vit_b16_d1() {
    run_case(&common::engine(), case("vit_b16_d1"));
}
