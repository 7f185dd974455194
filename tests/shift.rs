//! Distribution shift: the released CIFAR-10-C / CIFAR-10.1 / CIFAR-10.2 layouts on files
//! written here, combined perturbations in both orders, and `nac shift` end to end against
//! `nac eval` on the same sets.

mod common;

use std::io::Write;
use std::path::Path;

use nac::data::{Corruption, Dataset};
use nac::eval::shift::{SetKind, ShiftConfig, ShiftReport};
use nac::eval::EvalOptions;
use nac::model::synthetic::SyntheticModel;
use nac::model::weights::StorageDtype;
use nac::model::ArchSpec;
use nac::npy::{NpyArray, NpyDtype};

fn npy(shape: &[usize], dtype: NpyDtype, bytes: Vec<u8>) -> Vec<u8> {
    NpyArray { shape: shape.to_vec(), dtype, bytes }.to_bytes()
}

/// Image i of a test set: every pixel byte derived from (i, position), distinct per image.
fn pixels(n: usize, per: usize) -> Vec<u8> {
    (0..n * per).map(|k| ((k / per) * 31 + (k % per) * 7 % 101) as u8).collect()
}

fn err(spec: &str) -> String {
    Dataset::open(spec).map(|_| ()).unwrap_err().to_string()
}

