//! The `nac` binary end to end: `predict`, `profile`, `score`, `merge` and `me` against the
//! library calls, errors that name the problem and leave no output file behind, `info` and
//! `selfcheck`.

mod common;

use std::process::Command;

use common::random_vec;
use nac::model::synthetic::SyntheticModel;
use nac::model::weights::StorageDtype;
use nac::model::ArchSpec;
use nac::nac::{class_balanced_subset, evaluate_checkpoints, LabelledImages, LayerParams, MeSettings, Profile, ProfileData};
use nac::npy::NpyArray;
use nac::rng::Rng;

/// The engine the command line builds: conv variants tuned, from the same cache
/// (`NAC_TUNE_DIR`, `.cargo/config.toml`), so the library computes bit for bit what the CLI does
/// even where a split-K variant was chosen.
fn cli_engine() -> nac::Engine {
    common::engine_with(nac::EngineOptions { tuning: nac::kernels::tune::Tuning::measured(), ..nac::EngineOptions::default() })
}

fn nac() -> Command {
    Command::new(env!("CARGO_BIN_EXE_nac"))
}

#[test]
fn predict_writes_the_library_logits() {
    let dir = common::temp_dir("cli");
    let model_path = dir.join("wrn.safetensors");
    let synthetic = SyntheticModel::new(ArchSpec::WideResNet { depth: 10, width: 2 }, 6, 21).unwrap();
    synthetic.save(&model_path, StorageDtype::F16).unwrap();
    let shape = [5usize, 3, 12, 12];
    let input = random_vec(&mut Rng::new(5), shape.iter().product(), 1.0);
    let input_path = dir.join("x.npy");
    NpyArray::from_f32(shape.to_vec(), &input).save(&input_path).unwrap();
    let out_path = dir.join("logits.npy");

    let status = nac()
        .args(["predict", "--model"])
        .arg(&model_path)
        .arg("--input")
        .arg(&input_path)
        .arg("--out")
        .arg(&out_path)
        .args(["--batch", "2"])
        .status()
        .unwrap();
    assert!(status.success());
    let out = NpyArray::load(&out_path).unwrap();
    assert_eq!(out.shape, vec![5, 6]);
    let got = out.to_f32(&out_path).unwrap();

    let engine = cli_engine();
    let mut model = engine.load_model(&model_path, None).unwrap();
    let want = engine.predict(&mut model, &input, shape).unwrap();
    assert_eq!(got, want, "the CLI writes exactly what the library computes");
}

#[test]
fn predict_errors_name_the_problem_and_write_nothing() {
    let dir = common::temp_dir("cli");
    let model_path = dir.join("r18.safetensors");
    SyntheticModel::new(ArchSpec::ResNet18_32x32, 10, 1).unwrap().save(&model_path, StorageDtype::F32).unwrap();
    let out_path = dir.join("never.npy");

    let bad_input = dir.join("flat.npy");
    NpyArray::from_f32(vec![12], &[0.0; 12]).save(&bad_input).unwrap();
    let gray = dir.join("gray.npy");
    NpyArray::from_f32(vec![1, 1, 4, 4], &[0.0; 16]).save(&gray).unwrap();
    let garbage = dir.join("garbage.npy");
    std::fs::write(&garbage, b"not numpy").unwrap();

    for (input, expected) in
        [(&bad_input, "expected a 4-D float32 array"), (&gray, "expected [N ≥ 1, 3, H ≥ 1, W ≥ 1]"), (&garbage, "not a valid .npy file")]
    {
        let output =
            nac().args(["predict", "--model"]).arg(&model_path).arg("--input").arg(input).arg("--out").arg(&out_path).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success());
        assert!(stderr.contains(expected), "stderr `{stderr}` should contain `{expected}`");
        assert!(!out_path.exists(), "no output file after an error");
    }
}

