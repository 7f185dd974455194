//! `nac eval` with every detector: they share the passes (counted: adding detectors adds no
//! network pass), a swept detector is selected on the validation sets, and the report carries
//! the methods × datasets table, timings and the AUROC bar chart. The only test of this binary
//! that pools, so the process-wide pass counter sees only its evaluations.

mod common;

use nac::detect::perturb;
use nac::eval::{EvalConfig, EvalOptions};
use nac::model::synthetic::SyntheticModel;
use nac::model::weights::StorageDtype;
use nac::model::ArchSpec;
use nac::nac::PooledStates;

#[test]
fn detectors_share_the_passes_and_fill_the_comparison_table() {
    let dir = common::temp_dir("detect-eval");
    let model_path = dir.join("model.safetensors");
    SyntheticModel::new(ArchSpec::WideResNet { depth: 10, width: 1 }, 3, 5).unwrap().save(&model_path, StorageDtype::F32).unwrap();
    let smooth = |n: usize, seed: usize| -> Vec<u8> {
        (0..n * 64).map(|i| ((i % 64 / 8 * 20 + i % 8 * 5 + (i / 64 + seed) * 7) % 200) as u8).collect()
    };
    let checker: Vec<u8> = (0..12 * 64).map(|i| if (i % 8 + i % 64 / 8 + i / 64) % 2 == 0 { 250 } else { 10 }).collect();
    let labels = |n: usize| (0..n).map(|i| (i % 3) as u8).collect::<Vec<_>>();
    let path = |name: &str| dir.join(format!("{name}-images-idx3-ubyte"));
    common::write_idx(&path("train"), &smooth(46, 0), 46, &labels(46));
    common::write_idx(&path("test"), &smooth(12, 40), 12, &labels(12));
    common::write_idx(&path("ood"), &checker, 12, &labels(12));
    let spec = |name: &str| format!("idx:{}", path(name).display());
    let vit_path = dir.join("vit.safetensors");
    SyntheticModel::new("vit-i16-p4-d2-w16-h2-m24".parse().unwrap(), 3, 6).unwrap().save(&vit_path, StorageDtype::F32).unwrap();
    // (model, its feature layer, a stage): the WRN's avgpool and block1, the ViT's layer_norm
    // (class token) and its first block's ln_2.
    let config_for = |detectors: &str, (model, feature, stage): (&std::path::Path, &str, &str)| {
        let text = format!(
            r#"
preprocessing = "pad:4,gray2rgb,normalize:0.5:0.25"
batch = 7
detectors = [{detectors}]
[[models]]
path = "{model}"
[profile]
data = "{train}[0:30]"
[id]
test = "{test}"
val = "{train}[30:38]"
sanity = "{train}[38:46]"
[[ood]]
name = "checker"
group = "far"
data = "{ood}"
[[ood]]
name = "blurred"
group = "near"
data = "corrupt:gaussian_blur:5:{test}"
[nac]
layers = ["{feature}", "{stage}"]
[search]
ood_val = "corrupt:invert:1:{train}[30:38]"
[[search.layers]]
layer = "{stage}"
o = [2.0]
m = [50]
alpha = [0.01, 1.0]
[[search.layers]]
layer = "{feature}"
o = [1.0]
m = [50]
alpha = [10.0]
"#,
            model = model.display(),
            train = spec("train"),
            test = spec("test"),
            ood = spec("ood"),
        );
        EvalConfig::parse(&text, "detect-eval.toml").unwrap()
    };
    let config = |detectors: &str| config_for(detectors, (&model_path, "avgpool", "block1"));
    let mut engine = common::engine();
    let run_counted = |engine: &mut nac::Engine, detectors: &str, out: &str| {
        let before = (PooledStates::passes(), perturb::passes());
        let report = nac::eval::run(engine, &config(detectors), &EvalOptions { out: dir.join(out), threads: 2, progress: false }).unwrap();
        (report, PooledStates::passes() - before.0, perturb::passes() - before.1)
    };
    let run = |engine: &mut nac::Engine, detectors: &str, out: &str| {
        let (report, pooled, perturbed) = run_counted(engine, detectors, out);
        assert_eq!(perturbed, 0, "{detectors}: no input perturbation");
        (report, pooled)
    };
    let (_, one) = run(&mut engine, r#""msp""#, "one");
    // Every method but SHE, which needs a correctly classified profiling sample of every class
    // (a random model has none for some; the golden test covers it). Gram reads block1's
    // statistics, computed in the same pass.
    let all = r#""msp", "mls", "ebo", "gen:gamma=0.1|1", "gradnorm", "react", "dice", "ash", "knn:K=3", "vim:dim=8", "mds", "rmds", "ddu", "kde", "gram""#;
    let (report, many) = run(&mut engine, all, "all");
    // profile, ID test, ID val, sanity, two OOD sets, OOD val: one pass each, however many detectors.
    assert_eq!((one, many), (7, 7));

    let names: Vec<&str> = report.models[0].methods.iter().map(|m| m.name.as_str()).collect();
    for want in [
        "NAC-UE (defaults)",
        "NAC-UE (APS)",
        "MSP",
        "MaxLogit",
        "Energy",
        "GEN (APS)",
        "KNN (K=3)",
        "ViM (dim=8)",
        "DDU (class Gaussians)",
        "KDE",
        "Gram",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    let gen = report.models[0].methods.iter().find(|m| m.name == "GEN (APS)").unwrap();
    let selection = gen.selection.as_ref().unwrap();
    assert_eq!(selection.combinations, 2);
    assert!(gen.settings.as_deref().is_some_and(|s| s.starts_with("gamma=")), "{:?}", gen.settings);
    let md = std::fs::read_to_string(dir.join("all/results.md")).unwrap();
    assert!(md.contains("## Methods × datasets"), "{md}");
    assert!(md.contains("| method | checker FPR@95 | checker AUROC | blurred FPR@95 | blurred AUROC |"), "{md}");
    assert!(md.contains("**"), "no best value in bold:\n{md}");
    assert!(md.contains("| KDE | bandwidth=0.2 |"), "timing table:\n{md}");
    let json = std::fs::read_to_string(dir.join("all/results.json")).unwrap();
    assert!(json.contains("\"fit_seconds\"") && json.contains("\"settings\": \"K=3\""));
    let csv = std::fs::read_to_string(dir.join("all/results.csv")).unwrap();
    assert!(csv.lines().any(|l| l.contains(",ViM (dim=8),checker,far,")), "{csv}");
    assert!(dir.join("all/pictures/auroc_methods.png").exists());

    // An input-perturbation method costs a gradient pass per gradient setting (ODIN's T) and a forward pass per ε on each set
    // it scores (ID test, ID val, sanity, two OOD sets: 5), and for a sweep on both criterion
    // sets (ID val, OOD val) per candidate group, the winner's ID val reused.
    for (detector, extra, name) in [
        (r#""odin""#, 5 * 2, "ODIN"),
        (r#""odin:T=1|1000""#, 2 * 2 * 2 + 4 * 2, "ODIN (APS)"),
        (r#""odin:T=1000,eps=0.0014|0.0028""#, 2 * (1 + 2) + 4 * 2, "ODIN (APS)"),
        // DDU+ip: one gradient pass seeded at the features, one forward per ε, the same way.
        (r#""ddu+ip""#, 5 * 2, "DDU+ip"),
        (r#""kde+ip""#, 5 * 2, "KDE+ip"),
        // MDSEns: seeded at block1 (layer 0), whose means the forward pass reads.
        (r#""mdsens""#, 5 * 2, "MDSEns"),
        (r#""mdsens:layer=3""#, 5 * 2, "MDSEns (layer=3, eps=0.0014)"),
    ] {
        let (report, pooled, perturbed) = run_counted(&mut engine, detector, "odin");
        assert_eq!((pooled, perturbed), (7, extra), "{detector}");
        let odin = report.models[0].methods.iter().find(|m| m.name == name).unwrap_or_else(|| panic!("{name} in {detector}"));
        assert!(odin.sets.iter().all(|s| s.metrics.auroc.is_finite()) && odin.sanity_auroc.is_some(), "{detector}");
        assert_eq!(odin.selection.as_ref().map_or(1, |s| s.combinations), if name.ends_with("(APS)") { 2 } else { 1 }, "{detector}");
    }

    // A Vision Transformer: the same detectors on its class-token features, from the same passes.
    let before = PooledStates::passes();
    let options = EvalOptions { out: dir.join("vit"), threads: 2, progress: false };
    let report = nac::eval::run(&mut engine, &config_for(all, (&vit_path, "layer_norm", "layer_0")), &options).unwrap();
    assert_eq!(PooledStates::passes() - before, 7);
    let methods = &report.models[0].methods;
    assert_eq!(methods.len(), names.len(), "{:?}", methods.iter().map(|m| &m.name).collect::<Vec<_>>());
    let csv = std::fs::read_to_string(dir.join("vit/results.csv")).unwrap();
    assert!(csv.lines().any(|l| l.contains(",ViM (dim=8),checker,far,")) && !csv.contains("NaN"), "{csv}");
    // MDSEns on a ViT block is refused before any pass: its gradient cannot start there.
    let before = PooledStates::passes();
    let err =
        nac::eval::run(&mut engine, &config_for(r#""mdsens""#, (&vit_path, "layer_norm", "layer_0")), &options).unwrap_err().to_string();
    assert!(err.contains("detector `mdsens`") && err.contains("layer_0") && err.contains("layer=2"), "{err}");
    assert_eq!(PooledStates::passes(), before);
}

/// Detector entries are checked with the config, before any file is opened, naming the entry.
#[test]
fn detector_config_errors_name_the_entry() {
    let base = r#"
preprocessing = "fmnist"
DETECTORS
[[models]]
path = "m.safetensors"
[profile]
data = "idx:train"
[id]
test = "idx:test"
"#;
    for (detectors, want) in [
        (r#"detectors = ["msp", "odim"]"#, "detectors[1]: unknown detector `odim`"),
        (r#"detectors = ["odin:eps=0.001|0.002"]"#, "detectors[0]: `odin:eps=0.001|0.002` sweeps its parameters"),
        (r#"detectors = ["gen:gamma=0.1|1"]"#, "detectors[0]: `gen:gamma=0.1|1` sweeps its parameters, which needs a [search] section"),
        (r#"detectors = ["knn:k=5"]"#, "knn has no parameter `k` (it has: K)"),
        (r#"detectors = ["ebo:T=inf"]"#, "`inf` is not a finite number"),
        (r#"detectors = ["msp", "msp"]"#, "detectors[1]: `msp` is listed twice"),
    ] {
        let err = EvalConfig::parse(&base.replace("DETECTORS", detectors), "c.toml").unwrap_err().to_string();
        assert!(err.contains(want), "{detectors}: {err}");
    }
}
