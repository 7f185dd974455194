//! L∞ attacks on the GPU: FGSM equals a step along the sign of the engine's own input gradient,
//! FGSM and PGD never leave the ε-ball or the [0, 1] box at any ε or step count, PGD on the
//! shipped model lowers accuracy at least as much as FGSM, and bad settings are refused.

mod common;

use std::path::Path;

use common::{engine, engine_with, random_vec};
use nac::data::{load_all, Dataset, Transform};
use nac::model::arch::ArchSpec;
use nac::model::synthetic::SyntheticModel;
use nac::rng::Rng;
use nac::{Attack, AttackKind, Engine, EngineOptions, Loss, Model, PassRequest, PixelSpace, Target};

const FMNIST: f32 = 0.286;
const FMNIST_STD: f32 = 0.353;

fn pixels(channels: usize) -> PixelSpace {
    PixelSpace { mean: vec![FMNIST; channels], std: vec![FMNIST_STD; channels] }
}

fn to_pixel(x: f32) -> f32 {
    x * FMNIST_STD + FMNIST
}

/// Random images in [0, 1], normalised.
fn images(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| (rng.uniform(0.0, 1.0) - FMNIST) / FMNIST_STD).collect()
}

fn accuracy(engine: &Engine, model: &mut Model, input: &[f32], shape: [usize; 4], labels: &[usize]) -> f64 {
    let logits = engine.predict(model, input, shape).unwrap();
    let classes = logits.len() / shape[0];
    let correct = labels
        .iter()
        .enumerate()
        .filter(|&(i, &l)| {
            let row = &logits[i * classes..][..classes];
            (0..classes).fold(0, |b, c| if row[c] > row[b] { c } else { b }) == l
        })
        .count();
    correct as f64 / labels.len() as f64
}

#[test]
fn fgsm_is_a_signed_step_of_the_input_gradient() {
    let engine = engine();
    let mut model = engine.upload(SyntheticModel::new(ArchSpec::WideResNet { depth: 10, width: 1 }, 5, 3).unwrap().network);
    let shape = [3, 3, 11, 9];
    let mut rng = Rng::new(4);
    let x = images(&mut rng, shape.iter().product());
    let labels = [1, 4, 0];
    let eps = 8.0 / 255.0;
    let adv = engine.attack(&mut model, &x, shape, &labels, &Attack { kind: AttackKind::Fgsm, epsilon: eps }, &pixels(3)).unwrap();
    let request =
        PassRequest { layers: &[], loss: Loss { target: Target::Label, temperature: 1.0 }, input_gradient: true, labels: Some(&labels) };
    let grad = engine.pass(&mut model, &x, shape, &request).unwrap().input_grad;
    let mut zero = 0;
    for i in 0..x.len() {
        let step = if grad[i] > 0.0 {
            eps
        } else if grad[i] < 0.0 {
            -eps
        } else {
            zero += 1;
            0.0
        };
        let want = (to_pixel(x[i]) + step).clamp(0.0, 1.0);
        assert!((to_pixel(adv[i]) - want).abs() <= 1e-6, "element {i}: pixel {} vs {want} (gradient {})", to_pixel(adv[i]), grad[i]);
    }
    assert!(zero < x.len() / 100, "{zero} zero gradients of {}", x.len());
}

/// Each example depends on its own sample only: chunked one sample per submission, or attacked
/// alone, it is bit for bit what the whole batch gives (the random start is drawn per element of
/// the input, so a sample keeps its draw at its index).
#[test]
fn attacks_do_not_depend_on_chunking() {
    let network = SyntheticModel::new(ArchSpec::WideResNet { depth: 10, width: 1 }, 5, 7).unwrap().network;
    let shape = [5, 3, 9, 7];
    let mut rng = Rng::new(8);
    let x = images(&mut rng, shape.iter().product());
    let labels = [0, 4, 2, 2, 1];
    let per = 3 * 9 * 7;
    for kind in [AttackKind::Fgsm, AttackKind::Pgd { steps: 3, step_size: 2.0 / 255.0, random_start: Some(5) }] {
        let attack = Attack { kind, epsilon: 8.0 / 255.0 };
        let whole = {
            let engine = engine();
            let mut model = engine.upload(network.clone());
            engine.attack(&mut model, &x, shape, &labels, &attack, &pixels(3)).unwrap()
        };
        let chunked = engine_with(EngineOptions { max_batch: 1, ..EngineOptions::default() });
        let mut model = chunked.upload(network.clone());
        assert_eq!(chunked.attack(&mut model, &x, shape, &labels, &attack, &pixels(3)).unwrap(), whole, "{kind:?}: chunks of one");
        if attack.kind == AttackKind::Fgsm {
            let alone = chunked.attack(&mut model, &x[2 * per..3 * per], [1, 3, 9, 7], &labels[2..3], &attack, &pixels(3)).unwrap();
            assert_eq!(alone, whole[2 * per..3 * per], "FGSM of sample 2 alone");
        }
    }
}

