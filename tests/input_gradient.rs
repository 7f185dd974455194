//! The gradient to the input on the GPU (through the stem: conv, BN, ReLU and the max-pool of
//! torchvision ResNets) for each loss, against the f64 reference; one pass serves the input
//! gradient and requested layers together; bad requests are refused.

mod common;

use common::{assert_close, engine, random_vec};
use nac::model::arch::{ArchSpec, VitSpec};
use nac::model::synthetic::SyntheticModel;
use nac::rng::Rng;
use nac::{reference, Loss, PassRequest, Target};

/// Normwise relative error allowed end to end, as for the layer gradients.
const GRAD_TOL: f64 = 1e-3;

const LOSSES: [Loss; 4] = [
    Loss::NAC,
    Loss { target: Target::Label, temperature: 1.0 },
    Loss { target: Target::Prediction, temperature: 1000.0 },
    Loss { target: Target::Uniform, temperature: 3.0 },
];

#[test]
fn input_gradient_matches_the_reference() {
    let engine = engine();
    let cases = [
        (ArchSpec::TorchResNet { depth: 18 }, [3, 3, 37, 29]),
        (ArchSpec::ResNet18_32x32, [2, 3, 13, 11]),
        (ArchSpec::WideResNet { depth: 10, width: 2 }, [3, 3, 9, 12]),
        (ArchSpec::DmWideResNet { depth: 10, width: 1, activation: nac::model::arch::Activation::Swish }, [2, 3, 32, 32]),
        (ArchSpec::VisionTransformer(VitSpec { image: 12, patch: 4, depth: 2, width: 16, heads: 2, mlp: 20 }), [2, 3, 12, 12]),
    ];
    for (case, (spec, shape)) in cases.into_iter().enumerate() {
        let synthetic = SyntheticModel::new(spec, 7, 20 + case as u64).unwrap();
        let mut model = engine.upload(synthetic.network.clone());
        let mut rng = Rng::new(30 + case as u64);
        let input = random_vec(&mut rng, shape.iter().product(), 1.0);
        let x: Vec<f64> = input.iter().map(|&v| v as f64).collect();
        let labels: Vec<usize> = (0..shape[0]).map(|i| (2 * i + 5) % 7).collect();
        let names = model.network.layer_names();
        // The deepest stage and the pooled feature, read in the same pass as the input gradient.
        let layers = [names[names.len() - 2].as_str(), names[names.len() - 1].as_str()];
        for loss in LOSSES {
            let labels = (loss.target == Target::Label).then_some(&labels[..]);
            let request = PassRequest { layers: &layers, loss, input_gradient: true, labels };
            let got = engine.pass(&mut model, &input, shape, &request).unwrap();
            let want = reference::run_with(&synthetic.network, &x, shape, &layers, loss, labels, true).unwrap();
            let what = format!("{spec} {shape:?} {loss:?}");
            assert_eq!(got.input_grad.len(), input.len(), "{what}: the input gradient has the input's shape");
            assert_close(&format!("{what} ∂L/∂x"), &got.input_grad, want.input_grad.as_ref().unwrap(), GRAD_TOL);
            for (g, w) in got.layers.iter().zip(&want.layers) {
                assert_close(&format!("{what} {} g", g.name), &g.g, &w.g, GRAD_TOL);
            }
            // The same request without layers gives the same input gradient.
            let alone = engine.pass(&mut model, &input, shape, &PassRequest { layers: &[], ..request }).unwrap();
            assert_eq!(alone.input_grad, got.input_grad, "{what}: the layers changed the input gradient");
        }
    }
}

