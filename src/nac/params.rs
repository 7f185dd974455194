//! Per-layer NAC hyperparameters (O, M, α) and the official defaults (spec §4, and §8 for the
//! Vision Transformer).
//!
//! The authors published ViT values for one setting only (ViT-B/16 on ImageNet-1k), so for a
//! Vision Transformer every preset and grid resolves to `imagenet-vit` ([`Preset::for_network`]):
//! a config written for CNNs (`preset = "cifar10"`) runs unchanged on a ViT, and the report
//! records the preset actually used.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::file::Binning;
use crate::error::{Error, Result};
use crate::model::arch::{Body, VIT_FEATURE_LAYER};
use crate::model::Network;

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

/// The official default hyperparameters of a benchmark (spec §4; §8 for `imagenet-vit`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preset {
    Cifar10,
    Cifar100,
    Imagenet,
    /// ViT-B/16 on ImageNet-1k, the only Vision Transformer setting of the paper.
    ImagenetVit,
}

/// The official CNN layer list: the pooled feature, then the stages from deep to shallow.
pub const OFFICIAL_LAYERS: [&str; 4] = ["avgpool", "layer3", "layer2", "layer1"];
/// The official ViT-B/16 layer list: `encoder.ln`'s class token, then the last three blocks.
pub const OFFICIAL_VIT_LAYERS: [&str; 4] = [VIT_FEATURE_LAYER, "layer_11", "layer_10", "layer_9"];
/// Blocks of ViT-B/16, whose last three the official ViT layer names count from.
const OFFICIAL_VIT_DEPTH: usize = 12;

/// The official layer whose values `layer` of `network` takes in the presets and grids: a
/// WideResNet stage `blockK` is `layerK`; a ViT's last three blocks count from the end (its last
/// is ViT-B/16's `layer_11`, whatever its depth) and its `layer_norm` is itself; a ViT's other
/// blocks have none. (A CNN layer the official list leaves out, `layer4`, is in no table.)
pub fn official_role(network: &Network, layer: &str) -> Option<String> {
    match &network.body {
        Body::VisionTransformer { blocks, .. } => {
            if layer == VIT_FEATURE_LAYER {
                return Some(layer.to_string());
            }
            let i: usize = layer.strip_prefix("layer_")?.parse().ok()?;
            let from_end = blocks.len().checked_sub(i).filter(|&k| (1..OFFICIAL_VIT_LAYERS.len()).contains(&k))?;
            Some(format!("layer_{}", OFFICIAL_VIT_DEPTH - from_end))
        }
        _ => Some(layer.strip_prefix("block").map(|k| format!("layer{k}")).unwrap_or_else(|| layer.to_string())),
    }
}

impl Preset {
    /// The preset whose values apply to `network`: for a Vision Transformer always
    /// `imagenet-vit`, the only ViT values the authors published (so CNN configs run unchanged
    /// on a ViT); `imagenet-vit` for a CNN is an error.
    pub fn for_network(self, network: &Network) -> Result<Preset> {
        match (&network.body, self) {
            (Body::VisionTransformer { .. }, _) => Ok(Preset::ImagenetVit),
            (_, Preset::ImagenetVit) => Err(Error::Input(format!(
                "preset imagenet-vit holds the official Vision Transformer values, and {} is a convolutional network; use cifar10, cifar100 or imagenet",
                network.spec
            ))),
            _ => Ok(self),
        }
    }

    /// This preset's defaults for `layer` of `network` (by [`official_role`]; `None` where the
    /// official setting has no values for it). No substitution: see [`Preset::for_network`].
    pub fn params(self, network: &Network, layer: &str) -> Option<LayerParams> {
        let (names, table): (&[&str; 4], [(f64, usize, f64); 4]) = match self {
            Preset::Cifar10 => (&OFFICIAL_LAYERS, [(50.0, 50, 100.0), (100.0, 500, 1000.0), (5.0, 50, 0.001), (100.0, 500, 0.001)]),
            Preset::Cifar100 => (&OFFICIAL_LAYERS, [(50.0, 50, 50.0), (500.0, 1000, 10.0), (500.0, 50, 1.0), (5.0, 50, 0.005)]),
            Preset::Imagenet => (&OFFICIAL_LAYERS, [(10.0, 50, 3000.0), (500.0, 50, 300.0), (50.0, 500, 0.01), (5000.0, 1000, 1.0)]),
            Preset::ImagenetVit => (&OFFICIAL_VIT_LAYERS, [(500.0, 50, 100.0), (50.0, 500, 1.0), (10.0, 500, 10.0), (10.0, 1000, 1.0)]),
        };
        let role = official_role(network, layer)?;
        let i = names.iter().position(|l| *l == role)?;
        let (o, m, alpha) = table[i];
        Some(LayerParams::new(layer, o, m, alpha))
    }