#[test]
fn info_and_selfcheck_run() {
    let info = nac().arg("info").output().unwrap();
    assert!(info.status.success(), "{}", String::from_utf8_lossy(&info.stderr));
    let text = String::from_utf8_lossy(&info.stdout);
    assert!(text.contains("max_storage_buffer_binding_size") && text.contains("* "), "{text}");

    let check = nac().args(["selfcheck", "--arch", "wrn-10-1", "--size", "16"]).output().unwrap();
    let text = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{text}{}", String::from_utf8_lossy(&check.stderr));
    assert!(text.contains("ok: the GPU matches the CPU reference"), "{text}");
    // A ViT runs at its own image size without `--size`; `vit-hN` alone cannot build one.
    let check = nac().args(["selfcheck", "--arch", "vit-i8-p4-d1-w8-h2-m12"]).output().unwrap();
    let text = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success() && text.contains("layer_norm"), "{text}{}", String::from_utf8_lossy(&check.stderr));
    let partial = nac().args(["selfcheck", "--arch", "vit-h2"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&partial.stderr);
    assert!(!partial.status.success() && stderr.contains("names only the heads"), "{stderr}");

    if cfg!(target_os = "linux") {
        // No Metal on Linux: the error must say how to get an adapter.
        let none = nac().args(["--backend", "metal", "info"]).output().unwrap();
        assert!(!none.status.success());
        let stderr = String::from_utf8_lossy(&none.stderr);
        assert!(stderr.contains("no GPU adapter") && stderr.contains("apt-get install mesa-vulkan-drivers"), "{stderr}");
    }
    let bad = nac().args(["--adapter", "no-such-gpu", "info"]).output().unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("no adapter name contains `no-such-gpu`"));
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "command failed: {stderr}");
    String::from_utf8(out.stdout).unwrap()
}

