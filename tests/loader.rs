//! Checkpoint loading: every error class names the file and tensor with what was expected and
//! found; f16/bf16 checkpoints convert exactly; detection covers every architecture.

mod common;

use std::path::{Path, PathBuf};

use nac::model::arch::{self, ArchSpec};
use nac::model::synthetic::SyntheticModel;
use nac::model::weights::{serialize_tensors, StorageDtype, TensorStore};
use nac::Error;
use safetensors::tensor::TensorView;
use safetensors::Dtype;

fn temp_path(name: &str) -> PathBuf {
    common::temp_dir("loader").join(name)
}

fn load_err(path: &Path, spec: Option<ArchSpec>) -> String {
    match nac::model::load(path, spec) {
        Ok(net) => panic!("{} loaded as {} but should have failed", path.display(), net.spec),
        Err(e) => e.to_string(),
    }
}

fn resnet18_tensors() -> Vec<(String, Vec<usize>, Vec<f32>)> {
    SyntheticModel::new(ArchSpec::ResNet18_32x32, 10, 7).unwrap().tensors
}

fn write(name: &str, tensors: &[(String, Vec<usize>, Vec<f32>)]) -> PathBuf {
    let path = temp_path(name);
    std::fs::write(&path, serialize_tensors(tensors, StorageDtype::F32, None).unwrap()).unwrap();
    path
}

#[track_caller]
fn assert_mentions(message: &str, parts: &[&str]) {
    for p in parts {
        assert!(message.contains(p), "error message `{message}` should mention `{p}`");
    }
}

#[test]
fn missing_tensor_is_named() {
    let mut t = resnet18_tensors();
    t.retain(|(n, _, _)| n != "layer3.1.bn2.running_var");
    let path = write("missing.safetensors", &t);
    assert_mentions(&load_err(&path, None), &["missing.safetensors", "missing tensor `layer3.1.bn2.running_var`", "[256]"]);
}

#[test]
fn wrong_shape_is_named_with_expected_and_found() {
    let mut t = resnet18_tensors();
    let conv = t.iter_mut().find(|(n, _, _)| n == "layer2.0.conv2.weight").unwrap();
    conv.1 = vec![128, 128, 1, 9];
    let path = write("shape.safetensors", &t);
    assert_mentions(
        &load_err(&path, None),
        &["shape.safetensors", "tensor `layer2.0.conv2.weight`", "expected shape [128, 128, 3, 3]", "found [128, 128, 1, 9]"],
    );
}

#[test]
fn unsupported_dtype_is_named() {
    let t = resnet18_tensors();
    let ints: Vec<u8> = vec![0u8; 10 * 512 * 4];
    let mut encoded: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = t
        .iter()
        .filter(|(n, _, _)| n != "fc.weight")
        .map(|(n, s, d)| (n.clone(), Dtype::F32, s.clone(), d.iter().flat_map(|v| v.to_le_bytes()).collect()))
        .collect();
    encoded.push(("fc.weight".into(), Dtype::I32, vec![10, 512], ints));
    let views: Vec<(String, TensorView)> =
        encoded.iter().map(|(n, dt, s, b)| (n.clone(), TensorView::new(*dt, s.clone(), b).unwrap())).collect();
    let path = temp_path("dtype.safetensors");
    std::fs::write(&path, safetensors::serialize(views, None).unwrap()).unwrap();
    assert_mentions(&load_err(&path, None), &["dtype.safetensors", "tensor `fc.weight`", "I32", "expected F32, F16 or BF16"]);
}

#[test]
fn truncated_file_is_rejected() {
    let path = write("full.safetensors", &resnet18_tensors());
    let bytes = std::fs::read(&path).unwrap();
    for cut in [4, 100, bytes.len() / 2, bytes.len() - 1] {
        let truncated = temp_path(&format!("truncated{cut}.safetensors"));
        std::fs::write(&truncated, &bytes[..cut]).unwrap();
        assert_mentions(&load_err(&truncated, None), &[&format!("truncated{cut}.safetensors"), "not a valid safetensors file"]);
    }
}