/// The released CIFAR-10-C layout with 3 rows per severity (N = 15): severity s is rows
/// (s − 1)·N/5 … s·N/5 of the images and of labels.npy.
#[test]
fn cifar10c_severity_is_its_fifth_of_the_rows() {
    let dir = common::temp_dir("shift-c10c");
    let (n, per) = (15, 32 * 32 * 3);
    let images = pixels(n, per);
    std::fs::write(dir.join("gaussian_noise.npy"), npy(&[n, 32, 32, 3], NpyDtype::U8, images.clone())).unwrap();
    let labels: Vec<u8> = (0..n as u8).map(|i| i % 10).collect();
    std::fs::write(dir.join("labels.npy"), npy(&[n], NpyDtype::U8, labels.clone())).unwrap();
    for severity in 1..=5usize {
        let set = Dataset::open(&format!("cifar10c:{}:gaussian_noise:{severity}", dir.display())).unwrap();
        assert_eq!(set.len(), 3);
        assert_eq!(set.name(), format!("gaussian_noise_{severity}"));
        let rows = (severity - 1) * 3..severity * 3;
        assert_eq!(set.labels().unwrap(), labels[rows.clone()].iter().map(|&l| l as usize).collect::<Vec<_>>());
        for (i, row) in rows.enumerate() {
            let image = set.image(i).unwrap();
            assert_eq!((image.width, image.height, image.channels), (32, 32, 3));
            assert_eq!(image.pixels, images[row * per..(row + 1) * per], "severity {severity}, row {row}");
        }
    }
    // Errors name the file and what was expected.
    let spec = |name: &str, s: u8| format!("cifar10c:{}:{name}:{s}", dir.display());
    assert!(err(&spec("fog", 1)).contains("fog.npy"), "{}", err(&spec("fog", 1)));
    assert!(err(&spec("gaussian_noise", 6)).contains("expected an integer 1 to 5"));
    assert!(err(&spec("../x", 1)).contains("file stem"));
    std::fs::write(dir.join("shot_noise.npy"), npy(&[14, 32, 32, 3], NpyDtype::U8, pixels(14, per))).unwrap();
    let e = err(&spec("shot_noise", 2));
    assert!(e.contains("shot_noise.npy") && e.contains("multiple of 5"), "{e}");
    std::fs::write(dir.join("labels.npy"), npy(&[10], NpyDtype::U8, vec![0; 10])).unwrap();
    let e = err(&spec("gaussian_noise", 2));
    assert!(e.contains("labels.npy") && e.contains("10 labels for the 15 images"), "{e}");
    // A truncated file is refused from its header, before its rows are allocated.
    let mut bytes = npy(&[n, 32, 32, 3], NpyDtype::U8, images);
    bytes.truncate(bytes.len() - 100);
    std::fs::write(dir.join("contrast.npy"), bytes).unwrap();
    let e = err(&spec("contrast", 1));
    assert!(e.contains("contrast.npy") && e.contains("needs 46080 data bytes"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// CIFAR-10.1 as released (`cifar10.1_v6_data.npy`, int32 labels) through `npy:`; CIFAR-10.2's
/// `.npz` (`images` uint8, `labels` int64), stored and deflated, through `npz:`.
#[test]
fn cifar10_1_npy_and_cifar10_2_npz_layouts() {
    let dir = common::temp_dir("shift-natural");
    let (n, per) = (4, 32 * 32 * 3);
    let images = pixels(n, per);
    let labels = [3usize, 0, 9, 5];
    let data = dir.join("cifar10.1_v6_data.npy");
    let label_file = dir.join("cifar10.1_v6_labels.npy");
    std::fs::write(&data, npy(&[n, 32, 32, 3], NpyDtype::U8, images.clone())).unwrap();
    std::fs::write(&label_file, npy(&[n], NpyDtype::I32, labels.iter().flat_map(|&l| (l as i32).to_le_bytes()).collect())).unwrap();
    let set = Dataset::open(&format!("npy:{}:{}", data.display(), label_file.display())).unwrap();
    assert_eq!(set.labels().unwrap(), labels);
    assert_eq!(set.image(2).unwrap().pixels, images[2 * per..3 * per]);

    let label_bytes = npy(&[n], NpyDtype::I64, labels.iter().flat_map(|&l| (l as i64).to_le_bytes()).collect());
    let image_bytes = npy(&[n, 32, 32, 3], NpyDtype::U8, images.clone());
    let write_npz = |path: &Path, method: zip::CompressionMethod, entries: &[(&str, &[u8])]| {
        let mut zip = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
        for (name, bytes) in entries {
            zip.start_file(*name, zip::write::SimpleFileOptions::default().compression_method(method)).unwrap();
            zip.write_all(bytes).unwrap();
        }
        zip.finish().unwrap();
    };
    for method in [zip::CompressionMethod::Stored, zip::CompressionMethod::Deflated] {
        let path = dir.join("cifar102_test.npz");
        write_npz(&path, method, &[("images.npy", &image_bytes), ("labels.npy", &label_bytes)]);
        let set = Dataset::open(&format!("npz:{}", path.display())).unwrap();
        assert_eq!((set.len(), set.labels().unwrap()), (4, &labels[..]), "{method:?}");
        assert_eq!(set.image(3).unwrap().pixels, images[3 * per..], "{method:?}");
        assert_eq!(set.name(), "cifar102_test");
    }
    let path = dir.join("bad.npz");
    write_npz(&path, zip::CompressionMethod::Stored, &[("data.npy", &image_bytes)]);
    let e = err(&format!("npz:{}", path.display()));
    assert!(e.contains("bad.npz") && e.contains("no `images.npy` entry") && e.contains("data.npy"), "{e}");
    write_npz(
        &path,
        zip::CompressionMethod::Stored,
        &[("images.npy", &image_bytes), ("labels.npy", &label_bytes[..label_bytes.len() - 8])],
    );
    let e = err(&format!("npz:{}", path.display()));
    assert!(e.contains("entry labels.npy") && e.contains("needs 32 data bytes"), "{e}");
    std::fs::write(&path, b"not a zip").unwrap();
    assert!(err(&format!("npz:{}", path.display())).contains("not an .npz"));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `then:A:s:B:t:SPEC` is A first, then B, each step with its own seed; the other order is a
/// different set, and each equals applying the two corruptions by hand.
#[test]
fn combined_perturbations_follow_the_written_order() {
    let dir = common::temp_dir("shift-then");
    let path = dir.join("set-images-idx3-ubyte");
    let n = 6;
    common::write_idx(&path, &pixels(n, 64), n, &[0, 1, 2, 0, 1, 2]);
    let base = format!("idx:{}", path.display());
    let (a, b) = ((Corruption::parse("gaussian_noise").unwrap(), 3u8), (Corruption::parse("contrast").unwrap(), 4u8));
    let ab = Dataset::open(&format!("then:gaussian_noise:3:contrast:4:{base}")).unwrap();
    let ba = Dataset::open(&format!("then:contrast:4:gaussian_noise:3:{base}")).unwrap();
    let clean = Dataset::open(&base).unwrap();
    assert_eq!(ab.labels(), clean.labels());
    let seed = |i: usize, k: u64| i as u64 ^ k.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut differ = 0;
    for i in 0..n {
        let x = clean.image(i).unwrap();
        let by_hand_ab = b.0.apply(&a.0.apply(&x, a.1, seed(i, 0)).unwrap(), b.1, seed(i, 1)).unwrap();
        let by_hand_ba = a.0.apply(&b.0.apply(&x, b.1, seed(i, 0)).unwrap(), a.1, seed(i, 1)).unwrap();
        assert_eq!(ab.image(i).unwrap(), by_hand_ab, "A then B, image {i}");
        assert_eq!(ba.image(i).unwrap(), by_hand_ba, "B then A, image {i}");
        differ += (by_hand_ab != by_hand_ba) as usize;
        // The first step is exactly `corrupt:`.
        assert_eq!(
            a.0.apply(&x, a.1, seed(i, 0)).unwrap(),
            Dataset::open(&format!("corrupt:gaussian_noise:3:{base}")).unwrap().image(i).unwrap()
        );
    }
    assert_eq!(differ, n, "the two orders must give different images");
    // Programmatic sets carry the same spec, and a slice binds to the whole chain.
    assert_eq!(clean.corrupted_steps(&[a, b]).spec(), ab.spec());
    let sliced = Dataset::open(&format!("then:gaussian_noise:3:contrast:4:{base}[2:5]")).unwrap();
    assert_eq!(sliced.image(0).unwrap(), ab.image(2).unwrap());
    // Three steps; errors.
    assert_eq!(Dataset::open(&format!("then:invert:1:contrast:2:invert:1:{base}")).unwrap().len(), n);
    assert!(err(&format!("then:gaussian_noise:3:{base}")).contains("step 2"), "{}", err(&format!("then:gaussian_noise:3:{base}")));
    assert!(err(&format!("then:gaussian_noise:9:contrast:1:{base}")).contains("severity `9`"));
    assert!(err(&format!("then:fogg:1:contrast:1:{base}")).contains("fogg"));
    std::fs::remove_dir_all(&dir).unwrap();
}

const ARCH: ArchSpec = ArchSpec::WideResNet { depth: 10, width: 2 };

/// A tiny study: a random WRN-10-2, 8×8 gray IDX sets, two corruptions × two severities, an
/// `.npz` natural shift and one pair in both orders. Returns the config's path.
fn tiny_study(dir: &Path, pictures: bool) -> std::path::PathBuf {
    let model = dir.join("model.safetensors");
    SyntheticModel::new(ARCH, 3, 11).unwrap().save(&model, StorageDtype::F32).unwrap();
    let smooth = |n: usize, seed: usize| -> Vec<u8> {
        (0..n * 64).map(|i| ((i % 64 / 8 * 20 + i % 8 * 5 + (i / 64 + seed) * 7) % 200) as u8).collect()
    };
    let labels = |n: usize| (0..n).map(|i| (i % 3) as u8).collect::<Vec<_>>();
    let train = dir.join("train-images-idx3-ubyte");
    let test = dir.join("test-images-idx3-ubyte");
    common::write_idx(&train, &smooth(12, 0), 12, &labels(12));
    common::write_idx(&test, &smooth(10, 40), 10, &labels(10));
    let natural = dir.join("natural.npz");
    let mut zip = zip::ZipWriter::new(std::fs::File::create(&natural).unwrap());
    let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    zip.start_file("images.npy", options).unwrap();
    zip.write_all(&npy(&[8, 8, 8], NpyDtype::U8, smooth(8, 90).iter().map(|v| v / 2 + 60).collect())).unwrap();
    zip.start_file("labels.npy", options).unwrap();
    zip.write_all(&npy(&[8], NpyDtype::I64, labels(8).iter().flat_map(|&l| (l as i64).to_le_bytes()).collect())).unwrap();
    zip.finish().unwrap();
    let config = dir.join("shift.toml");
    std::fs::write(
        &config,
        format!(
            r#"
preprocessing = "pad:4,gray2rgb,normalize:0.5:0.25"
batch = 4
pictures = {pictures}
[[models]]
path = "{model}"
[profile]
data = "idx:{train}"
[nac]
layers = ["avgpool", "block3", "block1"]
[shift]
clean = "idx:{test}"
corruptions = ["gaussian_noise", "contrast"]
severities = [2, 5]
pairs = [["gaussian_noise:5", "contrast:5"]]
histograms = ["contrast:5", "blend"]
[[shift.natural]]
name = "blend"
data = "npz:{natural}"
"#,
            model = model.display(),
            train = train.display(),
            test = test.display(),
            natural = natural.display(),
        ),
    )
    .unwrap();
    config
}

/// `nac shift` on the tiny study: every table and picture, and numbers that agree with each
/// other (per-corruption means, the pairs' differences, the correlation).
#[test]
fn shift_cli_writes_tables_and_pictures() {
    let dir = common::temp_dir("shift-cli");
    let config = tiny_study(&dir, true);
    let out = dir.join("out");
    common::nac_ok(&["shift", common::s(&config), "--out", common::s(&out), "--threads", "2"]);
    let report: ShiftReport = serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    let m = &report.models[0];
    let names: Vec<&str> = m.sets.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "gaussian_noise:2",
            "gaussian_noise:5",
            "contrast:2",
            "contrast:5",
            "blend",
            "gaussian_noise:5>contrast:5",
            "contrast:5>gaussian_noise:5"
        ]
    );
    assert_eq!(m.sets[5].kind, SetKind::Pair { first: "gaussian_noise:5".into(), second: "contrast:5".into() });
    assert_eq!(m.sets[5].spec, format!("then:gaussian_noise:5:contrast:5:{}", m.clean.spec));
    for s in &m.sets {
        assert_eq!(s.samples, if s.name == "blend" { 8 } else { 10 });
        assert!(s.accuracy.is_some_and(|a| (0.0..=1.0).contains(&a)));
        for x in [&s.nac, &s.msp, &s.energy] {
            assert!((0.0..=1.0).contains(&x.auroc) && (0.0..=1.0).contains(&x.fpr95), "{}: {x:?}", s.name);
        }
        assert!((s.nac.delta - (s.nac.mean - m.clean.mean_nac)).abs() < 1e-12);
    }
    let gauss = &m.corruptions[0];
    assert_eq!((gauss.name.as_str(), gauss.sets), ("gaussian_noise", 2));
    assert!((gauss.nac.auroc - (m.sets[0].nac.auroc + m.sets[1].nac.auroc) / 2.0).abs() < 1e-12);
    assert_eq!(m.sweep_mean.as_ref().unwrap().sets, 4);
    let pair = &m.pairs[0];
    assert_eq!((pair.a.as_str(), pair.b.as_str()), ("gaussian_noise:5", "contrast:5"));
    assert!((pair.score_difference - (m.sets[5].nac.mean - m.sets[6].nac.mean).abs()).abs() < 1e-15);
    assert!(pair.score_difference > 0.0, "the two orders are different sets");
    let c = m.correlation.as_ref().unwrap();
    let (acc, nac): (Vec<f64>, Vec<f64>) = m.sets.iter().map(|s| (s.accuracy.unwrap(), s.nac.mean)).unzip();
    assert_eq!(c.sets, 7);
    assert_eq!(c.pearson, nac::nac::pearson(&acc, &nac));
    assert_eq!(c.spearman, nac::nac::spearman(&acc, &nac));

    let md = std::fs::read_to_string(out.join("results.md")).unwrap();
    for needle in ["### NAC-UE AUROC ×100 by severity", "| corruption | s2 | s5 | mean |", "**sweep (mean)**", "|A→B − B→A|", "Pearson"]
    {
        assert!(md.contains(needle), "results.md lacks `{needle}`:\n{md}");
    }
    assert_eq!(std::fs::read_to_string(out.join("results.csv")).unwrap().lines().count(), 1 + 1 + 7);
    for png in [
        "heatmap_auroc.png",
        "heatmap_accuracy.png",
        "scatter_nac_accuracy.png",
        "bar_delta_nac.png",
        "pairs_delta.png",
        "pairs_order.png",
        "hist_contrast_5.png",
        "hist_blend.png",
    ] {
        let image = image::open(out.join("pictures").join(png)).unwrap_or_else(|e| panic!("{png}: {e}"));
        assert!(image.width() > 100 && image.height() > 100, "{png}");
    }
    if let Some(keep) = std::env::var_os("NAC_PLOT_PREVIEW") {
        for entry in std::fs::read_dir(out.join("pictures")).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), Path::new(&keep).join(entry.file_name())).unwrap();
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The suite's per-set AUROC and FPR@95 of NAC-UE, MSP and energy equal `nac eval` run with the
/// clean set as ID test and the shifted sets as OOD sets, with the same parameters.
#[test]
fn shift_metrics_equal_nac_eval_on_the_same_sets() {
    let dir = common::temp_dir("shift-eval");
    let config = ShiftConfig::load(&tiny_study(&dir, false)).unwrap();
    let mut engine = common::engine();
    let options = |name: &str| EvalOptions { out: dir.join(name), threads: 2, progress: false };
    let shift = nac::eval::shift::run(&mut engine, &config, &options("shift")).unwrap();
    let eval = nac::eval::run(&mut engine, &config.as_eval_config().unwrap(), &options("eval")).unwrap();
    let (s, e) = (&shift.models[0], &eval.models[0]);
    assert_eq!(s.clean.accuracy, e.accuracy);
    let method = |name: &str| e.methods.iter().find(|m| m.name == name).unwrap();
    assert_eq!(&s.params, method("NAC-UE (defaults)").params.as_ref().unwrap());
    for (name, pick) in [
        ("NAC-UE (defaults)", (|x: &nac::eval::shift::ShiftSet| &x.nac) as fn(&nac::eval::shift::ShiftSet) -> &nac::eval::shift::Shifted),
        ("MSP", |x| &x.msp),
        ("Energy", |x| &x.energy),
    ] {
        let m = method(name);
        assert_eq!(m.sets.len(), s.sets.len());
        for (set, row) in s.sets.iter().zip(&m.sets) {
            assert_eq!(set.name, row.name);
            assert_eq!((pick(set).auroc, pick(set).fpr95), (row.metrics.auroc, row.metrics.fpr95), "{name} on {}", set.name);
        }
    }
    // Parameters from that eval run's results.json are read back (the defaults method here).
    let mut from = config.clone();
    from.params_from = Some(dir.join("eval/results.json"));
    from.params_method = Some("NAC-UE (defaults)".into());
    from.shift.corruptions = vec!["contrast".into()];
    from.shift.severities = vec![5];
    from.shift.pairs.clear();
    from.shift.natural.clear();
    from.shift.histograms.clear();
    let again = nac::eval::shift::run(&mut engine, &from, &options("from")).unwrap();
    assert_eq!(again.models[0].sets[0].nac, s.sets[3].nac, "contrast:5 with the same parameters");
    assert!(again.models[0].params_source.contains("results.json"));
    from.params_method = Some("NAC-UE (APS)".into());
    let e = nac::eval::shift::run(&mut engine, &from, &options("from")).unwrap_err().to_string();
    assert!(e.contains("no NAC method `NAC-UE (APS)`") && e.contains("NAC-UE (defaults)"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn shift_config_errors_name_the_field() {
    let base =
        "preprocessing = \"fmnist\"\n[[models]]\npath = \"m.safetensors\"\n[profile]\ndata = \"idx:a\"\n[shift]\nclean = \"idx:b\"\n";
    let cases = [
        ("corruptions = [\"fogg\"]\n", "shift.corruptions[0]"),
        ("severities = [0]\n", "shift.severities[0] is 0"),
        ("pairs = [[\"contrast:2\", \"contrast:2\"]]\n", "two different steps"),
        ("pairs = [[\"contrast\", \"invert:1\"]]\n", "shift.pairs[0]"),
        ("histograms = [\"nope\"]\n", "shift.histograms[0]"),
        ("released_slice = \"[0:10]\"\n", "needs shift.released"),
        ("corruptions = []\n", "no shifted sets"),
        ("corruptions = [\"contrast\", \"contrast\"]\n", "asked for twice"),
    ];
    for (extra, needle) in cases {
        let e = ShiftConfig::parse(&format!("{base}{extra}"), "s.toml").unwrap_err().to_string();
        assert!(e.starts_with("s.toml") && e.contains(needle), "`{e}` should name `{needle}`");
    }
    let e = ShiftConfig::parse(&format!("params_method = \"x\"\n{base}"), "s.toml").unwrap_err().to_string();
    assert!(e.contains("params_method needs params_from"), "{e}");
    let released =
        ShiftConfig::parse(&format!("{base}released = \"C10C\"\nreleased_slice = \"[0:100]\"\ncorruptions = [\"contrast\"]\n"), "s.toml")
            .unwrap();
    let eval = released.as_eval_config().unwrap();
    assert_eq!(
        eval.ood.iter().map(|o| o.data.as_str()).collect::<Vec<_>>(),
        (1..=5).map(|s| format!("cifar10c:C10C:contrast:{s}[0:100]")).collect::<Vec<_>>()
    );
}