#[test]
fn bad_requests_are_refused() {
    let engine = engine();
    let mut model = engine.upload(SyntheticModel::new(ArchSpec::WideResNet { depth: 10, width: 1 }, 4, 1).unwrap().network);
    let shape = [2, 3, 8, 8];
    let input = vec![0.5; 2 * 3 * 8 * 8];
    let label = Loss { target: Target::Label, temperature: 1.0 };
    let cases: [(PassRequest, &str); 5] = [
        (PassRequest { layers: &[], loss: label, input_gradient: true, labels: None }, "needs one label per sample"),
        (PassRequest { layers: &[], loss: label, input_gradient: true, labels: Some(&[1]) }, "1 labels for 2 samples"),
        (PassRequest { layers: &[], loss: label, input_gradient: true, labels: Some(&[1, 4]) }, "label 4 of sample 1"),
        (PassRequest { layers: &[], loss: Loss::NAC, input_gradient: true, labels: Some(&[1, 2]) }, "does not use them"),
        (PassRequest { layers: &[], loss: Loss { temperature: 0.0, ..Loss::NAC }, input_gradient: true, labels: None }, "temperature 0"),
    ];
    for (request, expected) in cases {
        let Err(e) = engine.pass(&mut model, &input, shape, &request) else {
            panic!("accepted a request that should fail with `{expected}`")
        };
        let e = e.to_string();
        assert!(e.contains(expected), "{e}");
    }
}

/// The backward pass seeded with a gradient of the host's (the input perturbations): for
/// `L = Σ a · z(x)` with random `a` over the maps of the feature layer and of the first stage,
/// ⟨∂L/∂x, v⟩ against central differences of the f64 reference along random directions v
/// (relative 1e-3), on a WRN, a ResNet with max-pool and a ViT (whose feature is the class
/// token after `encoder.ln`, and which is seeded there only).
#[test]
fn a_seeded_gradient_matches_finite_differences() {
    let engine = engine();
    let cases = [
        (ArchSpec::WideResNet { depth: 10, width: 1 }, [3, 3, 10, 9]),
        (ArchSpec::TorchResNet { depth: 18 }, [2, 3, 33, 30]),
        (ArchSpec::VisionTransformer(VitSpec { image: 12, patch: 4, depth: 2, width: 16, heads: 2, mlp: 20 }), [2, 3, 12, 12]),
    ];
    for (case, (spec, shape)) in cases.into_iter().enumerate() {
        let synthetic = SyntheticModel::new(spec, 5, 40 + case as u64).unwrap();
        let mut model = engine.upload(synthetic.network.clone());
        let mut rng = Rng::new(50 + case as u64);
        let input = random_vec(&mut rng, shape.iter().product(), 1.0);
        let names = synthetic.network.layer_names();
        let layers = [synthetic.network.feature_layer(), names[0].as_str()];
        for layer in layers.into_iter().filter(|l| synthetic.network.seeds_backward_at(l)) {
            let x: Vec<f64> = input.iter().map(|&v| v as f64).collect();
            let maps =
                |x: &[f64]| reference::run_with(&synthetic.network, x, shape, &[layer], Loss::NAC, None, false).unwrap().layers.remove(0).z;
            let a = random_vec(&mut rng, maps(&x).len(), 1.0);
            let seen = std::cell::Cell::new(0);
            let seed = |z: &[f32], s: [usize; 4]| {
                assert_eq!(z.len(), s.iter().product::<usize>(), "{spec} {layer}: the seed's shape");
                seen.set(seen.get() + z.len());
                Ok(a[..z.len()].to_vec())
            };
            let grad = engine.input_gradient_from_layer(&mut model, &input, shape, layer, &seed).unwrap();
            assert_eq!((grad.len(), seen.get()), (input.len(), a.len()), "{spec} {layer}");
            let objective = |x: &[f64]| -> f64 { maps(x).iter().zip(&a).map(|(z, &a)| z * a as f64).sum() };
            for _ in 0..3 {
                let v = random_vec(&mut rng, input.len(), 1.0);
                let h = 1e-5;
                let along = |s: f64| x.iter().zip(&v).map(|(x, &v)| x + s * v as f64).collect::<Vec<_>>();
                let fd = (objective(&along(h)) - objective(&along(-h))) / (2.0 * h);
                let got: f64 = grad.iter().zip(&v).map(|(g, v)| *g as f64 * *v as f64).sum();
                assert!((got - fd).abs() <= 1e-3 * fd.abs().max(1e-3), "{spec} {layer}: ⟨∂L/∂x, v⟩ = {got}, finite differences {fd}");
            }
            // A seed of the wrong size is refused, not written.
            let short = |f: &[f32], _: [usize; 4]| Ok(vec![0.0; f.len() - 1]);
            assert!(engine.input_gradient_from_layer(&mut model, &input, shape, layer, &short).is_err(), "{spec} {layer}");
        }
    }
}