#[test]
fn unknown_architecture_and_extra_tensors_are_rejected() {
    let path = write("mlp.safetensors", &[("encoder.weight".into(), vec![4, 4], vec![0.0; 16])]);
    assert_mentions(&load_err(&path, None), &["mlp.safetensors", "unknown architecture", "encoder.weight"]);

    let mut t = resnet18_tensors();
    t.push(("layer5.0.conv1.weight".into(), vec![1], vec![0.0]));
    let path = write("extra.safetensors", &t);
    assert_mentions(&load_err(&path, None), &["extra.safetensors", "unexpected tensor `layer5.0.conv1.weight`", "resnet18_32x32"]);

    // An explicit architecture that does not fit the file.
    let path = write("resnet.safetensors", &resnet18_tensors());
    assert_mentions(
        &load_err(&path, Some(ArchSpec::WideResNet { depth: 16, width: 4 })),
        &["tensor `conv1.weight`", "expected shape [16, 3, 3, 3]", "found [64, 3, 3, 3]"],
    );
    assert!("wrn-15-2".parse::<ArchSpec>().is_err());
    assert!("resnet19".parse::<ArchSpec>().is_err());
}

#[test]
fn detection_covers_every_architecture() {
    for spec in [
        ArchSpec::ResNet18_32x32,
        ArchSpec::TorchResNet { depth: 18 },
        ArchSpec::TorchResNet { depth: 34 },
        ArchSpec::TorchResNet { depth: 50 },
        ArchSpec::TorchResNet { depth: 101 },
        ArchSpec::WideResNet { depth: 16, width: 4 },
        ArchSpec::WideResNet { depth: 28, width: 10 },
        ArchSpec::WideResNet { depth: 10, width: 1 },
    ] {
        let model = SyntheticModel::new(spec, 7, 1).unwrap();
        let bytes = model.to_safetensors(StorageDtype::BF16).unwrap();
        let store = TensorStore::from_bytes(Path::new("mem.safetensors"), &bytes).unwrap();
        assert_eq!(arch::detect(&store).unwrap(), spec);
        let net = arch::from_store(&store, None).unwrap();
        assert_eq!((net.spec, net.num_classes()), (spec, 7));
        assert_eq!(spec.to_string().parse::<ArchSpec>().unwrap(), spec, "names round-trip");
    }
}

#[test]
fn half_precision_checkpoints_convert_exactly() {
    let model = SyntheticModel::new(ArchSpec::WideResNet { depth: 10, width: 2 }, 10, 3).unwrap();
    for (dtype, round) in [
        (StorageDtype::F16, (|v: f32| half::f16::from_f32(v).to_f32()) as fn(f32) -> f32),
        (StorageDtype::BF16, |v: f32| half::bf16::from_f32(v).to_f32()),
        (StorageDtype::F32, |v: f32| v),
    ] {
        let path = temp_path(&format!("{dtype:?}.safetensors"));
        model.save(&path, dtype).unwrap();
        let store = TensorStore::open(&path).unwrap();
        for (name, _, data) in &model.tensors {
            let loaded = &store.tensors[name].data;
            assert!(loaded.iter().zip(data).all(|(l, d)| *l == round(*d)), "{dtype:?} {name}");
        }
    }
}

#[test]
fn dataparallel_prefix_and_batch_counters_are_accepted() {
    let t = resnet18_tensors();
    let mut encoded: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = t
        .iter()
        .map(|(n, s, d)| (format!("module.{n}"), Dtype::F32, s.clone(), d.iter().flat_map(|v| v.to_le_bytes()).collect()))
        .collect();
    encoded.push(("module.bn1.num_batches_tracked".into(), Dtype::I64, vec![], 5i64.to_le_bytes().to_vec()));
    let views: Vec<(String, TensorView)> =
        encoded.iter().map(|(n, dt, s, b)| (n.clone(), TensorView::new(*dt, s.clone(), b).unwrap())).collect();
    let path = temp_path("module.safetensors");
    std::fs::write(&path, safetensors::serialize(views, None).unwrap()).unwrap();
    let net = nac::model::load(&path, None).unwrap();
    assert_eq!(net.spec, ArchSpec::ResNet18_32x32);
}

#[test]
fn a_missing_file_names_the_path() {
    let err = nac::model::load(Path::new("/nonexistent/dir/w.safetensors"), None).unwrap_err();
    assert!(matches!(err, Error::Io { .. }));
    assert_mentions(&err.to_string(), &["/nonexistent/dir/w.safetensors"]);
}
