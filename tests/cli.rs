//! The `nac` binary end to end: `predict` against the library call, errors that name the
//! problem and leave no output file behind, `info` and `selfcheck`.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::random_vec;
use nac::model::synthetic::SyntheticModel;
use nac::model::weights::StorageDtype;
use nac::model::ArchSpec;
use nac::npy::NpyArray;
use nac::rng::Rng;

fn nac() -> Command {
    Command::new(env!("CARGO_BIN_EXE_nac"))
}

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("nac-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn predict_writes_the_library_logits() {
    let dir = temp_dir();
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

    let engine = common::engine();
    let mut model = engine.load_model(&model_path, None).unwrap();
    let want = engine.predict(&mut model, &input, shape).unwrap();
    assert_eq!(got, want, "the CLI writes exactly what the library computes");
}

#[test]
fn predict_errors_name_the_problem_and_write_nothing() {
    let dir = temp_dir();
    let model_path = dir.join("r18.safetensors");
    SyntheticModel::new(ArchSpec::ResNet18_32x32, 10, 1).unwrap().save(&model_path, StorageDtype::F32).unwrap();
    let out_path = dir.join("never.npy");

    let bad_input = dir.join("flat.npy");
    NpyArray::from_f32(vec![12], &[0.0; 12]).save(&bad_input).unwrap();
    let gray = dir.join("gray.npy");
    NpyArray::from_f32(vec![1, 1, 4, 4], &[0.0; 16]).save(&gray).unwrap();
    let garbage = dir.join("garbage.npy");
    std::fs::write(&garbage, b"not numpy").unwrap();

    for (input, expected) in [
        (&bad_input, "expected a 4-D float32 array"),
        (&gray, "expected [N ≥ 1, 3, H ≥ 1, W ≥ 1]"),
        (&garbage, "not a valid .npy file"),
    ] {
        let output = nac()
            .args(["predict", "--model"])
            .arg(&model_path)
            .arg("--input")
            .arg(input)
            .arg("--out")
            .arg(&out_path)
            .output()
            .unwrap();
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
