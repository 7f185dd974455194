//! Adversarial sets (`fgsm:`, `pgd:`, `apgd:` specs): the grammar and its errors, the attack
//! stage of the pipeline equal to `Engine::attack` on the same samples whatever the batch size
//! or slice, corruptions after the attack on its 8-bit examples, `nac export --model` and
//! `nac predict --data`, and `nac shift` with attacks on two models side by side.

mod common;

use std::path::Path;

use nac::data::{batches, load_all, Corruption, Dataset, Image, Transform};
use nac::eval::adversarial::Attacker;
use nac::eval::shift::{SetKind, ShiftConfig, ShiftReport};
use nac::model::arch::ArchSpec;
use nac::model::synthetic::SyntheticModel;
use nac::model::weights::StorageDtype;
use nac::npy::NpyArray;
use nac::{Attack, AttackKind, PixelSpace};

fn demo(slice: &str) -> String {
    format!("idx:{}{slice}", Path::new(env!("CARGO_MANIFEST_DIR")).join("demo/fmnist-test-images-idx3-ubyte.gz").display())
}

#[test]
fn the_grammar_reads_attacks() {
    let eps = 8.0f32 / 255.0;
    let cases: [(&str, AttackKind, f32, &str); 6] = [
        ("fgsm:8/255", AttackKind::Fgsm, eps, "fgsm-eps8_255"),
        (
            "pgd:8/255:10",
            AttackKind::Pgd { steps: 10, step_size: 2.5 * eps / 10.0, random_start: Some(0), restarts: 1 },
            eps,
            "pgd10-eps8_255",
        ),
        (
            "pgd:0.03:4:3",
            AttackKind::Pgd { steps: 4, step_size: 2.5 * 0.03 / 4.0, random_start: Some(0), restarts: 3 },
            0.03,
            "pgd4-eps0.03",
        ),
        ("apgd:4/255", AttackKind::APGD_DEFAULT, 4.0 / 255.0, "apgd-eps4_255"),
        ("apgd:4/255:50", AttackKind::Apgd { iterations: 50, rho: 0.75, restarts: 1, seed: 0 }, 4.0 / 255.0, "apgd50-eps4_255"),
        ("apgd:1/255:20:5", AttackKind::Apgd { iterations: 20, rho: 0.75, restarts: 5, seed: 0 }, 1.0 / 255.0, "apgd20-eps1_255"),
    ];
    for (prefix, kind, epsilon, label) in cases {
        let set = Dataset::open(&format!("{prefix}:{}", demo("[0:6]"))).unwrap();
        let adversarial = set.adversarial().unwrap_or_else(|| panic!("{prefix}: no attack"));
        assert_eq!(adversarial.attack, Attack { kind, epsilon }, "{prefix}");
        assert!(adversarial.after.is_empty());
        assert_eq!(set.len(), 6);
        assert!(set.name().contains(label), "{prefix}: name {}", set.name());
        assert_eq!(set.image(2).unwrap(), Dataset::open(&demo("[0:6]")).unwrap().image(2).unwrap(), "images are the clean ones");
        assert_eq!(Dataset::attack_of(set.spec()).unwrap(), Some(Attack { kind, epsilon }));
    }
    // Corruptions outside the attack run after it; inside, before (the images change).
    let after = Dataset::open(&format!("then:contrast:2:invert:1:fgsm:2/255:corrupt:fog:1:{}", demo("[0:6]"))).unwrap();
    let stage = after.adversarial().unwrap();
    assert_eq!(stage.after, vec![(Corruption::parse("contrast").unwrap(), 2), (Corruption::parse("invert").unwrap(), 1)]);
    let fogged = Dataset::open(&format!("corrupt:fog:1:{}", demo("[0:6]"))).unwrap();
    assert_eq!(after.image(3).unwrap(), fogged.image(3).unwrap());
    // A slice of an attacked set keeps the attack and the base positions.
    let sliced = Dataset::open(&format!("fgsm:2/255:{}[2:5]", demo("[0:6]"))).unwrap();
    assert!(sliced.adversarial().is_some());
    assert_eq!((0..3).map(|i| sliced.base_position(i)).collect::<Vec<_>>(), [2, 3, 4]);
    assert!(Dataset::attack_of(&demo("")).unwrap().is_none());
}