#[test]
fn attacks_stay_in_the_ball_and_the_box() {
    let engine = engine();
    let mut model = engine.upload(SyntheticModel::new(ArchSpec::ResNet18_32x32, 4, 5).unwrap().network);
    let shape = [2, 3, 8, 10];
    let mut rng = Rng::new(6);
    // Pixels at 0 and 1 exactly, where the box binds.
    let mut x = images(&mut rng, shape.iter().product());
    for i in (0..x.len()).step_by(7) {
        x[i] = if i % 2 == 0 { -FMNIST / FMNIST_STD } else { (1.0 - FMNIST) / FMNIST_STD };
    }
    let labels = [3, 0];
    for eps in [0.0f32, 2.0 / 255.0, 8.0 / 255.0, 0.3] {
        for kind in [
            AttackKind::Fgsm,
            AttackKind::Pgd { steps: 1, step_size: eps.max(1e-3), random_start: None },
            AttackKind::Pgd { steps: 4, step_size: eps / 2.0 + 1e-3, random_start: Some(9) },
            AttackKind::Pgd { steps: 10, step_size: 0.5, random_start: Some(1) },
        ] {
            let adv = engine.attack(&mut model, &x, shape, &labels, &Attack { kind, epsilon: eps }, &pixels(3)).unwrap();
            for i in 0..x.len() {
                let (p, p0) = (to_pixel(adv[i]), to_pixel(x[i]));
                assert!((p - p0).abs() <= eps + 1e-6, "ε {eps} {kind:?} element {i}: moved {} from {p0}", p - p0);
                assert!((-1e-6..=1.0 + 1e-6).contains(&p), "ε {eps} {kind:?} element {i}: pixel {p} outside the box");
            }
            if eps == 0.0 {
                let moved = x.iter().zip(&adv).map(|(a, b)| (to_pixel(*a) - to_pixel(*b)).abs()).fold(0f32, f32::max);
                assert!(moved <= 1e-6, "ε 0 moved a pixel by {moved}");
            }
        }
    }
}

#[test]
fn pgd_lowers_the_shipped_models_accuracy() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let spec = format!("idx:{}[0:24]", root.join("demo/fmnist-test-images-idx3-ubyte.gz").display());
    let batch = load_all(&Dataset::open(&spec).unwrap(), &Transform::preset("fmnist").unwrap(), None, 2).unwrap();
    let labels = batch.labels.clone().unwrap();
    let engine = engine();
    for name in ["fmnist_wrn-16-2", "fmnist_vit-p4-d4-w64"] {
        let mut model = engine.load_model(&root.join(format!("weights/{name}.safetensors")), None).unwrap();
        let eps = 8.0 / 255.0;
        let clean = accuracy(&engine, &mut model, &batch.input, batch.shape, &labels);
        let fgsm = engine
            .attack(&mut model, &batch.input, batch.shape, &labels, &Attack { kind: AttackKind::Fgsm, epsilon: eps }, &pixels(3))
            .unwrap();
        let pgd_kind = AttackKind::Pgd { steps: 5, step_size: eps / 4.0, random_start: Some(0) };
        let pgd =
            engine.attack(&mut model, &batch.input, batch.shape, &labels, &Attack { kind: pgd_kind, epsilon: eps }, &pixels(3)).unwrap();
        let (fgsm, pgd) =
            (accuracy(&engine, &mut model, &fgsm, batch.shape, &labels), accuracy(&engine, &mut model, &pgd, batch.shape, &labels));
        eprintln!("shipped {name} on 24 test images, ε = 8/255: clean {clean:.3}, FGSM {fgsm:.3}, PGD-5 {pgd:.3}");
        assert!(clean >= 0.8, "{name}: clean accuracy {clean}");
        assert!(fgsm < clean && pgd <= fgsm, "{name}: clean {clean}, FGSM {fgsm}, PGD {pgd}");
    }
}

#[test]
fn bad_attacks_are_refused() {
    let engine = engine();
    let mut model = engine.upload(SyntheticModel::new(ArchSpec::WideResNet { depth: 10, width: 1 }, 3, 1).unwrap().network);
    let shape = [1, 3, 6, 6];
    let x = vec![0.0; 108];
    let fgsm = |epsilon| Attack { kind: AttackKind::Fgsm, epsilon };
    let pgd = |steps, step_size| Attack { kind: AttackKind::Pgd { steps, step_size, random_start: None }, epsilon: 0.1 };
    let mut rng = Rng::new(2);
    let outside: Vec<f32> = random_vec(&mut rng, 108, 1.0).iter().map(|v| v * 10.0).collect();
    type Case<'a> = (Attack, PixelSpace, &'a [f32], &'a [usize], &'a str);
    let cases: Vec<Case> = vec![
        (fgsm(f32::NAN), pixels(3), &x, &[0], "attack ε NaN"),
        (fgsm(2.0), pixels(3), &x, &[0], "attack ε 2"),
        (pgd(0, 0.1), pixels(3), &x, &[0], "at least one step"),
        (pgd(3, -1.0), pixels(3), &x, &[0], "step size -1"),
        (pgd(100_000, 0.1), pixels(3), &x, &[0], "MAX_ATTACK_STEPS"),
        (fgsm(0.1), pixels(1), &x, &[0], "1 means and 1 standard deviations for 3 input channels"),
        (fgsm(0.1), PixelSpace { mean: vec![0.0; 3], std: vec![1.0, 0.0, 1.0] }, &x, &[0], "channel 1"),
        (fgsm(0.1), pixels(3), &outside, &[0], "outside the [0, 1] box"),
        (fgsm(0.1), pixels(3), &x, &[3], "label 3 of sample 0"),
    ];
    for (attack, space, input, labels, expected) in cases {
        let Err(e) = engine.attack(&mut model, input, shape, labels, &attack, &space) else { panic!("accepted: expected `{expected}`") };
        assert!(e.to_string().contains(expected), "{e}");
    }
}
