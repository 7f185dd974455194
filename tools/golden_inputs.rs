//! Writes the models and inputs of the golden cases for `tools/torch_reference.py`:
//! `<case>.json` (what the case is), `<case>.model.safetensors` (random weights in the public
//! naming, f32; a Vision Transformer's heads in the `num_heads` metadata) and `<case>.inputs.npy`
//! (float32 N×3×H×W). Everything is deterministic in the
//! seeds, so `tests/golden.rs` regenerates the same model and inputs and checks their
//! fingerprints against the golden file instead of committing megabytes of weights.
//!
//! cargo run --release --example golden_inputs -- target/golden-inputs

use std::path::PathBuf;

use nac::model::synthetic::{random_inputs, SyntheticModel};
use nac::model::weights::StorageDtype;
use nac::npy::NpyArray;

#[path = "../tests/common/golden_cases.rs"]
mod golden_cases;

fn main() -> nac::Result<()> {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "target/golden-inputs".into()));
    std::fs::create_dir_all(&dir).map_err(|e| nac::Error::Io { path: dir.clone(), source: e })?;
    for case in golden_cases::CASES {
        let spec = case.arch.parse()?;
        let model = SyntheticModel::new(spec, case.classes, case.model_seed)?;
        model.save(&dir.join(format!("{}.model.safetensors", case.name)), StorageDtype::F32)?;
        let n = case.n_profile + case.n_test;
        let inputs = random_inputs(n, 3, case.size, case.size, case.input_seed);
        NpyArray::from_f32(vec![n, 3, case.size, case.size], &inputs).save(&dir.join(format!("{}.inputs.npy", case.name)))?;
        let description = serde_json::json!({
            "case": case.name,
            "arch": case.arch,
            "classes": case.classes,
            "model_seed": case.model_seed,
            "input_seed": case.input_seed,
            "n_profile": case.n_profile,
            "n_test": case.n_test,
            "n_grad": case.n_grad,
            "fused": case.fused,
            "height": case.size,
            "width": case.size,
            "model_fingerprint": model.network.fingerprint(),
            "inputs_fingerprint": nac::fingerprint::of_f32(&inputs),
        });
        nac::error::write_atomic(&dir.join(format!("{}.json", case.name)), description.to_string().as_bytes())?;
        println!("wrote {} ({} samples)", case.name, n);
    }
    Ok(())
}
