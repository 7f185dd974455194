//! PyTorch checkpoints read natively: files written by `torch.save` (`tools/pth_goldens.py` →
//! `tests/golden/pth/`) give exactly the tensors of the safetensors file written beside each,
//! through the usual containers and prefixes, dtypes and strided views; `nac` runs a `.pth`
//! wherever it runs a `.safetensors`; `nac convert` writes the public naming; hostile pickles
//! and archives are refused, naming what is wrong, without running anything.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use nac::model::TensorStore;

fn golden(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/pth").join(name)
}

fn assert_same_tensors(a: &TensorStore, b: &TensorStore) {
    let names = |s: &TensorStore| s.tensors.keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(a), names(b));
    for (name, t) in &a.tensors {
        let u = &b.tensors[name];
        assert_eq!((&t.shape, t.dtype), (&u.shape, u.dtype), "{name}");
        assert!(t.data.iter().zip(&u.data).all(|(x, y)| x.to_bits() == y.to_bits()), "{name}: values differ");
    }
}

#[test]
fn torch_save_files_hold_the_tensors_of_their_safetensors_twins() {
    for name in ["wrn_state_dict", "wrapped_module", "layouts"] {
        let pth = TensorStore::open(&golden(&format!("{name}.pth"))).unwrap();
        let st = TensorStore::open(&golden(&format!("{name}.safetensors"))).unwrap();
        assert_same_tensors(&pth, &st);
        assert!(!pth.tensors.is_empty());
    }
    let layouts = TensorStore::open(&golden("layouts.pth")).unwrap();
    assert_eq!(layouts.tensors["transposed"].shape, [6, 4]);
    assert_eq!(layouts.tensors["transposed"].data[..4], [0.0, 6.0, 12.0, 18.0], "a transposed view is gathered by its strides");
    assert_eq!(layouts.tensors["sliced"].data, [8.0, 9.0, 10.0, 14.0, 15.0, 16.0], "a view with a storage offset");
}

#[test]
fn nac_runs_and_converts_pth_checkpoints() {
    let engine = common::engine();
    let from_pth = engine.load_model(&golden("wrn_state_dict.pth"), None).unwrap();
    let from_st = engine.load_model(&golden("wrn_state_dict.safetensors"), None).unwrap();
    assert_eq!(from_pth.network.spec.to_string(), "wrn-10-1");
    assert_eq!(from_pth.fingerprint(), from_st.fingerprint(), "the same weights");

    let dir = common::temp_dir("pth");
    let out = dir.join("converted.safetensors");
    let run = Command::new(env!("CARGO_BIN_EXE_nac")).arg("convert").arg(golden("wrn_state_dict.pth")).arg(&out).output().unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert!(String::from_utf8_lossy(&run.stderr).contains("wrn-10-1"));
    let converted = engine.load_model(&out, None).unwrap();
    assert_eq!(converted.fingerprint(), from_st.fingerprint());
    let bytes = std::fs::read(&out).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.tensor("block1.layer.0.bn1.num_batches_tracked").unwrap().dtype(), safetensors::Dtype::I64, "every tensor kept");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn hostile_pickles_and_archives_are_refused() {
    for (file, needle) in [
        ("hostile_os_system.pth", "system` is not allowed in a tensor state dict (refused, nothing was run)"),
        ("hostile_truncated.pth", "not a PyTorch zip checkpoint"),
        ("hostile_lying_storage.pth", "but the pickle says"),
        ("hostile_broadcast.pth", "more than its storage of 1"),
    ] {
        let err = TensorStore::open(&golden(file)).err().unwrap_or_else(|| panic!("{file} was accepted")).to_string();
        assert!(err.contains(file) && err.contains(needle), "{file}: `{err}` should contain `{needle}`");
    }
    let err = TensorStore::from_bytes(Path::new("x.pth"), b"PK\x03\x04 nothing").err().unwrap().to_string();
    assert!(err.contains("x.pth"), "{err}");
}
