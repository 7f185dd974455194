//! Per-layer NAC hyperparameters (O, M, α) and the official defaults (spec §4).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::file::Binning;
use crate::error::{Error, Result};

/// Hyperparameters of one layer: coverage threshold `o` (an absolute count: a bin holding `o`
/// profiling samples is fully covered), `m` bin edges (`m − 1` bins) and the state's `alpha`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerParams {
    pub layer: String,
    pub o: f64,
    pub m: usize,
    pub alpha: f64,
}

impl LayerParams {
    pub fn new(layer: &str, o: f64, m: usize, alpha: f64) -> Self {
        LayerParams { layer: layer.to_string(), o, m, alpha }
    }

    /// Parses `NAME:O/M/ALPHA`, e.g. `layer3:100/500/1000`.
    pub fn parse(text: &str) -> Result<Self> {
        let bad = |why: &str| Error::Input(format!("layer parameters `{text}`: {why}; expected NAME:O/M/ALPHA, e.g. layer3:100/500/1000"));
        let (layer, values) = text.split_once(':').ok_or_else(|| bad("no `:`"))?;
        let parts: Vec<&str> = values.split('/').collect();
        if layer.is_empty() || parts.len() != 3 {
            return Err(bad("wrong number of fields"));
        }
        let o: f64 = parts[0].trim().parse().map_err(|_| bad("O is not a number"))?;
        let m: usize = parts[1].trim().parse().map_err(|_| bad("M is not a whole number"))?;
        let alpha: f64 = parts[2].trim().parse().map_err(|_| bad("α is not a number"))?;
        let p = LayerParams::new(layer, o, m, alpha);
        p.validate()?;
        Ok(p)
    }

    /// The settings of a layer whose bins are laid out by `binning`: what [`validate`]
    /// checks, and M as `binning` needs it (even and ≥ 4 for NAC-UE, ≥ 2 for NAC-ME, at most
    /// `MAX_BIN_EDGES`). Settings from the command line or a config and the header of a profile
    /// read from disk both pass here before any bins are built.
    ///
    /// [`validate`]: LayerParams::validate
    pub fn validate_for(&self, binning: Binning) -> Result<()> {
        self.validate()?;
        binning.check_m(self.m).map_err(|e| Error::Input(format!("layer `{}`: {e}", self.layer)))
    }

    /// O and α positive and finite; M is checked for a binning by [`LayerParams::validate_for`].
    pub fn validate(&self) -> Result<()> {
        if !(self.o.is_finite() && self.o > 0.0) {
            return Err(Error::Input(format!("layer `{}`: O must be a positive count, got {}", self.layer, self.o)));
        }
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            return Err(Error::Input(format!("layer `{}`: α must be positive and finite, got {}", self.layer, self.alpha)));
        }
        Ok(())
    }
}

impl fmt::Display for LayerParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}/{}/{}", self.layer, self.o, self.m, self.alpha)
    }
}

/// The official default hyperparameters of a benchmark (spec §4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preset {
    Cifar10,
    Cifar100,
    Imagenet,
}

/// The official layer list: the pooled feature, then the stages from deep to shallow.
pub const OFFICIAL_LAYERS: [&str; 4] = ["avgpool", "layer3", "layer2", "layer1"];

impl Preset {
    /// Defaults for `layer`. A WideResNet stage `blockK` takes the values of `layerK`; layers
    /// the official setting does not use (e.g. `layer4`) have none.
    pub fn params(self, layer: &str) -> Option<LayerParams> {
        let role = layer.strip_prefix("block").map(|k| format!("layer{k}")).unwrap_or_else(|| layer.to_string());
        let table: [(f64, usize, f64); 4] = match self {
            Preset::Cifar10 => [(50.0, 50, 100.0), (100.0, 500, 1000.0), (5.0, 50, 0.001), (100.0, 500, 0.001)],
            Preset::Cifar100 => [(50.0, 50, 50.0), (500.0, 1000, 10.0), (500.0, 50, 1.0), (5.0, 50, 0.005)],
            Preset::Imagenet => [(10.0, 50, 3000.0), (500.0, 50, 300.0), (50.0, 500, 0.01), (5000.0, 1000, 1.0)],
        };
        let i = OFFICIAL_LAYERS.iter().position(|l| *l == role)?;
        let (o, m, alpha) = table[i];
        Some(LayerParams::new(layer, o, m, alpha))
    }