/// Seeding at any layer with twice the gradient the full pass computes there continues that
/// pass: the input gradient is exactly twice the one-submission pass's (the same kernels in the
/// same order; backpropagation is linear in the seed and doubling is exact in f32; a seed
/// overwritten by the layers above would give once),
/// at every layer of a ResNet with max-pool, a WRN and a Swish DMWideResNet (the WRN with two
/// samples per chunk, so the seed is asked for chunk by chunk); a ViT is seeded at its feature
/// layer only, and other layers are refused by name. The forward pass alone
/// (`Engine::forward_to_layer`) reads the same activations and features.
#[test]
fn a_gradient_seeded_at_any_layer_continues_the_pass() {
    let cases = [
        (ArchSpec::TorchResNet { depth: 18 }, [3, 3, 33, 30], None),
        (ArchSpec::WideResNet { depth: 10, width: 1 }, [5, 3, 10, 9], Some(2)),
        (ArchSpec::DmWideResNet { depth: 10, width: 1, activation: nac::model::arch::Activation::Swish }, [2, 3, 32, 32], None),
        (ArchSpec::VisionTransformer(VitSpec { image: 12, patch: 4, depth: 2, width: 16, heads: 2, mlp: 20 }), [2, 3, 12, 12], None),
    ];
    for (case, (spec, shape, max_batch)) in cases.into_iter().enumerate() {
        let engine = common::engine_with(nac::EngineOptions { max_batch: max_batch.unwrap_or(64), ..Default::default() });
        let synthetic = SyntheticModel::new(spec, 4, 60 + case as u64).unwrap();
        let network = &synthetic.network;
        let mut rng = Rng::new(70 + case as u64);
        let input = random_vec(&mut rng, shape.iter().product(), 1.0);
        let vit = matches!(spec, ArchSpec::VisionTransformer(_));
        for layer in network.layer_names() {
            let mut model = engine.upload(network.clone());
            let layers = [layer.as_str()];
            let request = PassRequest { layers: &layers, loss: Loss::NAC, input_gradient: true, labels: None };
            let whole = engine.pass(&mut model, &input, shape, &request).unwrap();
            let (z, g) = (&whole.layers[0].z, &whole.layers[0].g);
            let done = std::cell::Cell::new(0);
            let seed = |chunk: &[f32], _: [usize; 4]| {
                let at = done.get();
                assert_eq!(chunk, &z[at..at + chunk.len()], "{spec} {layer}: the seed sees the pass's activation, NCHW");
                done.set(at + chunk.len());
                Ok(g[at..at + chunk.len()].iter().map(|v| 2.0 * v).collect())
            };
            // The forward pass alone reads the same activation and features, bit for bit.
            let (maps, features) = engine.forward_to_layer(&mut model, &input, shape, &layer).unwrap();
            let feature = network.feature_layer();
            let want_features = engine.pass(&mut model, &input, shape, &PassRequest::nac(&[feature])).unwrap().layers.remove(0).z;
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!((bits(&maps), bits(&features)), (bits(z), bits(&want_features)), "{spec} {layer}: forward_to_layer");
            let result = engine.input_gradient_from_layer(&mut model, &input, shape, &layer, &seed);
            if vit && layer != network.feature_layer() {
                let e = result.unwrap_err().to_string();
                assert!(e.contains(&layer) && e.contains("feature layer"), "{e}");
                continue;
            }
            let seeded = result.unwrap();
            assert_eq!(done.get(), z.len(), "{spec} {layer}: every sample seeded");
            let differ = seeded.iter().zip(&whole.input_grad).filter(|(a, b)| a.to_bits() != (2.0 * *b).to_bits()).count();
            assert_eq!(differ, 0, "{spec} {layer}: {differ} of {} values differ", seeded.len());
        }
    }
}