/// `nac profile` then `nac score` (and `merge`, `me`) on a small random model, each checked
/// against the library call.
#[test]
fn profile_score_merge_and_me_match_the_library() {
    let dir = common::temp_dir("cli-flow");
    let spec = ArchSpec::WideResNet { depth: 10, width: 1 };
    let (model_path, other_path) = (dir.join("model.safetensors"), dir.join("other.safetensors"));
    SyntheticModel::new(spec, 4, 31).unwrap().save(&model_path, StorageDtype::F32).unwrap();
    SyntheticModel::new(spec, 4, 32).unwrap().save(&other_path, StorageDtype::F32).unwrap();
    let n = 9;
    let shape = [n, 3, 10, 10];
    let input = random_vec(&mut Rng::new(33), shape.iter().product(), 1.0);
    let labels: Vec<usize> = (0..n).map(|i| i % 4).collect();
    let (x, y) = (dir.join("x.npy"), dir.join("y.npy"));
    NpyArray::from_f32(shape.to_vec(), &input).save(&x).unwrap();
    NpyArray::from_labels(&labels).save(&y).unwrap();
    let p = |name: &str| dir.join(name);

    // Profile the class-balanced subset (8 of 9: 2 per class) with one override.
    run_ok(
        nac()
            .args(["profile", "--model"])
            .arg(&model_path)
            .arg("--input")
            .arg(&x)
            .arg("--labels")
            .arg(&y)
            .args(["--balanced", "8", "--seed", "3", "--layers", "avgpool,block3,block1", "--preset", "cifar10"])
            .args(["--layer-params", "block1:2/52/0.5", "--preprocessing", "test-prep", "--batch", "4", "--out"])
            .arg(p("profile.safetensors")),
    );
    run_ok(
        nac()
            .args(["score", "--model"])
            .arg(&model_path)
            .arg("--profile")
            .arg(p("profile.safetensors"))
            .arg("--input")
            .arg(&x)
            .args(["--preprocessing", "test-prep", "--batch", "3", "--out"])
            .arg(p("scores.csv")),
    );

    let engine = cli_engine();
    let mut model = engine.load_model(&model_path, None).unwrap();
    let settings = vec![
        LayerParams::new("avgpool", 50.0, 50, 100.0),
        LayerParams::new("block3", 100.0, 500, 1000.0),
        LayerParams::new("block1", 2.0, 52, 0.5),
    ];
    let chosen = class_balanced_subset(&labels, 4, 8, 3).unwrap();
    let per = 3 * 10 * 10;
    let subset: Vec<f32> = chosen.iter().flat_map(|&i| input[i * per..(i + 1) * per].to_vec()).collect();
    let mut profile = Profile::new(&engine, &model.network, &settings, "test-prep").unwrap();
    profile.add(&engine, &mut model, &subset, [8, 3, 10, 10]).unwrap();
    profile.record_sources(chosen.iter().copied());
    let saved = ProfileData::load(&p("profile.safetensors")).unwrap();
    assert_eq!(saved, profile.to_data(&engine).unwrap(), "the CLI profile is the library's");
    let scores = profile.score(&engine, &mut model, &input, shape).unwrap();
    assert_eq!(std::fs::read_to_string(p("scores.csv")).unwrap(), scores.to_csv());
    let csv = scores.to_csv();
    assert!(csv.starts_with("index,score,avgpool,block3,block1,predicted,max_softmax,energy\n") && csv.lines().count() == n + 1, "{csv}");

    // Scoring refuses another model, and other preprocessing, and writes nothing.
    for (model_arg, prep, layers, expected) in [
        (&other_path, "test-prep", "avgpool,block3,block1", "was built with model wrn-10-1:"),
        (&model_path, "none", "avgpool,block3,block1", "preprocessing `test-prep`, not `none`"),
        (&model_path, "test-prep", "avgpool,block1", "covers layers avgpool,block3,block1, not avgpool,block1"),
    ] {
        let out = nac()
            .args(["score", "--model"])
            .arg(model_arg)
            .arg("--profile")
            .arg(p("profile.safetensors"))
            .arg("--input")
            .arg(&x)
            .args(["--preprocessing", prep, "--layers", layers, "--out"])
            .arg(p("refused.csv"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && !p("refused.csv").exists(), "{stderr}");
        assert!(stderr.contains("profile.safetensors") && stderr.contains(expected), "{stderr}");
    }

    // Two shards merged by the CLI equal one profile of both.
    for (name, range) in [("a", 0..5), ("b", 5..9)] {
        let xs = p(&format!("x{name}.npy"));
        NpyArray::from_f32(vec![range.len(), 3, 10, 10], &input[range.start * per..range.end * per]).save(&xs).unwrap();
        run_ok(
            nac()
                .args(["profile", "--model"])
                .arg(&model_path)
                .arg("--input")
                .arg(&xs)
                .args(["--layers", "avgpool,block3,block1", "--layer-params", "block1:2/52/0.5", "--out"])
                .arg(p(&format!("{name}.safetensors"))),
        );
    }
    run_ok(nac().args(["merge", "--out"]).arg(p("merged.safetensors")).arg(p("a.safetensors")).arg(p("b.safetensors")));
    let mut whole = Profile::new(&engine, &model.network, &settings, "none").unwrap();
    whole.add(&engine, &mut model, &input, shape).unwrap();
    assert_eq!(ProfileData::load(&p("merged.safetensors")).unwrap(), whole.to_data(&engine).unwrap());

    // NAC-ME over two checkpoints.
    let stdout = run_ok(
        nac()
            .arg("me")
            .arg("--checkpoints")
            .arg(format!("{},{}", model_path.display(), other_path.display()))
            .arg("--input")
            .arg(&x)
            .arg("--labels")
            .arg(&y)
            .args(["--accuracies", "0.9,0.8", "--o", "2", "--out"])
            .arg(p("me.json")),
    );
    let me = MeSettings { o: 2.0, ..MeSettings::default() };
    let images = LabelledImages { input: &input, shape, labels: &labels };
    let want = evaluate_checkpoints(&engine, &[model_path.clone(), other_path.clone()], None, images, &me, Some(&[0.9, 0.8])).unwrap();
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(p("me.json")).unwrap()).unwrap();
    for (i, r) in want.results.iter().enumerate() {
        assert_eq!(json["checkpoints"][i]["nac_me"].as_f64().unwrap(), r.value);
    }
    assert_eq!(json["chosen"].as_str().unwrap(), want.checkpoints[want.chosen].display().to_string());
    assert!(stdout.contains("<- chosen") && stdout.contains("Spearman"), "{stdout}");
}