    /// The preset's layer list for a network whose stages are named `stage_names` (ResNet
    /// `layer1..`, WideResNet `block1..`): `avgpool` and stages 3, 2, 1.
    pub fn layers_for(stage_names: &[String]) -> Vec<String> {
        let prefix = if stage_names.first().is_some_and(|s| s.starts_with("block")) { "block" } else { "layer" };
        let mut layers = vec!["avgpool".to_string()];
        layers.extend((1..=3).rev().map(|k| format!("{prefix}{k}")).filter(|l| stage_names.contains(l)));
        layers
    }
}

impl FromStr for Preset {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "cifar10" => Ok(Preset::Cifar10),
            "cifar100" => Ok(Preset::Cifar100),
            "imagenet" => Ok(Preset::Imagenet),
            _ => Err(Error::Input(format!("unknown preset `{s}`; expected cifar10, cifar100 or imagenet"))),
        }
    }
}

impl fmt::Display for Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Preset::Cifar10 => "cifar10",
            Preset::Cifar100 => "cifar100",
            Preset::Imagenet => "imagenet",
        })
    }
}

/// NAC-UE parameters for each of `layers`: explicit `overrides` first, then the preset, each
/// valid for log-symmetric bins. A layer with neither is an error that names it.
pub fn resolve(layers: &[String], preset: Option<Preset>, overrides: &[LayerParams]) -> Result<Vec<LayerParams>> {
    if let Some(extra) = overrides.iter().find(|o| !layers.contains(&o.layer)) {
        return Err(Error::Input(format!(
            "parameters given for layer `{}`, which is not in the layer list ({})",
            extra.layer,
            layers.join(",")
        )));
    }
    layers
        .iter()
        .map(|layer| {
            let chosen = overrides.iter().rev().find(|o| &o.layer == layer).cloned().or_else(|| preset.and_then(|p| p.params(layer)));
            let p = chosen.ok_or_else(|| match preset {
                Some(p) => Error::Input(format!("preset {p} has no values for layer `{layer}`; give --layer-params {layer}:O/M/ALPHA")),
                None => Error::Input(format!("no parameters for layer `{layer}`; give a --preset or --layer-params {layer}:O/M/ALPHA")),
            })?;
            p.validate_for(Binning::LogSymmetric)?;
            Ok(p)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_follow_the_spec_table() {
        assert_eq!(Preset::Cifar10.params("layer3"), Some(LayerParams::new("layer3", 100.0, 500, 1000.0)));
        assert_eq!(Preset::Cifar100.params("avgpool"), Some(LayerParams::new("avgpool", 50.0, 50, 50.0)));
        assert_eq!(Preset::Imagenet.params("layer1"), Some(LayerParams::new("layer1", 5000.0, 1000, 1.0)));
        assert_eq!(Preset::Cifar10.params("block2"), Some(LayerParams::new("block2", 5.0, 50, 0.001)));
        assert_eq!(Preset::Cifar10.params("layer4"), None);
    }

    #[test]
    fn overrides_win_and_missing_layers_are_named() {
        let layers: Vec<String> = ["avgpool", "layer4"].iter().map(|s| s.to_string()).collect();
        let err = resolve(&layers, Some(Preset::Cifar10), &[]).unwrap_err().to_string();
        assert!(err.contains("layer4") && err.contains("cifar10"), "{err}");
        let p = resolve(&layers, Some(Preset::Cifar10), &[LayerParams::parse("layer4:7/52/0.5").unwrap()]).unwrap();
        assert_eq!(p[0], LayerParams::new("avgpool", 50.0, 50, 100.0));
        assert_eq!(p[1], LayerParams::new("layer4", 7.0, 52, 0.5));
        assert!(resolve(&layers[..1], None, &[LayerParams::new("layer2", 1.0, 50, 1.0)]).is_err());
    }

    #[test]
    fn parse_rejects_malformed_text() {
        for bad in
            ["layer3", "layer3:1/2", "layer3:a/50/1", "layer3:5/50/-1", ":5/50/1", "layer3:0/50/1", "layer3:inf/50/1", "layer3:5/50/NaN"]
        {
            assert!(LayerParams::parse(bad).is_err(), "{bad}");
        }
        for (m, ue, me) in [(50, true, true), (51, false, true), (2, false, true), (1, false, false), (1 << 17, false, false)] {
            let p = LayerParams::new("layer3", 5.0, m, 1.0);
            assert_eq!(p.validate_for(Binning::LogSymmetric).is_ok(), ue, "M = {m}");
            assert_eq!(p.validate_for(Binning::Uniform).is_ok(), me, "M = {m}");
        }
        assert_eq!(Preset::layers_for(&["block1".into(), "block2".into(), "block3".into()]), ["avgpool", "block3", "block2", "block1"]);
    }
}
