//! Parameter search on cached pairs against network re-runs, and `nac eval` end to end on a
//! random WideResNet and IDX files written here.

mod common;

use nac::eval::metrics::auroc;
use nac::eval::{EvalConfig, EvalOptions};
use nac::model::synthetic::{random_inputs, SyntheticModel};
use nac::model::weights::StorageDtype;
use nac::model::ArchSpec;
use nac::nac::search::{search, Grid, LayerGrid, SearchSets};
use nac::nac::{LayerParams, PooledStates, Preset, Profile};

const ARCH: ArchSpec = ArchSpec::WideResNet { depth: 10, width: 2 };

fn grid() -> Grid {
    let layer = |name: &str, o: &[f64], m: &[usize], alpha: &[f64]| LayerGrid {
        layer: name.into(),
        o: o.to_vec(),
        m: m.to_vec(),
        alpha: alpha.to_vec(),
    };
    Grid {
        layers: vec![
            layer("avgpool", &[1.0, 3.0], &[50], &[10.0, 1000.0]),
            layer("block3", &[2.0], &[50, 500], &[1.0, 100.0]),
            layer("block1", &[1.0, 4.0], &[50], &[0.01]),
        ],
    }
}

/// The search re-bins cached pairs; the parameters it picks must give the same scores as a
/// profile built and scored by network passes, and every trial's AUROC must be what scoring
/// the cache with that trial's parameters gives.
#[test]
fn search_on_cached_pairs_matches_network_reruns() {
    let engine = common::engine();
    let mut model = engine.upload(SyntheticModel::new(ARCH, 10, 3).unwrap().network);
    let shape = |n: usize| [n, 3, 16, 16];
    let profile_input = random_inputs(24, 3, 16, 16, 1);
    let id_input = random_inputs(12, 3, 16, 16, 2);
    // OOD validation: the same kind of noise, a little stronger (a hard split, so the grid matters).
    let ood_input: Vec<f32> = random_inputs(12, 3, 16, 16, 3).iter().map(|v| v * 1.2).collect();
    let layers = ["avgpool", "block3", "block1"];
    let pool =
        |model: &mut nac::Model, input: &[f32], n: usize| PooledStates::compute(&engine, model, input, shape(n), &layers, None).unwrap();
    let sets = (pool(&mut model, &profile_input, 24), pool(&mut model, &id_input, 12), pool(&mut model, &ood_input, 12));
    let grid = grid();
    let found =
        search(&engine, &model.network, &grid, &SearchSets { profile: &sets.0, id_val: &sets.1, ood_val: &sets.2 }, "test").unwrap();

    assert_eq!(found.trials.len(), grid.combinations());
    assert_eq!(found.trials.len(), 2 * 2 * 4 * 2);
    assert_eq!(found.layer_evaluations, 4 + 4 + 2);
    let best = found.trials.iter().position(|t| t.auroc == found.best_auroc).unwrap();
    assert_eq!(found.trials[best].params, found.best, "the first maximum wins");
    assert!(found.trials.iter().all(|t| t.auroc <= found.best_auroc));
    // The grid must matter here, or the test proves little.
    let aurocs: Vec<f64> = found.trials.iter().map(|t| t.auroc).collect();
    assert!(aurocs.iter().any(|&a| a != found.best_auroc), "every combination scored the same: {aurocs:?}");

    // Network re-run with the chosen parameters.
    let mut rerun = Profile::new(&engine, &model.network, &found.best, "test").unwrap();
    rerun.add(&engine, &mut model, &profile_input, shape(24)).unwrap();
    let id = rerun.score(&engine, &mut model, &id_input, shape(12)).unwrap();
    let ood = rerun.score(&engine, &mut model, &ood_input, shape(12)).unwrap();
    let mut cached = Profile::new(&engine, &model.network, &found.best, "test").unwrap();
    cached.add_pooled(&engine, &sets.0).unwrap();
    assert_eq!(cached.counts(&engine).unwrap(), rerun.counts(&engine).unwrap(), "histograms");
    assert_eq!(cached.score_pooled(&engine, &sets.1).unwrap().score, id.score, "ID scores");
    assert_eq!(cached.score_pooled(&engine, &sets.2).unwrap().score, ood.score, "OOD scores");
    assert_eq!(auroc(&id.score, &ood.score), found.best_auroc);

    // Spot-check trials against scoring the cache with their parameters.
    for trial in found.trials.iter().step_by(5) {
        let mut p = Profile::new(&engine, &model.network, &trial.params, "test").unwrap();
        p.add_pooled(&engine, &sets.0).unwrap();
        let a = auroc(&p.score_pooled(&engine, &sets.1).unwrap().score, &p.score_pooled(&engine, &sets.2).unwrap().score);
        assert_eq!(a, trial.auroc, "{:?}", trial.params);
    }
}

