//! The shipped weights (`weights/`) against PyTorch: the architecture is detected (a ViT's heads
//! from the `num_heads` metadata, a DMWideResNet's activation from `activation`), and the
//! engine's logits on the first bundled Fashion-MNIST test images, preprocessed by the `fmnist`
//! preset, equal PyTorch's (`tools/shipped_golden.py` → `tests/golden/shipped_models.json`, and
//! `shipped_dm_models.json` for the standard and robust DMWideResNets, whose PyTorch side is
//! RobustBench's class) to a relative error of 1e-4, with the same predictions.

mod common;

use std::path::Path;

use nac::data::{load_all, Dataset, Transform};

#[test]
fn shipped_models_match_pytorch_on_bundled_images() {
    check_golden("shipped_models.json", 3);
}

#[test]
fn shipped_dm_wide_resnets_match_robustbench_on_bundled_images() {
    check_golden("shipped_dm_models.json", 2);
}

fn check_golden(file: &str, models: usize) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let golden: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(root.join("tests/golden").join(file)).unwrap()).unwrap();
    let count = golden["count"].as_u64().unwrap() as usize;
    let spec = format!("idx:{}[0:{count}]", root.join(golden["images"].as_str().unwrap()).display());
    let batch = load_all(&Dataset::open(&spec).unwrap(), &Transform::preset("fmnist").unwrap(), None, 2).unwrap();
    assert_eq!(batch.shape, [count, 3, 32, 32]);
    let labels: Vec<usize> = golden["labels"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
    assert_eq!(batch.labels.as_deref(), Some(&labels[..]));

    let engine = common::engine();
    let entries = golden["models"].as_array().unwrap();
    assert_eq!(entries.len(), models, "every shipped model of {file} is in it");
    for entry in entries {
        let path = root.join(entry["path"].as_str().unwrap());
        let mut model = engine.load_model(&path, None).unwrap();
        // A DMWideResNet's name carries the activation the golden records.
        let arch = match entry["activation"].as_str() {
            Some(activation) => format!("{}-{activation}", entry["arch"].as_str().unwrap()),
            None => entry["arch"].as_str().unwrap().to_string(),
        };
        assert_eq!(model.network.spec.to_string(), arch, "{}: detected architecture", path.display());
        let logits = engine.predict(&mut model, &batch.input, batch.shape).unwrap();
        let want: Vec<f64> = entry["logits"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|row| row.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()))
            .collect();
        // New weights need new goldens: tools/shipped_golden.py.
        common::assert_close(&format!("{} logits", path.display()), &logits, &want, 1e-4);
        let predictions = |logits: &[f64]| -> Vec<usize> {
            logits.chunks(10).map(|row| (0..10).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap()).collect()
        };
        let got = predictions(&logits.iter().map(|&v| f64::from(v)).collect::<Vec<_>>());
        let expected = predictions(&want);
        assert_eq!(got, expected, "{}: predictions", path.display());
        let correct = got.iter().zip(&labels).filter(|(a, b)| a == b).count();
        assert!(correct * 10 >= count * 8, "{}: {correct} of {count} correct", path.display());
    }
}
