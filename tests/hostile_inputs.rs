//! Hostile inputs to the commands and the pipeline: each ends in an error that names the
//! culprit, found before any network pass where it can be, and never in a panic, an abort, a
//! hang or a plausible wrong result. (Hostile files of each format: `hostile_files.rs`,
//! `hostile_data.rs`.)

mod common;

use common::s;

use std::path::{Path, PathBuf};
use std::process::Command;

use nac::eval::{EvalConfig, EvalOptions};
use nac::model::synthetic::{random_inputs, SyntheticModel};
use nac::model::weights::StorageDtype;
use nac::model::ArchSpec;
use nac::nac::search::{Grid, LayerGrid};
use nac::nac::{Binning, Counted, LayerParams, ModelIdentity, Profile};
use nac::npy::NpyArray;

const ARCH: ArchSpec = ArchSpec::WideResNet { depth: 10, width: 1 };

/// Runs `nac`: (exit code, stderr).
fn nac(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_nac")).args(args).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn model_file(dir: &Path, classes: usize) -> PathBuf {
    let path = dir.join(format!("wrn{classes}.safetensors"));
    SyntheticModel::new(ARCH, classes, 3).unwrap().save(&path, StorageDtype::F32).unwrap();
    path
}

/// Inputs whose values are finite but overflow f32 inside the network: `predict`, `profile` and
/// `score` name the input file and the sample, and write nothing.
#[test]
fn overflowing_inputs_are_named_by_sample_not_written() {
    let dir = common::temp_dir("hostile-overflow");
    let model = model_file(&dir, 4);
    let mut values = random_inputs(3, 3, 8, 8, 1);
    values[2 * 192..].iter_mut().for_each(|v| *v = (*v * 3e38).clamp(-3e38, 3e38));
    let input = dir.join("x.npy");
    NpyArray::from_f32(vec![3, 3, 8, 8], &values).save(&input).unwrap();
    let out = dir.join("logits.npy");
    let (code, err) = nac(&["predict", "--model", s(&model), "--input", s(&input), "--out", s(&out)]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&format!("{}: sample 2: the network's outputs are not finite", input.display())), "{err}");
    assert!(!out.exists());

    let profile = dir.join("p.safetensors");
    let (code, err) = nac(&["profile", "--model", s(&model), "--input", s(&input), "--layers", "avgpool,block2", "--out", s(&profile)]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("sample 2: the network's outputs are not finite"), "{err}");
    assert!(!profile.exists());

    let clean = dir.join("clean.npy");
    NpyArray::from_f32(vec![2, 3, 8, 8], &values[..2 * 192]).save(&clean).unwrap();
    let (code, err) = nac(&["profile", "--model", s(&model), "--input", s(&clean), "--layers", "avgpool,block2", "--out", s(&profile)]);
    assert_eq!(code, 0, "{err}");
    let scores = dir.join("scores.csv");
    let (code, err) = nac(&["score", "--model", s(&model), "--profile", s(&profile), "--input", s(&input), "--out", s(&scores)]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&format!("{}: sample 2:", input.display())), "{err}");
    assert!(!scores.exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Output paths that cannot be written are refused before any GPU work, naming the path.
#[test]
fn unwritable_outputs_are_refused_up_front() {
    let dir = common::temp_dir("hostile-out");
    let model = model_file(&dir, 4);
    let input = dir.join("x.npy");
    NpyArray::from_f32(vec![2, 3, 8, 8], &random_inputs(2, 3, 8, 8, 2)).save(&input).unwrap();
    let labels = dir.join("y.npy");
    NpyArray::from_labels(&[0, 1]).save(&labels).unwrap();
    let missing = dir.join("no-such-dir").join("out");
    let m = s(&missing);
    for args in [
        vec!["predict", "--model", s(&model), "--input", s(&input), "--out", m],
        vec!["profile", "--model", s(&model), "--input", s(&input), "--out", m],
        vec!["me", "--checkpoints", s(&model), "--input", s(&input), "--labels", s(&labels), "--out", m],
        vec!["bench", "--arch", "wrn-10-1", "--batch", "1", "--size", "8", "--out", m],
    ] {
        let (code, err) = nac(&args);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(err.contains(m) && err.contains("No such file or directory"), "{args:?}: {err}");
    }
    let (code, err) = nac(&["predict", "--model", s(&model), "--input", s(&input), "--out", s(&dir)]);
    assert_eq!(code, 1);
    assert!(err.contains("is a directory"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Sizes from flags past the stated limits are refused with the limit's name, not allocated.
#[test]
fn flags_past_the_limits_name_the_limit() {
    for (args, needle) in [
        (vec!["selfcheck", "--size", "99999999"], "MAX_IMAGE_SIDE"),
        (vec!["selfcheck", "--batch", "99999999999"], "MAX_BATCH"),
        (vec!["bench", "--batch", "100000000", "--out", "/tmp/never.json"], "MAX_BATCH"),
    ] {
        let (code, err) = nac(&args);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

/// The two f16 modes exclude each other: asking for both is refused by name, not resolved.
#[test]
fn f16_weights_and_f16_arithmetic_together_are_refused() {
    let (code, err) = nac(&["--f16-weights", "--f16-compute", "info"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--f16-compute") && err.contains("--f16-weights"), "{err}");
}

/// A grid whose Cartesian product is astronomically large is refused with its size, before a
/// single candidate list is built; a layer with too many candidates, too.
#[test]
fn giant_search_grids_are_refused_with_their_size() {
    let values: Vec<f64> = (1..=64).map(f64::from).collect();
    let layer = |name: &str| LayerGrid { layer: name.into(), o: values.clone(), m: vec![50], alpha: values.clone() };
    let grid = Grid { layers: ["avgpool", "block3", "block2", "block1"].iter().map(|l| layer(l)).collect() };
    let err = grid.validate().unwrap_err().to_string();
    assert!(err.contains("4096 × 4096 × 4096 × 4096") && err.contains("MAX_GRID_COMBINATIONS"), "{err}");
    assert_eq!(grid.combinations(), 4096usize.pow(4));
    let huge = Grid { layers: (0..40).map(|i| layer(&format!("l{i}"))).collect() };
    assert_eq!(huge.combinations(), usize::MAX, "saturates instead of overflowing");
    assert!(huge.validate().unwrap_err().to_string().contains("MAX_GRID_COMBINATIONS"));
    let wide = Grid { layers: vec![LayerGrid { layer: "avgpool".into(), o: values.clone(), m: vec![50, 500], alpha: values.clone() }] };
    let err = wide.validate().unwrap_err().to_string();
    assert!(err.contains("layer `avgpool`") && err.contains("8192") && err.contains("MAX_LAYER_CANDIDATES"), "{err}");
    let odd = Grid { layers: vec![LayerGrid { layer: "avgpool".into(), o: vec![1.0], m: vec![51], alpha: vec![1.0] }] };
    assert!(odd.validate().unwrap_err().to_string().contains("M = 51"));
}

/// Device faults: a buffer over the adapter's `max_buffer_size` and histograms over its binding
/// limit are errors naming what was asked, not aborts or a later anonymous GPU error.
#[test]
fn requests_over_the_adapter_limits_are_named_errors() {
    let engine = common::engine();
    let too_big = engine.gpu.limits.max_buffer_size + 4;
    let _buffer = engine.gpu.storage_buffer("a test buffer", too_big);
    let err = engine.gpu.check_while("testing").unwrap_err().to_string();
    assert!(err.contains("buffer `a test buffer`") && err.contains("max_buffer_size") && err.contains("while testing"), "{err}");
    engine.gpu.check_while("testing").unwrap();

    let identity = ModelIdentity { arch: "test".into(), fingerprint: "test:0".into() };
    let layer = (LayerParams::new("wide", 1.0, 65536, 1.0), 1 << 20);
    let err = Profile::for_layout(&engine, &identity, &[layer], "", Binning::LogSymmetric, Counted::All).err().unwrap().to_string();
    assert!(err.contains("layer `wide`") && err.contains("65535 bins × 1048576 neurons") && err.contains("binding limit"), "{err}");
}

/// A lost device ends the run in an error, not a hang or a panic.
#[test]
fn a_lost_device_is_an_error() {
    let engine = common::engine();
    let mut model = engine.upload(SyntheticModel::new(ARCH, 3, 1).unwrap().network);
    engine.gpu.device.destroy();
    let result = engine.predict(&mut model, &random_inputs(2, 3, 8, 8, 3), [2, 3, 8, 8]);
    let err = result.expect_err("a pass on a destroyed device cannot succeed").to_string();
    assert!(err.contains("lost") || err.contains("GPU error"), "{err}");
}

/// Writes an eval config over IDX sets made here; `extra` is appended.
fn eval_config(dir: &Path, model: &Path, extra: &str) -> PathBuf {
    let images: Vec<u8> = (0..12 * 64).map(|i| ((i * 37 + i / 64 * 11) % 251) as u8).collect();
    let labels: Vec<u8> = (0..12).map(|i| (i % 3) as u8).collect();
    let data = dir.join("set-images-idx3-ubyte");
    common::write_idx(&data, &images, 12, &labels);
    let spec = format!("idx:{}", data.display());
    let text = format!(
        "preprocessing = \"pad:4,gray2rgb\"\npictures = true\n[[models]]\npath = \"{}\"\n[profile]\ndata = \"{spec}[0:6]\"\n[id]\ntest = \"{spec}[6:9]\"\n{extra}",
        model.display()
    );
    let path = dir.join("eval.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn run_eval(dir: &Path, config: &Path) -> nac::Result<nac::eval::EvalReport> {
    let config = EvalConfig::load(config)?;
    let mut engine = common::engine();
    nac::eval::run(&mut engine, &config, &EvalOptions { out: dir.join("out"), threads: 2, progress: false })
}

/// What the config, the model and the dataset headers can tell is checked before the first
/// network pass: here the profile set holds an image that only fails when decoded, so any
/// error found after pooling began would be about that image instead.
#[test]
fn eval_checks_the_config_against_model_and_sets_before_any_pass() {
    let dir = common::temp_dir("hostile-eval");
    let model = model_file(&dir, 3);
    let folder = dir.join("broken");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("a.png"), b"\x89PNG\r\n\x1a\n not really").unwrap();
    let ood = |name: &str, data: &str| format!("[[ood]]\nname = \"{name}\"\ngroup = \"far\"\ndata = \"{data}\"\n");
    let broken = format!("folder:{}", folder.display());
    let cases = [
        (format!("{}[nac]\nlayers = [\"avgpool\", \"block9\"]\n", ood("x", &broken)), "[nac] layers: unknown layer `block9`"),
        (format!("{}[nac]\nparams = [\"avgpool:5/51/1\"]\n", ood("x", &broken)), "layer `avgpool`: NAC-UE needs an even number of bin edges"),
        (format!("{}[nac]\nlayers = [\"avgpool\"]\n[search]\nood_val = \"{broken}\"\n[[search.layers]]\nlayer = \"block7\"\no = [1.0]\nm = [50]\nalpha = [1.0]\n", ood("x", &broken)), "needs an ID validation set"),
        (format!("{}{}", ood("a b", &broken), ood("a_b", &broken)), "OOD set `a_b` would write its pictures as grid_a_b_*.png, like OOD set `a b`"),
        (ood("ID test", &broken), "like the ID test set"),
        (ood("***", &broken), "no letters or digits"),
    ];
    for (extra, needle) in cases {
        let config = eval_config(&dir, &model, &extra);
        let err = run_eval(&dir, &config).err().unwrap().to_string();
        assert!(err.contains(needle), "`{err}` should contain `{needle}`");
    }
    // Labels beyond the model's classes: named with the set and the sample, before pooling.
    let two_classes = model_file(&dir, 2);
    let config = eval_config(&dir, &two_classes, &ood("x", &broken));
    let err = run_eval(&dir, &config).err().unwrap().to_string();
    assert!(err.contains("profile set: ") && err.contains("entry 2") && err.contains("label 2, but the model has 2 classes"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A preprocessing that blows values up until the network overflows is an error naming the set
/// and the sample, not a table of NaN metrics.
#[test]
fn eval_of_overflowing_samples_names_the_set_and_sample() {
    let dir = common::temp_dir("hostile-eval-overflow");
    let model = model_file(&dir, 3);
    let config = eval_config(&dir, &model, "");
    let text = std::fs::read_to_string(&config).unwrap().replace("pad:4,gray2rgb", "pad:4,gray2rgb,normalize:-1:1e-38");
    std::fs::write(&config, text).unwrap();
    let err = run_eval(&dir, &config).err().unwrap().to_string();
    assert!(
        err.starts_with("profile set: idx:")
            && err.contains("[0:6]: entry 0 (sample 0 of the source data): the network's outputs are not finite"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
