//! L∞ attacks on the GPU: FGSM equals a step along the sign of the engine's own input gradient,
//! FGSM and PGD never leave the ε-ball or the [0, 1] box at any ε or step count, PGD on the
//! shipped model lowers accuracy at least as much as FGSM, APGD-CE equals AutoAttack's algorithm
//! written out on the host over the engine's gradients, and bad settings are refused.

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

fn ids(n: usize) -> Vec<usize> {
    (0..n).collect()
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
    let adv = engine.attack(&mut model, &x, shape, &labels, &ids(3), &Attack { kind: AttackKind::Fgsm, epsilon: eps }, &pixels(3)).unwrap();
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
/// alone, it is bit for bit what the whole batch gives (a random start is drawn from the
/// sample's id, so a sample keeps its draw wherever it comes).
#[test]
fn attacks_do_not_depend_on_chunking() {
    let network = SyntheticModel::new(ArchSpec::WideResNet { depth: 10, width: 1 }, 5, 7).unwrap().network;
    let shape = [5, 3, 9, 7];
    let mut rng = Rng::new(8);
    let x = images(&mut rng, shape.iter().product());
    let labels = [0, 4, 2, 2, 1];
    let per = 3 * 9 * 7;
    for kind in [
        AttackKind::Fgsm,
        AttackKind::Pgd { steps: 3, step_size: 2.0 / 255.0, random_start: Some(5), restarts: 1 },
        AttackKind::Pgd { steps: 2, step_size: 2.0 / 255.0, random_start: Some(5), restarts: 3 },
        AttackKind::Apgd { iterations: 6, rho: 0.75, restarts: 2, seed: 3 },
    ] {
        let attack = Attack { kind, epsilon: 8.0 / 255.0 };
        let whole = {
            let engine = engine();
            let mut model = engine.upload(network.clone());
            engine.attack(&mut model, &x, shape, &labels, &ids(5), &attack, &pixels(3)).unwrap()
        };
        let chunked = engine_with(EngineOptions { max_batch: 1, ..EngineOptions::default() });
        let mut model = chunked.upload(network.clone());
        assert_eq!(chunked.attack(&mut model, &x, shape, &labels, &ids(5), &attack, &pixels(3)).unwrap(), whole, "{kind:?}: chunks of one");
        let alone = chunked.attack(&mut model, &x[2 * per..3 * per], [1, 3, 9, 7], &labels[2..3], &[2], &attack, &pixels(3)).unwrap();
        assert_eq!(alone, whole[2 * per..3 * per], "{kind:?} of sample 2 alone");
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
            AttackKind::Pgd { steps: 1, step_size: eps.max(1e-3), random_start: None, restarts: 1 },
            AttackKind::Pgd { steps: 4, step_size: eps / 2.0 + 1e-3, random_start: Some(9), restarts: 2 },
            AttackKind::Pgd { steps: 10, step_size: 0.5, random_start: Some(1), restarts: 1 },
            AttackKind::Apgd { iterations: 1, rho: 0.75, restarts: 1, seed: 0 },
            AttackKind::Apgd { iterations: 5, rho: 0.75, restarts: 2, seed: 4 },
        ] {
            let adv = engine.attack(&mut model, &x, shape, &labels, &ids(2), &Attack { kind, epsilon: eps }, &pixels(3)).unwrap();
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
        let attack = |engine: &Engine, model: &mut Model, kind| {
            engine.attack(model, &batch.input, batch.shape, &labels, &ids(24), &Attack { kind, epsilon: eps }, &pixels(3)).unwrap()
        };
        let fgsm = attack(&engine, &mut model, AttackKind::Fgsm);
        let pgd = attack(&engine, &mut model, AttackKind::Pgd { steps: 5, step_size: eps / 4.0, random_start: Some(0), restarts: 1 });
        let apgd = attack(&engine, &mut model, AttackKind::Apgd { iterations: 10, rho: 0.75, restarts: 1, seed: 0 });
        let [fgsm, pgd, apgd] = [fgsm, pgd, apgd].map(|adv| accuracy(&engine, &mut model, &adv, batch.shape, &labels));
        eprintln!("shipped {name} on 24 test images, ε = 8/255: clean {clean:.3}, FGSM {fgsm:.3}, PGD-5 {pgd:.3}, APGD-10 {apgd:.3}");
        assert!(clean >= 0.8, "{name}: clean accuracy {clean}");
        assert!(fgsm < clean && pgd <= fgsm && apgd <= fgsm, "{name}: clean {clean}, FGSM {fgsm}, PGD {pgd}, APGD {apgd}");
    }
}

/// AutoAttack's `attack_single_run` and `perturb` (L∞, CE, one restart) written out on the host
/// in f32 over the engine's own gradients and logits, step for step; also how many times a
/// sample's step size was halved (and its point reset to its best).
fn apgd_on_host(engine: &Engine, model: &mut Model, x: &[f32], shape: [usize; 4], labels: &[usize], attack: &Attack) -> (Vec<f32>, usize) {
    let AttackKind::Apgd { iterations, rho, .. } = attack.kind else { unreachable!() };
    let eps = attack.epsilon;
    let per = shape[1] * shape[2] * shape[3];
    let request =
        PassRequest { layers: &[], loss: Loss { target: Target::Label, temperature: 1.0 }, input_gradient: true, labels: Some(labels) };
    // Losses (f32, row maximum subtracted, as the kernel), predictions right, gradients.
    let mut evaluate = |pixels: &[f32]| {
        let input: Vec<f32> = pixels.iter().map(|&p| (p - FMNIST) / FMNIST_STD).collect();
        let out = engine.pass(model, &input, shape, &request).unwrap();
        let classes = out.logits.len() / shape[0];
        let (mut loss, mut right) = (vec![], vec![]);
        for (s, row) in out.logits.chunks(classes).enumerate() {
            let best = (0..classes).fold(0, |b, c| if row[c] > row[b] { c } else { b });
            let sum: f32 = row.iter().map(|v| (v - row[best]).exp()).sum();
            loss.push(sum.ln() + row[best] - row[labels[s]]);
            right.push(best == labels[s]);
        }
        (loss, right, out.input_grad)
    };
    let clean: Vec<f32> = x.iter().map(|&v| to_pixel(v)).collect();
    let (_, clean_right, _) = evaluate(&clean);
    let mut x_adv: Vec<f32> = (0..shape[0]).flat_map(|s| attack.random_start(&clean[s * per..(s + 1) * per], 0, s).unwrap()).collect();
    let (mut x_best, mut x_best_adv, mut x_old) = (x_adv.clone(), x_adv.clone(), x_adv.clone());
    let (mut loss_best, right, mut grad) = evaluate(&x_adv);
    let mut grad_best = grad.clone();
    let mut fooled: Vec<bool> = right.iter().map(|r| !r).collect();
    let mut step = vec![2.0 * eps; shape[0]];
    let (mut best_at_check, mut reduced_at_check) = (loss_best.clone(), vec![true; shape[0]]);
    let mut losses: Vec<Vec<f32>> = vec![];
    let at_least_one = |f: f64| ((f * iterations as f64) as usize).max(1);
    let (mut k, k_min, decrease, mut counter) = (at_least_one(0.22), at_least_one(0.06), at_least_one(0.03), 0);
    let project = |v: f32, o: f32| v.clamp((o - eps).max(0.0), (o + eps).min(1.0));
    let mut halvings = 0;
    for i in 0..iterations {
        let a = if i > 0 { 0.75 } else { 1.0 };
        for e in 0..x_adv.len() {
            let (s, o) = (e / per, clean[e]);
            let momentum = x_adv[e] - x_old[e];
            x_old[e] = x_adv[e];
            let z = project(x_adv[e] + step[s] * grad[e].signum() * (grad[e] != 0.0) as u8 as f32, o);
            x_adv[e] = project(x_adv[e] + (z - x_adv[e]) * a + momentum * (1.0 - a), o);
        }
        let (loss, right, g) = evaluate(&x_adv);
        grad = g;
        for s in 0..shape[0] {
            let range = s * per..(s + 1) * per;
            if !right[s] {
                fooled[s] = true;
                x_best_adv[range.clone()].copy_from_slice(&x_adv[range.clone()]);
            }
            if loss[s] > loss_best[s] {
                x_best[range.clone()].copy_from_slice(&x_adv[range.clone()]);
                grad_best[range.clone()].copy_from_slice(&grad[range.clone()]);
                loss_best[s] = loss[s];
            }
        }
        losses.push(loss);
        counter += 1;
        if counter == k {
            for s in 0..shape[0] {
                // loss_steps[-1] is row N − 1: still zero unless this is it.
                let at = |j: isize| {
                    if j >= 0 {
                        losses[j as usize][s]
                    } else if i + 1 == iterations {
                        losses[i][s]
                    } else {
                        0.0
                    }
                };
                let increases = (0..k).filter(|&c| at(i as isize - c as isize) > at(i as isize - c as isize - 1)).count();
                let oscillating = increases as f32 <= k as f32 * rho;
                let stalled = !reduced_at_check[s] && best_at_check[s] >= loss_best[s];
                reduced_at_check[s] = oscillating || stalled;
                best_at_check[s] = loss_best[s];
                if reduced_at_check[s] {
                    halvings += 1;
                    step[s] /= 2.0;
                    let range = s * per..(s + 1) * per;
                    x_adv[range.clone()].copy_from_slice(&x_best[range.clone()]);
                    grad[range.clone()].copy_from_slice(&grad_best[range.clone()]);
                }
            }
            k = k.saturating_sub(decrease).max(k_min);
            counter = 0;
        }
    }
    let examples = (0..x.len())
        .map(|e| {
            let s = e / per;
            if clean_right[s] && fooled[s] {
                (x_best_adv[e] - FMNIST) / FMNIST_STD
            } else {
                x[e]
            }
        })
        .collect();
    (examples, halvings)
}

#[test]
fn apgd_equals_autoattack_written_out_on_the_host() {
    let engine = engine();
    let mut model = engine.upload(SyntheticModel::new(ArchSpec::WideResNet { depth: 10, width: 1 }, 4, 11).unwrap().network);
    let shape = [8, 3, 8, 8];
    let mut rng = Rng::new(12);
    let x = images(&mut rng, shape.iter().product());
    // Mostly the clean predictions (so the attack has work), two wrong from the start.
    let logits = engine.predict(&mut model, &x, shape).unwrap();
    let mut labels: Vec<usize> = logits.chunks(4).map(|r| (0..4).fold(0, |b, c| if r[c] > r[b] { c } else { b })).collect();
    labels[1] = (labels[1] + 1) % 4;
    labels[6] = (labels[6] + 2) % 4;
    for (iterations, eps) in [(30, 0.03), (9, 0.05)] {
        let attack = Attack { kind: AttackKind::Apgd { iterations, rho: 0.75, restarts: 1, seed: 7 }, epsilon: eps };
        let device = engine.attack(&mut model, &x, shape, &labels, &ids(8), &attack, &pixels(3)).unwrap();
        let (host, halvings) = apgd_on_host(&engine, &mut model, &x, shape, &labels, &attack);
        let worst = device.iter().zip(&host).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        let changed = (0..8).filter(|&s| device[s * 192..(s + 1) * 192] != x[s * 192..(s + 1) * 192]).count();
        eprintln!(
            "APGD {iterations} iterations, ε {eps}: {changed} of 8 samples fooled, {halvings} step halvings, device − host ≤ {worst:e}"
        );
        assert!(worst <= 1e-6, "{iterations} iterations: device and host differ by {worst}");
        assert!(halvings > 0, "{iterations} iterations: the case should halve some step sizes");
        assert!(changed > 0 && changed < 6, "{changed} samples fooled: the case should mix fooled and robust samples");
    }
}

#[test]
fn bad_attacks_are_refused() {
    let engine = engine();
    let mut model = engine.upload(SyntheticModel::new(ArchSpec::WideResNet { depth: 10, width: 1 }, 3, 1).unwrap().network);
    let shape = [1, 3, 6, 6];
    let x = vec![0.0; 108];
    let fgsm = |epsilon| Attack { kind: AttackKind::Fgsm, epsilon };
    let pgd = |steps, step_size| Attack { kind: AttackKind::Pgd { steps, step_size, random_start: None, restarts: 1 }, epsilon: 0.1 };
    let apgd = |iterations, rho, restarts| Attack { kind: AttackKind::Apgd { iterations, rho, restarts, seed: 0 }, epsilon: 0.1 };
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
        (
            Attack { kind: AttackKind::Pgd { steps: 2, step_size: 0.1, random_start: None, restarts: 2 }, epsilon: 0.1 },
            pixels(3),
            &x,
            &[0],
            "needs a random start",
        ),
        (apgd(0, 0.75, 1), pixels(3), &x, &[0], "APGD needs at least one step"),
        (apgd(10, 1.5, 1), pixels(3), &x, &[0], "APGD ρ 1.5"),
        (apgd(10, 0.75, 0), pixels(3), &x, &[0], "at least one restart"),
        (apgd(10, 0.75, 1000), pixels(3), &x, &[0], "MAX_ATTACK_RESTARTS"),
    ];
    for (attack, space, input, labels, expected) in cases {
        let Err(e) = engine.attack(&mut model, input, shape, labels, &[0], &attack, &space) else {
            panic!("accepted: expected `{expected}`")
        };
        assert!(e.to_string().contains(expected), "{e}");
    }
}