#[test]
fn bad_attack_specs_are_refused_by_name() {
    let base = demo("[0:4]");
    let cases = [
        (format!("fgsm:2:{base}"), "attack radius `2`"),
        (format!("fgsm:eight:{base}"), "attack radius `eight`"),
        (format!("fgsm:1/0:{base}"), "attack radius `1/0`"),
        (format!("pgd:8/255:{base}"), "expected pgd:EPS:STEPS:SPEC"),
        (format!("pgd:8/255:0:{base}"), "PGD needs at least one step"),
        (format!("pgd:8/255:99999:{base}"), "MAX_ATTACK_STEPS"),
        (format!("apgd:8/255:10:0:{base}"), "at least one restart"),
        ("fgsm:8/255".to_string(), "expected fgsm:EPS:SPEC"),
        (format!("pgd:8/255:3:fgsm:2/255:{base}"), "at most one attack"),
        (format!("outliers:fgsm:2/255:{base}"), "outliers: cannot hold an attack"),
    ];
    for (spec, needle) in cases {
        let e = Dataset::check_spec(&spec).err().unwrap_or_else(|| panic!("`{spec}` accepted"));
        assert!(e.to_string().contains(needle) && e.to_string().contains("dataset spec"), "`{spec}`: {e}");
    }
    // Labels are needed, which only opening the set shows.
    let dir = common::temp_dir("adversarial-unlabelled");
    let images = dir.join("plain.npy");
    NpyArray { shape: vec![3, 4, 4], dtype: nac::npy::NpyDtype::U8, bytes: vec![7; 48] }.save(&images).unwrap();
    let e = Dataset::open(&format!("fgsm:2/255:npy:{}", images.display())).unwrap_err().to_string();
    assert!(e.contains("the attack needs labels"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The attack stage on loader batches equals `Engine::attack` of the whole set with each
/// sample's index as its id, for any batch size; a slice of the attacked set is the same rows;
/// a corruption after the attack is that corruption of the 8-bit examples, seeded by the index.
#[test]
fn the_attack_stage_equals_the_engine_attack_on_the_same_samples() {
    let engine = common::engine();
    let network = SyntheticModel::new(ArchSpec::WideResNet { depth: 10, width: 1 }, 10, 4).unwrap().network;
    let transform = Transform::preset("fmnist").unwrap();
    let spec = format!("pgd:0.05:3:2:{}", demo("[0:7]"));
    let set = Dataset::open(&spec).unwrap();
    let clean = load_all(&Dataset::open(&demo("[0:7]")).unwrap(), &transform, None, 2).unwrap();
    let (mean, std) = transform.pixel_space();
    assert_eq!((mean.clone(), std.clone()), (vec![0.286; 3], vec![0.353; 3]));
    let mut model = engine.upload(network.clone());
    let labels = clean.labels.clone().unwrap();
    let ids: Vec<usize> = (0..7).collect();
    let pixels = PixelSpace { mean: mean.clone(), std: std.clone() };
    let want = engine.attack(&mut model, &clean.input, clean.shape, &labels, &ids, &set.adversarial().unwrap().attack, &pixels).unwrap();
    let run = |set: &Dataset, batch: usize| -> Vec<f32> {
        let mut attacker = Attacker::new(&engine, &network, set, &transform).expect("an adversarial set");
        let mut out = Vec::new();
        for b in batches(set, &transform, None, batch, 2) {
            let mut b = b.unwrap();
            attacker.attack(&mut b, None).unwrap();
            out.extend(b.input);
        }
        out
    };
    let per = 3 * 32 * 32;
    for batch in [7, 3, 1] {
        assert_eq!(run(&set, batch), want, "batch {batch}");
    }
    assert_eq!(run(&set.subset(&[5, 2]).unwrap(), 2), [&want[5 * per..6 * per], &want[2 * per..3 * per]].concat(), "a subset");
    let sliced = Dataset::open(&format!("{spec}[3:6]")).unwrap();
    assert_eq!(run(&sliced, 2), want[3 * per..6 * per], "a slice");
    assert!(Attacker::new(&engine, &network, &Dataset::open(&demo("[0:2]")).unwrap(), &transform).is_none());

    let noisy = Dataset::open(&format!("corrupt:gaussian_noise:3:{spec}")).unwrap();
    let got = run(&noisy, 4);
    let noise = Corruption::parse("gaussian_noise").unwrap();
    for s in 0..7 {
        let sample = &want[s * per..(s + 1) * per];
        let bytes: Vec<u8> =
            (0..per).map(|i| ((sample[(i % 3) * 1024 + i / 3] * 0.353 + 0.286) * 255.0).round().clamp(0.0, 255.0) as u8).collect();
        let corrupted = noise.apply(&Image { width: 32, height: 32, channels: 3, pixels: bytes }, 3, s as u64).unwrap();
        for i in 0..per {
            let expected = (corrupted.pixels[(i % 1024) * 3 + i / 1024] as f32 / 255.0 - 0.286) / 0.353;
            assert_eq!(got[s * per + i], expected, "sample {s} element {i}");
        }
    }
}

#[test]
fn export_writes_adversarial_examples_and_refuses_what_it_cannot_attack() {
    let dir = common::temp_dir("adversarial-export");
    let model = dir.join("model.safetensors");
    SyntheticModel::new(ArchSpec::WideResNet { depth: 10, width: 1 }, 10, 6).unwrap().save(&model, StorageDtype::F32).unwrap();
    let spec = format!("fgsm:4/255:{}", demo("[0:5]"));
    let out = dir.join("fgsm.npy");
    common::nac_ok(&["export", "--data", &spec, "--preprocessing", "fmnist", "--model", common::s(&model), "--out", common::s(&out)]);
    let clean = dir.join("clean.npy");
    common::nac_ok(&["export", "--data", &demo("[0:5]"), "--preprocessing", "fmnist", "--out", common::s(&clean)]);
    let (adv, clean) = (NpyArray::load(&out).unwrap().to_f32(&out).unwrap(), NpyArray::load(&clean).unwrap().to_f32(&clean).unwrap());
    let moved = adv.iter().zip(&clean).map(|(a, c)| ((a - c) * 0.353).abs()).fold(0f32, f32::max);
    assert!((moved - 4.0 / 255.0).abs() < 1e-6, "FGSM moves pixels by ε: {moved}");
    for (args, needle) in [
        (vec!["export", "--data", &spec, "--preprocessing", "fmnist", "--out", common::s(&out)], "give --model"),
        (vec!["export", "--data", &spec, "--model", common::s(&model), "--out", common::s(&out)], "give --preprocessing"),
        (vec!["export", "--data", &demo("[0:5]"), "--model", common::s(&model), "--out", common::s(&out)], "holds no attack"),
    ] {
        let (ok, output) = common::nac(&args);
        assert!(!ok && output.contains(needle), "{args:?}: {output}");
    }
    // `nac predict --data` attacks as it streams: the logits of the exported examples.
    let (direct, exported) = (dir.join("direct.npy"), dir.join("exported.npy"));
    common::nac_ok(&["predict", "--model", common::s(&model), "--data", &spec, "--preprocessing", "fmnist", "--out", common::s(&direct)]);
    common::nac_ok(&["predict", "--model", common::s(&model), "--input", common::s(&out), "--out", common::s(&exported)]);
    let logits = |p: &Path| NpyArray::load(p).unwrap().to_f32(p).unwrap();
    assert_eq!(logits(&direct), logits(&exported));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `nac shift` with attacks on the clean set, two models: each is attacked on its own
/// gradients, and the report puts them side by side with its pictures.
#[test]
fn shift_attacks_two_models_side_by_side() {
    let dir = common::temp_dir("adversarial-shift");
    let (a, b) = (dir.join("standard.safetensors"), dir.join("other.safetensors"));
    SyntheticModel::new(ArchSpec::WideResNet { depth: 10, width: 1 }, 10, 1).unwrap().save(&a, StorageDtype::F32).unwrap();
    SyntheticModel::new(ArchSpec::WideResNet { depth: 10, width: 1 }, 10, 2).unwrap().save(&b, StorageDtype::F32).unwrap();
    let config = dir.join("shift.toml");
    let text = format!(
        "preprocessing = \"fmnist\"\nbatch = 8\n[[models]]\npath = \"{}\"\n[[models]]\npath = \"{}\"\n[profile]\ndata = \"{}\"\n[nac]\nlayers = [\"avgpool\", \"block3\"]\n[shift]\nclean = \"{}\"\ncorruptions = []\nattacks = [\"fgsm:8/255\", \"pgd:8/255:2\"]\nhistograms = [\"pgd:8/255:2\"]\n",
        a.display(),
        b.display(),
        demo("[20:36]"),
        demo("[0:10]")
    );
    std::fs::write(&config, &text).unwrap();
    let plan = ShiftConfig::parse(&text, "shift.toml").unwrap().as_eval_config().unwrap();
    assert_eq!(plan.ood[1].data, format!("pgd:8/255:2:{}", demo("[0:10]")));
    let out = dir.join("out");
    common::nac_ok(&["shift", common::s(&config), "--out", common::s(&out), "--threads", "2"]);
    let report: ShiftReport = serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    assert_eq!(report.models.len(), 2);
    for m in &report.models {
        assert_eq!(m.sets.len(), 2);
        assert_eq!(m.sets[0].kind, SetKind::Attack { attack: "fgsm:8/255".into(), epsilon: (8.0f32 / 255.0) as f64 });
        assert!(m.sets.iter().all(|s| s.accuracy.unwrap() <= m.clean.accuracy.unwrap()), "{}: attacks lower accuracy", m.path.display());
    }
    // Each model is attacked on its own gradients: the two attacked sets differ.
    assert_ne!(report.models[0].sets[0].nac, report.models[1].sets[0].nac);
    let md = std::fs::read_to_string(out.join("results.md")).unwrap();
    assert!(md.contains("## Models side by side") && md.contains("standard NAC AUROC") && md.contains("| pgd:8/255:2 |"), "{md}");
    for png in [
        "models_auroc.png",
        "models_accuracy.png",
        "models_hist_pgd_8_255_2.png",
        "standard/bar_delta_nac.png",
        "other/hist_pgd_8_255_2.png",
    ] {
        let image = image::open(out.join("pictures").join(png)).unwrap_or_else(|e| panic!("{png}: {e}"));
        assert!(image.width() > 100, "{png}");
    }
    if let Some(keep) = std::env::var_os("NAC_PLOT_PREVIEW") {
        for png in ["models_auroc.png", "models_accuracy.png", "models_hist_pgd_8_255_2.png"] {
            std::fs::copy(out.join("pictures").join(png), Path::new(&keep).join(png)).unwrap();
        }
    }
    let e = ShiftConfig::parse(&text.replace("\"fgsm:8/255\"", "\"fgsm:9\""), "s.toml").unwrap_err().to_string();
    assert!(e.contains("shift.attacks[0]") && e.contains("attack radius `9`"), "{e}");
    let e = ShiftConfig::parse(&text.replace("\"fgsm:8/255\"", "\"corrupt:fog:2\""), "s.toml").unwrap_err().to_string();
    assert!(e.contains("shift.attacks[0]"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