/// On a Vision Transformer (heads from its metadata) `nac profile --preset cifar10` takes the
/// official ViT layers and `imagenet-vit` values, and says so; `nac me` measures each
/// checkpoint's own feature layer (a ViT's `layer_norm`, a CNN's `avgpool`) in one call.
#[test]
fn vit_profiles_take_the_vit_preset_and_me_the_feature_layer() {
    let dir = common::temp_dir("cli-vit");
    let (vit_path, wrn_path) = (dir.join("vit.safetensors"), dir.join("wrn.safetensors"));
    SyntheticModel::new("vit-i8-p4-d4-w16-h2-m32".parse().unwrap(), 4, 41).unwrap().save(&vit_path, StorageDtype::F32).unwrap();
    SyntheticModel::new(ArchSpec::WideResNet { depth: 10, width: 1 }, 4, 42).unwrap().save(&wrn_path, StorageDtype::F32).unwrap();
    let n = 6;
    let shape = [n, 3, 8, 8];
    let input = random_vec(&mut Rng::new(43), shape.iter().product(), 1.0);
    let labels: Vec<usize> = (0..n).map(|i| i % 4).collect();
    let (x, y, profile_path) = (dir.join("x.npy"), dir.join("y.npy"), dir.join("profile.safetensors"));
    NpyArray::from_f32(shape.to_vec(), &input).save(&x).unwrap();
    NpyArray::from_labels(&labels).save(&y).unwrap();

    let out = nac()
        .args(["profile", "--model"])
        .arg(&vit_path)
        .arg("--input")
        .arg(&x)
        .args(["--preset", "cifar10", "--out"])
        .arg(&profile_path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("preset imagenet-vit") && stderr.contains("instead of cifar10"), "{stderr}");
    let engine = cli_engine();
    let mut model = engine.load_model(&vit_path, None).unwrap();
    let settings =
        [("layer_norm", 500.0, 50, 100.0), ("layer_3", 50.0, 500, 1.0), ("layer_2", 10.0, 500, 10.0), ("layer_1", 10.0, 1000, 1.0)]
            .map(|(l, o, m, a)| LayerParams::new(l, o, m, a));
    let mut profile = Profile::new(&engine, &model.network, &settings, "none").unwrap();
    profile.add(&engine, &mut model, &input, shape).unwrap();
    profile.record_sources(0..n);
    assert_eq!(ProfileData::load(&profile_path).unwrap(), profile.to_data(&engine).unwrap());

    let me_path = dir.join("me.json");
    let checkpoints = format!("{},{}", vit_path.display(), wrn_path.display());
    run_ok(
        nac()
            .args(["me", "--checkpoints", &checkpoints, "--input"])
            .arg(&x)
            .arg("--labels")
            .arg(&y)
            .args(["--o", "2", "--out"])
            .arg(&me_path),
    );
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&me_path).unwrap()).unwrap();
    let images = LabelledImages { input: &input, shape, labels: &labels };
    let want =
        evaluate_checkpoints(&engine, &[vit_path, wrn_path], None, images, &MeSettings { o: 2.0, ..MeSettings::default() }, None).unwrap();
    for (i, (r, layer)) in want.results.iter().zip(["layer_norm", "avgpool"]).enumerate() {
        assert_eq!((json["checkpoints"][i]["layer"].as_str().unwrap(), r.layer.as_str()), (layer, layer));
        assert_eq!(json["checkpoints"][i]["nac_me"].as_f64().unwrap(), r.value);
    }
    assert!(json["settings"]["layer"].is_null(), "{json}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A reader that stops early (`nac info | head -n 1`) ends the command quietly, not in a panic.
#[test]
fn a_closed_stdout_is_not_a_panic() {
    use std::io::Read;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_nac"))
        .arg("info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success() && !err.contains("panicked"), "status {status}: {err}");
}
