//! `nac demo`: the evaluation on the shipped Fashion-MNIST ResNet-18 and the small real subsets
//! bundled in `demo/` (made by `tools/make_demo_data.py` from the sets `tools/fetch_data.sh`
//! downloads): Fashion-MNIST is in-distribution, MNIST digits are far OOD, impulse-noise
//! Fashion-MNIST is near OOD. Offline, sized to finish in minutes on a CPU rasteriser.

use std::path::{Path, PathBuf};

use super::config::{EvalConfig, Group, IdSets, ModelEntry, NacSettings, OodSet, ProfileSet, SearchSettings};
use crate::error::{Error, Result};

/// Where `cargo run` finds the shipped model and the bundled data by default.
pub fn default_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub const DEMO_MODEL: &str = "weights/fmnist_resnet18_32x32.safetensors";

/// The demo's configuration for a checkout at `root`.
pub fn demo_config(root: &Path) -> Result<EvalConfig> {
    let file = |name: &str| -> Result<String> {
        let path = root.join("demo").join(format!("{name}-images-idx3-ubyte.gz"));
        if !path.is_file() {
            return Err(Error::Input(format!("{}: bundled demo data missing (is this a full checkout?)", path.display())));
        }
        Ok(format!("idx:{}", path.display()))
    };
    let model = root.join(DEMO_MODEL);
    if !model.is_file() {
        return Err(Error::Input(format!("{}: the shipped model is missing (is this a full checkout?)", model.display())));
    }
    let val = file("fmnist-val")?;
    let test = file("fmnist-test")?;
    Ok(EvalConfig {
        preprocessing: "fmnist".into(),
        batch: 64,
        models: vec![ModelEntry { path: model, arch: None }],
        profile: ProfileSet { data: file("fmnist-profile")?, samples: None, seed: 0 },
        id: IdSets { test: test.clone(), val: Some(format!("{val}[0:100]")), sanity: Some(file("fmnist-sanity")?) },
        ood: vec![
            OodSet { name: "fmnist-impulse".into(), group: Group::Near, data: format!("corrupt:impulse_noise:5:{test}") },
            OodSet { name: "mnist".into(), group: Group::Far, data: file("mnist")? },
        ],
        nac: NacSettings { layers: None, preset: Some("cifar10".into()), params: Vec::new() },
        search: Some(SearchSettings {
            grid: Some("cifar10".into()),
            layers: Vec::new(),
            ood_val: Some(format!("corrupt:shot_noise:5:{val}[100:200]")),
            id_only: true,
        }),
        pictures: true,
    })
}