    /// The official layer list of `network`: the feature layer, then the stages (ResNet
    /// `layer3..1`, WideResNet `block3..1`) or a ViT's last three blocks, deep to shallow.
    pub fn layers_for(network: &Network) -> Vec<String> {
        let stages = network.stage_names();
        let deepest = match network.body {
            Body::VisionTransformer { .. } => stages.len(),
            _ => stages.len().min(3),
        };
        let mut layers = vec![network.feature_layer().to_string()];
        layers.extend(stages[..deepest].iter().rev().take(3).cloned());
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
            "imagenet-vit" => Ok(Preset::ImagenetVit),
            _ => Err(Error::Input(format!("unknown preset `{s}`; expected cifar10, cifar100, imagenet or imagenet-vit"))),
        }
    }
}

impl fmt::Display for Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Preset::Cifar10 => "cifar10",
            Preset::Cifar100 => "cifar100",
            Preset::Imagenet => "imagenet",
            Preset::ImagenetVit => "imagenet-vit",
        })
    }
}

/// NAC-UE parameters for each of `layers` of `network`: explicit `overrides` first, then the
/// preset (as [`Preset::for_network`] resolves it), each valid for log-symmetric bins. A layer
/// with neither is an error that names it.
pub fn resolve(network: &Network, layers: &[String], preset: Option<Preset>, overrides: &[LayerParams]) -> Result<Vec<LayerParams>> {
    let preset = preset.map(|p| p.for_network(network)).transpose()?;
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
            let chosen =
                overrides.iter().rev().find(|o| &o.layer == layer).cloned().or_else(|| preset.and_then(|p| p.params(network, layer)));
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
pub(crate) mod tests {
    use super::*;
    use crate::model::synthetic::SyntheticModel;

    /// A random network of `arch` (a small one: only its layer names matter here).
    pub(crate) fn net(arch: &str) -> Network {
        SyntheticModel::new(arch.parse().unwrap(), 10, 0).unwrap().network
    }

    /// A tiny Vision Transformer of `depth` blocks.
    pub(crate) fn vit(depth: usize) -> Network {
        net(&format!("vit-i8-p4-d{depth}-w8-h2-m16"))
    }

    fn strings(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn presets_follow_the_spec_table() {
        let (resnet, wrn) = (net("resnet18_32x32"), net("wrn-10-1"));
        assert_eq!(Preset::Cifar10.params(&resnet, "layer3"), Some(LayerParams::new("layer3", 100.0, 500, 1000.0)));
        assert_eq!(Preset::Cifar100.params(&resnet, "avgpool"), Some(LayerParams::new("avgpool", 50.0, 50, 50.0)));
        assert_eq!(Preset::Imagenet.params(&resnet, "layer1"), Some(LayerParams::new("layer1", 5000.0, 1000, 1.0)));
        assert_eq!(Preset::Cifar10.params(&wrn, "block2"), Some(LayerParams::new("block2", 5.0, 50, 0.001)));
        assert_eq!(Preset::Cifar10.params(&resnet, "layer4"), None);
        // ViT-B/16 itself: the spec's table by name.
        let b16 = vit(12);
        for (layer, o, m, alpha) in
            [("layer_norm", 500.0, 50, 100.0), ("layer_11", 50.0, 500, 1.0), ("layer_10", 10.0, 500, 10.0), ("layer_9", 10.0, 1000, 1.0)]
        {
            assert_eq!(Preset::ImagenetVit.params(&b16, layer), Some(LayerParams::new(layer, o, m, alpha)));
        }
        assert_eq!(Preset::ImagenetVit.params(&b16, "layer_8"), None);
        assert_eq!(Preset::Cifar10.params(&b16, "layer_norm"), None, "no substitution in `params`");
    }

    #[test]
    fn vit_layers_take_the_official_roles_by_distance_from_the_end() {
        let four = vit(4);
        assert_eq!(Preset::layers_for(&four), ["layer_norm", "layer_3", "layer_2", "layer_1"]);
        let roles: Vec<Option<String>> = four.layer_names().iter().map(|l| official_role(&four, l)).collect();
        assert_eq!(roles, [None, Some("layer_9".into()), Some("layer_10".into()), Some("layer_11".into()), Some("layer_norm".into())]);
        assert_eq!(Preset::ImagenetVit.params(&four, "layer_3"), Some(LayerParams::new("layer_3", 50.0, 500, 1.0)));
        assert_eq!(Preset::ImagenetVit.params(&four, "layer_1"), Some(LayerParams::new("layer_1", 10.0, 1000, 1.0)));
        assert_eq!(Preset::ImagenetVit.params(&four, "layer_0"), None);
        assert_eq!(Preset::layers_for(&vit(12)), ["layer_norm", "layer_11", "layer_10", "layer_9"]);
        assert_eq!(Preset::layers_for(&vit(13)), ["layer_norm", "layer_12", "layer_11", "layer_10"]);
        assert_eq!(official_role(&vit(13), "layer_9"), None, "the fourth block from the end has no official values");
        // Fewer than three blocks: all of them.
        assert_eq!(Preset::layers_for(&vit(2)), ["layer_norm", "layer_1", "layer_0"]);
        assert_eq!(Preset::layers_for(&vit(1)), ["layer_norm", "layer_0"]);
        assert_eq!(Preset::ImagenetVit.params(&vit(1), "layer_0"), Some(LayerParams::new("layer_0", 50.0, 500, 1.0)));
        for bad in ["layer_4", "layer_", "layer_x", "layer3", "avgpool"] {
            assert_eq!(Preset::ImagenetVit.params(&four, bad), None, "{bad}");
        }
        // The CNN lists are unchanged.
        assert_eq!(Preset::layers_for(&net("resnet18_32x32")), ["avgpool", "layer3", "layer2", "layer1"]);
        assert_eq!(Preset::layers_for(&net("wrn-10-1")), ["avgpool", "block3", "block2", "block1"]);
        // A DMWideResNet's stages are the official names themselves: ResNet configs run unchanged.
        let dm = net("dm-wrn-10-1-swish");
        assert_eq!(Preset::layers_for(&dm), ["avgpool", "layer3", "layer2", "layer1"]);
        assert_eq!(Preset::Cifar10.params(&dm, "layer2"), Preset::Cifar10.params(&net("resnet18_32x32"), "layer2"));
    }

    #[test]
    fn every_preset_resolves_to_the_vit_values_for_a_vit() {
        let four = vit(4);
        let layers = Preset::layers_for(&four);
        let official = resolve(&four, &layers, Some(Preset::ImagenetVit), &[]);
        for preset in [Preset::Cifar10, Preset::Cifar100, Preset::Imagenet, Preset::ImagenetVit] {
            assert_eq!(preset.for_network(&four).unwrap(), Preset::ImagenetVit);
            assert_eq!(resolve(&four, &layers, Some(preset), &[]).unwrap(), official.as_ref().unwrap().clone(), "{preset}");
        }
        let want =
            [("layer_norm", 500.0, 50, 100.0), ("layer_3", 50.0, 500, 1.0), ("layer_2", 10.0, 500, 10.0), ("layer_1", 10.0, 1000, 1.0)];
        assert_eq!(official.unwrap(), want.map(|(l, o, m, a)| LayerParams::new(l, o, m, a)));
        // A block outside the official list needs explicit values; overrides still win.
        let err = resolve(&four, &strings(&["layer_0"]), Some(Preset::Cifar10), &[]).unwrap_err().to_string();
        assert!(err.contains("layer_0") && err.contains("imagenet-vit"), "{err}");
        let p = resolve(&four, &strings(&["layer_0", "layer_norm"]), Some(Preset::Cifar10), &[LayerParams::new("layer_0", 3.0, 50, 2.0)]);
        assert_eq!(p.unwrap(), [LayerParams::new("layer_0", 3.0, 50, 2.0), LayerParams::new("layer_norm", 500.0, 50, 100.0)]);
        // The ViT preset on a CNN is refused by name; the CNN presets stay as they are.
        let resnet = net("resnet18_32x32");
        let err = Preset::ImagenetVit.for_network(&resnet).unwrap_err().to_string();
        assert!(err.contains("imagenet-vit") && err.contains("resnet18_32x32"), "{err}");
        assert!(resolve(&resnet, &Preset::layers_for(&resnet), Some(Preset::ImagenetVit), &[]).is_err());
        assert_eq!(Preset::Imagenet.for_network(&resnet).unwrap(), Preset::Imagenet);
        assert_eq!("ImageNet-ViT".parse::<Preset>().unwrap(), Preset::ImagenetVit);
        assert_eq!(Preset::ImagenetVit.to_string().parse::<Preset>().unwrap(), Preset::ImagenetVit);
    }

    #[test]
    fn overrides_win_and_missing_layers_are_named() {
        let resnet = net("resnet18_32x32");
        let layers = strings(&["avgpool", "layer4"]);
        let err = resolve(&resnet, &layers, Some(Preset::Cifar10), &[]).unwrap_err().to_string();
        assert!(err.contains("layer4") && err.contains("cifar10"), "{err}");
        let p = resolve(&resnet, &layers, Some(Preset::Cifar10), &[LayerParams::parse("layer4:7/52/0.5").unwrap()]).unwrap();
        assert_eq!(p[0], LayerParams::new("avgpool", 50.0, 50, 100.0));
        assert_eq!(p[1], LayerParams::new("layer4", 7.0, 52, 0.5));
        assert!(resolve(&resnet, &layers[..1], None, &[LayerParams::new("layer2", 1.0, 50, 1.0)]).is_err());
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
    }
}