/// A whole evaluation: defaults, ID-only selection, APS, MSP and energy; results files, the
/// Markdown table and the pictures.
#[test]
fn eval_writes_results_tables_and_pictures() {
    let dir = common::temp_dir("eval");
    let model_path = dir.join("model.safetensors");
    SyntheticModel::new(ARCH, 3, 5).unwrap().save(&model_path, StorageDtype::F16).unwrap();
    // ID: smooth gradients; OOD: checkerboards.
    let smooth = |n: usize, seed: usize| -> Vec<u8> {
        (0..n * 64).map(|i| ((i % 64 / 8 * 20 + i % 8 * 5 + (i / 64 + seed) * 7) % 200) as u8).collect()
    };
    let checker: Vec<u8> = (0..12 * 64).map(|i| if (i % 8 + i % 64 / 8 + i / 64) % 2 == 0 { 250 } else { 10 }).collect();
    let labels = |n: usize| (0..n).map(|i| (i % 3) as u8).collect::<Vec<_>>();
    let path = |name: &str| dir.join(format!("{name}-images-idx3-ubyte"));
    common::write_idx(&path("train"), &smooth(30, 0), 30, &labels(30));
    common::write_idx(&path("test"), &smooth(12, 40), 12, &labels(12));
    common::write_idx(&path("ood"), &checker, 12, &labels(12));
    let spec = |name: &str| format!("idx:{}", path(name).display());
    let toml = format!(
        r#"
preprocessing = "pad:4,gray2rgb,normalize:0.5:0.25"
batch = 7
[[models]]
path = "{model}"
[profile]
data = "{train}[0:18]"
samples = 12
[id]
test = "{test}"
val = "{train}[18:24]"
sanity = "{train}[24:30]"
[[ood]]
name = "checker"
group = "far"
data = "{ood}"
[[ood]]
name = "blurred"
group = "near"
data = "corrupt:gaussian_blur:5:{test}"
[nac]
layers = ["avgpool", "block3", "block1"]
[search]
ood_val = "corrupt:invert:1:{train}[18:24]"
id_only = true
[[search.layers]]
layer = "avgpool"
o = [1.0, 5.0]
m = [50]
alpha = [10.0, 100.0]
[[search.layers]]
layer = "block1"
o = [2.0]
m = [50]
alpha = [0.01, 1.0]
"#,
        model = model_path.display(),
        train = spec("train"),
        test = spec("test"),
        ood = spec("ood"),
    );
    let config_path = dir.join("eval.toml");
    std::fs::write(&config_path, toml).unwrap();
    let config = EvalConfig::load(&config_path).unwrap();
    let mut engine = common::engine();
    let out = dir.join("out");
    let report = nac::eval::run(&mut engine, &config, &EvalOptions { out: out.clone(), threads: 2, progress: false }).unwrap();

    let model = &report.models[0];
    let names: Vec<&str> = model.methods.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["NAC-UE (defaults)", "NAC-UE (ID-only selection)", "NAC-UE (APS)", "MSP", "Energy"]);
    assert_eq!((model.samples.profile, model.samples.id_test, model.samples.id_val), (12, 12, 6));
    assert!(model.accuracy.is_some_and(|a| (0.0..=1.0).contains(&a)));
    for method in &model.methods {
        assert_eq!(method.sets.len(), 2);
        for set in &method.sets {
            let m = &set.metrics;
            for v in [m.auroc, m.fpr95, m.aupr_in, m.aupr_out] {
                assert!((0.0..=1.0).contains(&v), "{} on {}: {m:?}", method.name, set.name);
            }
            assert_eq!(set.thresholds.len(), 2, "ID-only thresholds at 1 % and 5 %");
        }
        assert_eq!(method.far.as_ref().unwrap(), &method.sets[0].metrics, "far mean of one set");
        assert!(method.sanity_auroc.is_some());
    }
    let aps = &model.methods[2];
    let selection = aps.selection.as_ref().unwrap();
    assert_eq!(selection.combinations, 8);
    assert_eq!(aps.params.as_ref().unwrap().len(), 2, "searched scores use the grid's layers");
    assert_eq!(model.methods[0].params.as_ref().unwrap().len(), 3);
    // The host side of the pooling passes: parts of its time, the GPU waited on (lavapipe is
    // the same CPU, so that is where pooling's time goes).
    let host = model.pooling_host;
    let parts = [host.batch_wait_s, host.submit_s, host.gpu_wait_s];
    assert!(parts.iter().all(|&s| s >= 0.0) && parts.iter().sum::<f64>() <= model.pooling_seconds, "{host:?}, {} s", model.pooling_seconds);
    assert!(host.gpu_wait_s > 0.0 && host.submit_s > 0.0, "{host:?}");

    let md = std::fs::read_to_string(out.join("results.md")).unwrap();
    for needle in
        ["| OOD set | FPR@95", "**near (mean)**", "**far (mean)**", "## NAC-UE (APS)", "## Energy", "Selected by", "for decoded batches"]
    {
        assert!(md.contains(needle), "results.md lacks `{needle}`:\n{md}");
    }
    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 5 * 4, "{csv}");
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    assert_eq!(json["models"][0]["methods"].as_array().unwrap().len(), 5);
    for png in ["hist_nac_ue_defaults.png", "roc_energy.png", "grid_id_test_top.png", "grid_checker_bottom.png", "grid_blurred_top.png"] {
        let image = image::open(out.join("pictures").join(png)).unwrap_or_else(|e| panic!("{png}: {e}"));
        assert!(image.width() > 100 && image.height() > 100, "{png}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn eval_config_errors_name_the_problem() {
    let dir = common::temp_dir("eval-config");
    let path = dir.join("bad.toml");
    let base = "preprocessing = \"fmnist\"\n[[models]]\npath = \"m.safetensors\"\n[profile]\ndata = \"idx:a\"\n[id]\ntest = \"idx:b\"\n";
    let cases = [
        (format!("{base}[search]\ngrid = \"cifar10\"\nid_only = true\n"), "needs an ID validation set"),
        (format!("{base}[search]\ngrid = \"cifar10\"\n"), "selects nothing"),
        (
            format!("{base}[[ood]]\nname = \"x\"\ngroup = \"far\"\ndata = \"idx:c\"\n[search]\ngrid = \"cifar10\"\nood_val = \"idx:c\"\n"),
            "needs an ID validation",
        ),
        (format!("{base}bogus = 1\n"), "bogus"),
        (format!("{base}[[ood]]\nname = \"x\"\ngroup = \"middle\"\ndata = \"idx:c\"\n"), "middle"),
        (format!("{base}[nac]\nparams = [\"layer3:1/2\"]\n"), "layer3:1/2"),
        (format!("{base}[nac]\npreset = \"svhn\"\n"), "svhn"),
    ];
    for (text, needle) in cases {
        std::fs::write(&path, &text).unwrap();
        let err = EvalConfig::load(&path).unwrap_err().to_string();
        assert!(err.contains("bad.toml") && err.contains(needle), "`{err}` should name the file and `{needle}`");
    }
    let with_val = base.replace("test = \"idx:b\"\n", "test = \"idx:b\"\nval = \"idx:v\"\n");
    let leak =
        format!("{with_val}[[ood]]\nname = \"x\"\ngroup = \"far\"\ndata = \"idx:c\"\n[search]\ngrid = \"cifar10\"\nood_val = \"idx:c\"\n");
    std::fs::write(&path, leak).unwrap();
    let err = EvalConfig::load(&path).unwrap_err().to_string();
    assert!(err.contains("never takes part in selection"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A config written for CNNs (eval/fmnist.toml: preset and grid `cifar10`) runs unchanged on a
/// Vision Transformer checkpoint (heads from its metadata): the official ViT layers (layer_norm
/// and the last three blocks), the `imagenet-vit` defaults and grid (spec §8), by distance
/// from the end; the same config keeps `cifar10` for a CNN.
#[test]
fn a_cnn_config_resolves_to_the_vit_settings_for_a_vit() {
    let dir = common::temp_dir("eval-vit-config");
    let path = dir.join("vit.safetensors");
    SyntheticModel::new("vit-i16-p4-d4-w32-h4-m64".parse().unwrap(), 10, 5).unwrap().save(&path, StorageDtype::F32).unwrap();
    let vit = nac::model::load(&path, None).unwrap();
    let config = EvalConfig::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("eval/fmnist.toml")).unwrap();
    assert_eq!((config.preset().unwrap(), config.search.as_ref().unwrap().grid.as_deref()), (Preset::Cifar10, Some("cifar10")));
    let setup = config.nac_setup(&vit).unwrap();
    assert_eq!(setup.preset, Preset::ImagenetVit);
    assert_eq!(setup.layers, ["layer_norm", "layer_3", "layer_2", "layer_1"]);
    let want = [("layer_norm", 500.0, 50, 100.0), ("layer_3", 50.0, 500, 1.0), ("layer_2", 10.0, 500, 10.0), ("layer_1", 10.0, 1000, 1.0)];
    assert_eq!(setup.defaults, want.map(|(l, o, m, a)| LayerParams::new(l, o, m, a)));
    let layer = |name: &str, o: &[f64], m: &[usize], alpha: &[f64]| LayerGrid {
        layer: name.into(),
        o: o.to_vec(),
        m: m.to_vec(),
        alpha: alpha.to_vec(),
    };
    let grid = [
        layer("layer_norm", &[500.0], &[50, 500], &[100.0]),
        layer("layer_3", &[50.0, 500.0], &[50, 500], &[1.0, 10.0]),
        layer("layer_2", &[10.0, 50.0], &[50, 500], &[10.0]),
        layer("layer_1", &[10.0, 50.0], &[500, 1000], &[1.0]),
    ];
    assert_eq!(setup.grid.unwrap().layers, grid);

    let cnn = SyntheticModel::new(ARCH, 10, 5).unwrap().network;
    let setup = config.nac_setup(&cnn).unwrap();
    assert_eq!(
        (setup.preset, setup.layers.as_slice()),
        (Preset::Cifar10, ["avgpool", "block3", "block2", "block1"].map(String::from).as_slice())
    );
    assert_eq!(setup.defaults[1], LayerParams::new("block3", 100.0, 500, 1000.0));
    // The ViT preset named for a CNN is refused by name, before any pass.
    let mut named = config.clone();
    named.nac.preset = Some("imagenet-vit".into());
    let err = named.nac_setup(&cnn).unwrap_err().to_string();
    assert!(err.contains("imagenet-vit") && err.contains("wrn-10-2"), "{err}");
    assert_eq!(named.nac_setup(&vit).unwrap().preset, Preset::ImagenetVit);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `nac eval CONFIG --model A --model B` evaluates A and B instead of the config's models
/// (here a path that does not exist), as several checkpoints: mean ± std.
#[test]
fn eval_cli_model_flags_replace_the_config_models() {
    let dir = common::temp_dir("eval-cli");
    let models: Vec<_> = (0..2)
        .map(|seed| {
            let path = dir.join(format!("seed{seed}.safetensors"));
            SyntheticModel::new(ARCH, 3, 40 + seed).unwrap().save(&path, StorageDtype::F32).unwrap();
            path
        })
        .collect();
    let images: Vec<u8> = (0..16 * 64).map(|i| ((i * 37 + i / 64 * 11) % 251) as u8).collect();
    let labels: Vec<u8> = (0..16).map(|i| (i % 3) as u8).collect();
    let data = dir.join("set-images-idx3-ubyte");
    common::write_idx(&data, &images, 16, &labels);
    let spec = format!("idx:{}", data.display());
    let config = dir.join("eval.toml");
    std::fs::write(
        &config,
        format!(
            "preprocessing = \"pad:4,gray2rgb\"\npictures = false\n[[models]]\npath = \"{}\"\n[profile]\ndata = \"{spec}[0:8]\"\n[id]\ntest = \"{spec}[8:12]\"\n[[ood]]\nname = \"noise\"\ngroup = \"far\"\ndata = \"corrupt:gaussian_noise:5:{spec}[12:16]\"\n",
            dir.join("missing.safetensors").display()
        ),
    )
    .unwrap();
    let out = dir.join("out");
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_nac"))
        .arg("eval")
        .arg(&config)
        .arg("--out")
        .arg(&out)
        .args(models.iter().flat_map(|m| [std::ffi::OsStr::new("--model"), m.as_os_str()]))
        .output()
        .unwrap();
    assert!(run.status.success(), "nac eval failed: {}", String::from_utf8_lossy(&run.stderr));
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    let paths: Vec<&str> = json["models"].as_array().unwrap().iter().map(|m| m["path"].as_str().unwrap()).collect();
    let want: Vec<String> = models.iter().map(|m| m.display().to_string()).collect();
    assert_eq!(paths, want);
    let md = std::fs::read_to_string(out.join("results.md")).unwrap();
    assert!(md.contains("mean ± sample std over the 2 models") && md.contains(" ± "), "{md}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A ViT's one image size is checked on every set before the first pass: a preprocessing that
/// leaves another size is an error naming the set, the sample and the sizes.
#[test]
fn a_vit_refuses_sets_of_another_size_before_any_pass() {
    let dir = common::temp_dir("eval-vit-size");
    let model = dir.join("vit.safetensors");
    SyntheticModel::new("vit-i16-p4-d1-w8-h2-m12".parse().unwrap(), 3, 5).unwrap().save(&model, StorageDtype::F32).unwrap();
    let images = dir.join("a-images-idx3-ubyte");
    common::write_idx(&images, &(0..6 * 64).map(|i| (i % 251) as u8).collect::<Vec<_>>(), 6, &[0, 1, 2, 0, 1, 2]);
    let config = |preprocessing: &str| {
        let text = format!(
            "preprocessing = \"{preprocessing}\"\n[[models]]\npath = \"{}\"\n[profile]\ndata = \"idx:{spec}[0:4]\"\n[id]\ntest = \"idx:{spec}[4:6]\"\n[[ood]]\nname = \"o\"\ngroup = \"far\"\ndata = \"corrupt:invert:1:idx:{spec}\"\n",
            model.display(),
            spec = images.display()
        );
        EvalConfig::parse(&text, "vit.toml").unwrap()
    };
    let mut engine = common::engine();
    let options = EvalOptions { out: dir.join("out"), threads: 1, progress: false };
    let e = nac::eval::run(&mut engine, &config("gray2rgb"), &options).unwrap_err().to_string();
    assert!(e.contains("profile set") && e.contains("is 8×8 after the preprocessing") && e.contains("takes 16×16 images only"), "{e}");
    // `prepare` refuses it, before any set is pooled (nothing written).
    assert!(!dir.join("out/results.json").exists());
    assert!(nac::eval::run(&mut engine, &config("pad:4,gray2rgb"), &options).is_ok());
}
