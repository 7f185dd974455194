//! `nac demo`: the evaluation on the shipped Fashion-MNIST ResNet-18 and the small real subsets
//! bundled in `demo/` (made by `tools/make_demo_data.py` from the sets `tools/fetch_data.sh`
//! downloads): Fashion-MNIST is in-distribution, MNIST digits are far OOD, impulse-noise
//! Fashion-MNIST (other test images than the ID test ones) is near OOD. APS validates on
//! shot-noise Fashion-MNIST made from held-out training images; ID-only selection on synthetic
//! outliers of the ID validation images. Offline; on a CPU adapter it takes small prefixes of
//! the sets so that it finishes in under three minutes.

use std::path::{Path, PathBuf};

use super::config::{EvalConfig, Group, IdSets, ModelEntry, NacSettings, OodSet, ProfileSet, SearchSettings};
use crate::error::{Error, Result};

/// Where `cargo run` finds the shipped model and the bundled data by default.
pub fn default_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub const DEMO_MODEL: &str = "weights/fmnist_resnet18_32x32.safetensors";

/// Samples the demo takes from each bundled set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DemoSize {
    /// Profiling images (a prefix of the class-interleaved profile set stays balanced).
    pub profile: usize,
    /// ID test images, and images of each OOD test set.
    pub test: usize,
    /// ID validation images; as many more become the APS OOD validation set.
    pub val: usize,
}

impl DemoSize {
    /// Everything bundled: 1000 profile, 1000 test, 1000 MNIST, 250 + 250 validation.
    pub const FULL: DemoSize = DemoSize { profile: 1000, test: 1000, val: 250 };
    /// What a CPU rasteriser finishes in about three minutes: lavapipe (Mesa 25) on 2 fast cores
    /// runs about 8 ResNet-18 NAC passes per second (with the register-tiled conv kernels), and
    /// the demo makes about 1,000 of them at this size, 200 ID test images being the fewest
    /// whose AUROCs mean something; 10× the 30 profile and 20 test images it once took.
    pub const CPU: DemoSize = DemoSize { profile: 300, test: 200, val: 60 };
}

/// The demo's configuration for a checkout at `root`.
pub fn demo_config(root: &Path, size: DemoSize) -> Result<EvalConfig> {
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
    let DemoSize { profile, test: n, val: v } = size;
    if profile == 0 || n == 0 || v == 0 || profile > 1000 || n > 1000 || v > 250 {
        return Err(Error::Input(format!("demo size {size:?}: each set needs 1..=1000 samples (validation 1..=250)")));
    }
    let sanity = if size == DemoSize::FULL { Some(file("fmnist-sanity")?) } else { None };
    Ok(EvalConfig {
        preprocessing: "fmnist".into(),
        batch: 64,
        models: vec![ModelEntry { path: model, arch: None }],
        profile: ProfileSet { data: format!("{}[0:{profile}]", file("fmnist-profile")?), samples: None, seed: 0 },
        id: IdSets { test: format!("{test}[0:{n}]"), val: Some(format!("{val}[0:{v}]")), sanity },
        ood: vec![
            OodSet {
                name: "fmnist-impulse".into(),
                group: Group::Near,
                data: format!("corrupt:impulse_noise:5:{test}[{}:{}]", 1000 - n, 1000),
            },
            OodSet { name: "mnist".into(), group: Group::Far, data: format!("{}[0:{n}]", file("mnist")?) },
        ],
        nac: NacSettings { layers: None, preset: Some("cifar10".into()), params: Vec::new() },
        search: Some(SearchSettings {
            grid: Some("cifar10".into()),
            layers: Vec::new(),
            ood_val: Some(format!("corrupt:shot_noise:5:{val}[{v}:{}]", 2 * v)),
            id_only: true,
        }),
        detectors: vec!["msp".into(), "ebo".into()],
        pictures: true,
    })
}
