//! Architectures: detection from tensor names, and the typed network description that both the
//! GPU plan and the CPU reference are built from. Parameters stay exactly as in the checkpoint
//! (BatchNorm unfolded); each executor decides how to apply them.

use std::collections::BTreeSet;
use std::fmt;

use super::weights::TensorStore;
use crate::error::{Error, Result};
use crate::limits;

/// Which network a checkpoint holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArchSpec {
    /// OpenOOD / CIFAR ResNet-18: 3×3 stem, no max-pool, projections named `shortcut.0/1`.
    ResNet18_32x32,
    /// torchvision ResNet (18, 34, 50, 101, 152): 7×7/2 stem + 3×3/2 max-pool, `downsample.0/1`.
    TorchResNet { depth: usize },
    /// WideResNet-depth-k with RobustBench naming (pre-activation blocks).
    WideResNet { depth: usize, width: usize },
    /// RobustBench's `DMWideResNet` (DeepMind's: Gowal2021, Rebuffi2021): the same blocks with
    /// TF-style SAME padding, ReLU or Swish, named `init_conv`, `layer.{g}.block.{b}`,
    /// `batchnorm`, `logits`. `depth == 0` (`--arch dm-wrn-swish`): depth and width are read from
    /// the tensors, the activation (not in a state dict) is the given one.
    DmWideResNet { depth: usize, width: usize, activation: Activation },
    /// torchvision `VisionTransformer` (pre-norm encoder blocks, class token, learned positions).
    VisionTransformer(VitSpec),
}

/// The shape of a torchvision Vision Transformer. Everything but `heads` is read from the tensor
/// shapes; a state dict does not record the number of attention heads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VitSpec {
    pub image: usize,
    pub patch: usize,
    pub depth: usize,
    pub width: usize,
    pub heads: usize,
    pub mlp: usize,
}

impl VitSpec {
    /// Tokens per image: the patches and the class token.
    pub fn tokens(&self) -> usize {
        (self.image / self.patch).pow(2) + 1
    }

    pub fn head_dim(&self) -> usize {
        self.width / self.heads
    }
}

/// The torchvision families (`vit_b_*`, `vit_l_*`, `vit_h_14`) by (width, MLP width) → heads:
/// the convention used when neither the checkpoint's metadata nor `--arch` gives the heads.
const TORCHVISION_VIT_HEADS: [(usize, usize, usize, &str); 3] =
    [(768, 3072, 12, "ViT-B"), (1024, 4096, 16, "ViT-L"), (1280, 5120, 16, "ViT-H")];

/// The safetensors metadata key that records a Vision Transformer's number of heads.
pub const VIT_HEADS_METADATA: &str = "num_heads";
/// The safetensors metadata key that records a DMWideResNet's activation (`relu` or `swish`).
pub const ACTIVATION_METADATA: &str = "activation";

/// The activation of a DMWideResNet (everywhere in it); other CNNs use ReLU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Activation {
    Relu,
    /// `x·sigmoid(x)`.
    Swish,
}

impl Activation {
    pub fn name(self) -> &'static str {
        match self {
            Activation::Relu => "relu",
            Activation::Swish => "swish",
        }
    }

    /// `relu` or `swish` (any case).
    pub fn parse(s: &str) -> Option<Activation> {
        [Activation::Relu, Activation::Swish].into_iter().find(|a| a.name().eq_ignore_ascii_case(s.trim()))
    }
}

impl ArchSpec {
    /// The checkpoint name of the classifier head: `fc`, or a ViT's `heads.head`.
    pub fn head_name(&self) -> &'static str {
        match self {
            ArchSpec::VisionTransformer(_) => "heads.head",
            ArchSpec::DmWideResNet { .. } => "logits",
            _ => "fc",
        }
    }
}

impl fmt::Display for ArchSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArchSpec::ResNet18_32x32 => write!(f, "resnet18_32x32"),
            ArchSpec::TorchResNet { depth } => write!(f, "resnet{depth}"),
            ArchSpec::WideResNet { depth, width } => write!(f, "wrn-{depth}-{width}"),
            ArchSpec::DmWideResNet { depth: 0, activation, .. } => write!(f, "dm-wrn-{}", activation.name()),
            ArchSpec::DmWideResNet { depth, width, activation } => write!(f, "dm-wrn-{depth}-{width}-{}", activation.name()),
            ArchSpec::VisionTransformer(v) if v.image == 0 => write!(f, "vit-h{}", v.heads),
            ArchSpec::VisionTransformer(v) => {
                write!(f, "vit-i{}-p{}-d{}-w{}-h{}-m{}", v.image, v.patch, v.depth, v.width, v.heads, v.mlp)
            }
        }
    }
}

impl std::str::FromStr for ArchSpec {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let lower = s.to_ascii_lowercase();
        let bad = || {
            Error::Input(format!(
                "unknown architecture `{s}`; expected resnet18_32x32, resnet18, resnet34, resnet50, resnet101, resnet152, wrn-DEPTH-WIDTH (e.g. wrn-28-10), dm-wrn-ACTIVATION (RobustBench's DMWideResNet with relu or swish, depth and width read from the tensors; in full dm-wrn-DEPTH-WIDTH-ACTIVATION, e.g. dm-wrn-28-10-swish) or vit-hHEADS (a Vision Transformer with HEADS attention heads, the rest read from the tensors; the full form is vit-iIMAGE-pPATCH-dDEPTH-wWIDTH-hHEADS-mMLP)"
            ))
        };
        if let Some(rest) = lower.strip_prefix("vit-") {
            return parse_vit(rest).map(ArchSpec::VisionTransformer).ok_or_else(bad);
        }
        if lower == "resnet18_32x32" {
            return Ok(ArchSpec::ResNet18_32x32);
        }
        if let Some(d) = lower.strip_prefix("resnet") {
            let depth: usize = d.parse().map_err(|_| bad())?;
            torch_resnet_layout(depth).ok_or_else(bad)?;
            return Ok(ArchSpec::TorchResNet { depth });
        }
        if let Some(rest) = lower.strip_prefix("dm-wrn-") {
            let (size, act) = rest.rsplit_once('-').map_or(("", rest), |(a, b)| (a, b));
            let activation = Activation::parse(act).ok_or_else(bad)?;
            if size.is_empty() {
                return Ok(ArchSpec::DmWideResNet { depth: 0, width: 0, activation });
            }
            // DEPTH-WIDTH as for `wrn-` (whose errors about them apply), anything else unknown.
            let numbers = size.split_once('-').is_some_and(|(d, w)| d.parse::<usize>().is_ok() && w.parse::<usize>().is_ok());
            if !numbers {
                return Err(bad());
            }
            let ArchSpec::WideResNet { depth, width } = format!("wrn-{size}").parse()? else {
                unreachable!("`wrn-` parses to a WideResNet")
            };
            return Ok(ArchSpec::DmWideResNet { depth, width, activation });
        }
        if let Some(rest) = lower.strip_prefix("wrn-") {
            let (d, w) = rest.split_once('-').ok_or_else(bad)?;
            let (depth, width): (usize, usize) = (d.parse().map_err(|_| bad())?, w.parse().map_err(|_| bad())?);
            if depth < 10 || (depth - 4) % 6 != 0 || width == 0 {
                return Err(Error::Input(format!("WideResNet depth must be 6n+4 (n ≥ 1) and width ≥ 1, got wrn-{depth}-{width}")));
            }
            check_wrn(depth, width).map_err(|why| Error::Input(format!("architecture `{s}`: {why}")))?;
            return Ok(ArchSpec::WideResNet { depth, width });
        }
        Err(bad())
    }
}

/// A WideResNet's size within the limits: `(depth − 4) / 6` blocks per stage at most
/// `MAX_BLOCKS_PER_STAGE`, and the widest stage's `64 · width` channels (a profiled layer's
/// neurons) at most `MAX_LAYER_NEURONS`; the reason why not otherwise.
fn check_wrn(depth: usize, width: usize) -> std::result::Result<(), String> {
    let blocks = (depth.saturating_sub(4)) / 6;
    if blocks > limits::MAX_BLOCKS_PER_STAGE {
        return Err(format!(
            "{blocks} blocks per stage (depth {depth}) is over the limit of {} (MAX_BLOCKS_PER_STAGE, see `nac::limits`)",
            limits::MAX_BLOCKS_PER_STAGE
        ));
    }
    match width.checked_mul(64) {
        Some(c) if c <= limits::MAX_LAYER_NEURONS => Ok(()),
        _ => Err(format!(
            "width {width} gives 64·{width} channels in the last stage, over the limit of {} (MAX_LAYER_NEURONS, see `nac::limits`)",
            limits::MAX_LAYER_NEURONS
        )),
    }
}

/// `vit-…` fields after the prefix: `hN` alone (the rest read from the tensors, 0 here) or all
/// six of `iN pN dN wN hN mN`.
fn parse_vit(rest: &str) -> Option<VitSpec> {
    let mut v = VitSpec { image: 0, patch: 0, depth: 0, width: 0, heads: 0, mlp: 0 };
    for field in rest.split('-') {
        let (key, value) = field.split_at_checked(1)?;
        let n: usize = value.parse().ok().filter(|&n| n > 0)?;
        let slot = match key {
            "i" => &mut v.image,
            "p" => &mut v.patch,
            "d" => &mut v.depth,
            "w" => &mut v.width,
            "h" => &mut v.heads,
            "m" => &mut v.mlp,
            _ => return None,
        };
        if *slot != 0 {
            return None;
        }
        *slot = n;
    }
    let given = [v.image, v.patch, v.depth, v.width, v.mlp].iter().filter(|&&n| n > 0).count();
    (v.heads > 0 && (given == 0 || given == 5)).then_some(v)
}

/// A Vision Transformer's shape within the limits and self-consistent; the reason why not.
fn check_vit(v: &VitSpec) -> std::result::Result<(), String> {
    if v.image == 0 {
        return Err(
            "`vit-hN` names only the heads; the rest is read from a checkpoint's tensors, so a random ViT needs the full vit-iIMAGE-pPATCH-dDEPTH-wWIDTH-hHEADS-mMLP"
                .into(),
        );
    }
    if v.patch == 0 || v.image == 0 || !v.image.is_multiple_of(v.patch) {
        return Err(format!("image side {} is not a multiple of the patch size {}", v.image, v.patch));
    }
    if v.image > limits::MAX_IMAGE_SIDE {
        return Err(format!("image side {} is over the limit of {} (MAX_IMAGE_SIDE, see `nac::limits`)", v.image, limits::MAX_IMAGE_SIDE));
    }
    if v.depth == 0 || v.depth > limits::MAX_VIT_DEPTH {
        return Err(format!("{} encoder blocks: expected 1 to {} (MAX_VIT_DEPTH, see `nac::limits`)", v.depth, limits::MAX_VIT_DEPTH));
    }
    if v.width == 0 || v.width > limits::MAX_LAYER_NEURONS || v.mlp == 0 || v.mlp > limits::MAX_LAYER_NEURONS {
        return Err(format!(
            "width {} and MLP width {}: expected 1 to {} (MAX_LAYER_NEURONS, see `nac::limits`)",
            v.width,
            v.mlp,
            limits::MAX_LAYER_NEURONS
        ));
    }
    if v.heads == 0 || !v.width.is_multiple_of(v.heads) {
        return Err(format!("{} attention heads do not divide the width {}", v.heads, v.width));
    }
    Ok(())
}

/// Blocks per stage and whether blocks are Bottlenecks, for torchvision depths.
fn torch_resnet_layout(depth: usize) -> Option<([usize; 4], bool)> {
    Some(match depth {
        18 => ([2, 2, 2, 2], false),
        34 => ([3, 4, 6, 3], false),
        50 => ([3, 4, 6, 3], true),
        101 => ([3, 4, 23, 3], true),
        152 => ([3, 8, 36, 3], true),
        _ => return None,
    })
}

/// A 2-D convolution without bias, weight in PyTorch layout `[out, in, kh, kw]`.
#[derive(Clone, Debug)]
pub struct Conv {
    pub name: String,
    pub out_channels: usize,
    pub in_channels: usize,
    pub kernel: usize,
    pub stride: usize,
    /// Zero rows/columns before the image (top, left).
    pub padding: usize,
    /// Zero rows/columns after it (bottom, right): `padding`, except for TF-style SAME padding
    /// with stride 2 (0 before, 1 after).
    pub padding_end: usize,
    pub weight: Vec<f32>,
}

/// BatchNorm in eval mode (running statistics, eps 1e-5).
#[derive(Clone, Debug)]
pub struct BatchNorm {
    pub name: String,
    pub gamma: Vec<f32>,
    pub beta: Vec<f32>,
    pub mean: Vec<f32>,
    pub var: Vec<f32>,
}

pub const BN_EPS: f64 = 1e-5;

impl BatchNorm {
    /// Per-channel `(scale, shift)` such that `bn(x) = scale·x + shift`, computed in f64.
    pub fn scale_shift(&self) -> (Vec<f64>, Vec<f64>) {
        let scale: Vec<f64> = self.gamma.iter().zip(&self.var).map(|(&g, &v)| g as f64 / (v as f64 + BN_EPS).sqrt()).collect();
        let shift = self.beta.iter().zip(&self.mean).zip(&scale).map(|((&b, &m), &s)| b as f64 - m as f64 * s).collect();
        (scale, shift)
    }
}

/// Fully connected layer, weight `[out, in]` row-major.
#[derive(Clone, Debug)]
pub struct Linear {
    pub out_features: usize,
    pub in_features: usize,
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

/// LayerNorm over the channels of each token, eps 1e-6 (torchvision's ViT).
#[derive(Clone, Debug)]
pub struct LayerNorm {
    pub name: String,
    pub gamma: Vec<f32>,
    pub beta: Vec<f32>,
}

pub const LN_EPS: f64 = 1e-6;

/// A torchvision ViT encoder block (pre-norm): `x = x + out_proj(attention(ln_1(x)))`, then
/// `x = x + mlp_2(gelu(mlp_1(ln_2(x))))`, GELU in its exact erf form.
#[derive(Clone, Debug)]
pub struct EncoderBlock {
    /// `encoder.layers.encoder_layer_{i}`.
    pub name: String,
    pub ln_1: LayerNorm,
    /// `self_attention.in_proj_{weight,bias}`: `[3·width, width]`, rows q, k, v.
    pub in_proj: Linear,
    pub out_proj: Linear,
    pub ln_2: LayerNorm,
    pub mlp_1: Linear,
    pub mlp_2: Linear,
    /// The MLP's linear layers as the checkpoint names them: `mlp.0`/`mlp.3`, or
    /// `mlp.linear_1`/`mlp.linear_2` in checkpoints older than torchvision 0.13.
    pub mlp_names: [String; 2],
}

/// A post-activation residual block (ResNet BasicBlock or Bottleneck):
/// `out = relu(bn_k(conv_k(… relu(bn_1(conv_1(x))) …)) + shortcut(x))`.
#[derive(Clone, Debug)]
pub struct ResBlock {
    /// Two (BasicBlock) or three (Bottleneck) conv+bn pairs; ReLU between them.
    pub convs: Vec<(Conv, BatchNorm)>,
    /// Projection shortcut (1×1 conv + bn); identity when absent.
    pub projection: Option<(Conv, BatchNorm)>,
}

/// A RobustBench WideResNet pre-activation block. With `shortcut == None` (in == out):
/// `out = x + conv2(act(bn2(conv1(act(bn1(x))))))`; otherwise with `a = act(bn1(x))`:
/// `out = shortcut(a) + conv2(act(bn2(conv1(a))))`. A DMWideResNet's `batchnorm_0`, `conv_0`,
/// `batchnorm_1`, `conv_1`, `shortcut` are `bn1`, `conv1`, `bn2`, `conv2`, `shortcut`.
#[derive(Clone, Debug)]
pub struct WrnBlock {
    pub bn1: BatchNorm,
    pub conv1: Conv,
    pub bn2: BatchNorm,
    pub conv2: Conv,
    pub shortcut: Option<Conv>,
}

#[derive(Clone, Debug)]
pub enum Body {
    /// Stem conv+bn+ReLU (+ max-pool 3×3/2 for torchvision), then stages `layer1..layerK`.
    ResNet { stem: (Conv, BatchNorm), max_pool: bool, stages: Vec<Vec<ResBlock>> },
    /// Stem conv, stages `block1..block3` (a DMWideResNet's `layer.0..2`), then final bn + the
    /// activation (ReLU, or a DMWideResNet's own).
    WideResNet { stem: Conv, stages: Vec<Vec<WrnBlock>>, final_bn: BatchNorm, activation: Activation },
    /// Patch embedding `conv_proj` (kernel = stride = patch, with bias), the class token
    /// prepended, `encoder.pos_embedding` added, the blocks, `encoder.ln`; the head reads the
    /// class token.
    VisionTransformer {
        spec: VitSpec,
        conv_proj: Conv,
        conv_proj_bias: Vec<f32>,
        class_token: Vec<f32>,
        /// `[tokens, width]`.
        pos_embedding: Vec<f32>,
        blocks: Vec<EncoderBlock>,
        ln: LayerNorm,
    },
}

/// A whole classifier: body, pooled feature (global average pool, or a ViT's class token),
/// fully connected head (`fc`, or a ViT's `heads.head`).
#[derive(Clone, Debug)]
pub struct Network {
    pub spec: ArchSpec,
    pub body: Body,
    pub fc: Linear,
}

/// Name of the pooled-feature layer (input of `fc`) of the convolutional networks.
pub const POOLED_LAYER: &str = "avgpool";
/// A Vision Transformer's feature layer: `encoder.ln`'s output, class token (official name).
pub const VIT_FEATURE_LAYER: &str = "layer_norm";

impl Network {
    pub fn num_classes(&self) -> usize {
        self.fc.out_features
    }

    /// Names of the stage outputs, shallow to deep (`layer1..4`, `block1..3`, or a ViT's
    /// `layer_0..` = each block's `ln_2` output, the official names).
    pub fn stage_names(&self) -> Vec<String> {
        match &self.body {
            Body::ResNet { stages, .. } => (1..=stages.len()).map(|i| format!("layer{i}")).collect(),
            // A DMWideResNet's stages take the official names (`layer1..3`), ResNet configs run unchanged.
            Body::WideResNet { stages, .. } if matches!(self.spec, ArchSpec::DmWideResNet { .. }) => {
                (1..=stages.len()).map(|i| format!("layer{i}")).collect()
            }
            Body::WideResNet { stages, .. } => (1..=stages.len()).map(|i| format!("block{i}")).collect(),
            Body::VisionTransformer { blocks, .. } => (0..blocks.len()).map(|i| format!("layer_{i}")).collect(),
        }
    }

    /// The layer whose pooled z is the head's input: `avgpool`, or a ViT's `layer_norm`.
    pub fn feature_layer(&self) -> &'static str {
        match self.body {
            Body::VisionTransformer { .. } => VIT_FEATURE_LAYER,
            _ => POOLED_LAYER,
        }
    }

    /// The checkpoint name of the classifier head (`fc`, or a ViT's `heads.head`).
    pub fn head_name(&self) -> &'static str {
        self.spec.head_name()
    }

    /// Why an `h × w` input does not suit the network, as a phrase after its name: a ViT's
    /// learned positions fix one side; a DMWideResNet runs in PyTorch on 32×32 only (see the
    /// message). `None` for a size it takes.
    pub fn input_size_problem(&self, h: usize, w: usize) -> Option<String> {
        match (&self.body, self.spec) {
            (Body::VisionTransformer { spec, .. }, _) => ((h, w) != (spec.image, spec.image))
                .then(|| format!("takes {0}×{0} images only (its position embedding has one entry per patch of that size)", spec.image)),
            (Body::WideResNet { stages, .. }, ArchSpec::DmWideResNet { .. }) => {
                let side = 8 << (stages.len() - 1);
                ((h, w) != (side, side)).then(|| {
                    format!(
                        "takes {side}×{side} images only (its stride-2 blocks add a 1×1 shortcut to a SAME-padded conv, whose sizes agree only on even sides, and it ends in F.avg_pool2d(out, 8), the global average pool only on an 8×8 map)"
                    )
                })
            }
            _ => None,
        }
    }

    /// Every layer NAC can hook, shallow to deep: the stage outputs, then the feature layer.
    pub fn layer_names(&self) -> Vec<String> {
        let mut names = self.stage_names();
        names.push(self.feature_layer().to_string());
        names
    }

    /// Position of a layer name in `layer_names()`, or an error listing the valid names.
    pub fn layer_index(&self, name: &str) -> Result<usize> {
        let names = self.layer_names();
        names
            .iter()
            .position(|n| n == name)
            .ok_or_else(|| Error::Input(format!("unknown layer `{name}` for {}; expected one of {}", self.spec, names.join(", "))))
    }

    /// Channels of each stage's output.
    pub fn stage_channels(&self) -> Vec<usize> {
        match &self.body {
            Body::ResNet { stages, .. } => stages.iter().map(|s| s.last().unwrap().convs.last().unwrap().0.out_channels).collect(),
            Body::WideResNet { stages, .. } => stages.iter().map(|s| s.last().unwrap().conv2.out_channels).collect(),
            Body::VisionTransformer { spec, blocks, .. } => vec![spec.width; blocks.len()],
        }
    }

    /// `(layer name, channels)` of every hookable layer (`layer_names()` order).
    /// Whether a backward pass can start at `layer` with a gradient of the host's alone: any
    /// layer of a CNN; a ViT's feature layer only, because its blocks' backward also reads the
    /// residual gradient from the blocks above, which a loss of one block's output lacks.
    pub fn seeds_backward_at(&self, layer: &str) -> bool {
        layer == self.feature_layer() || !matches!(self.body, Body::VisionTransformer { .. })
    }

    pub fn layer_channels(&self) -> Vec<(String, usize)> {
        let mut channels = self.stage_channels();
        channels.push(self.fc.in_features);
        self.layer_names().into_iter().zip(channels).collect()
    }

    /// Input channels the stem expects.
    pub fn in_channels(&self) -> usize {
        match &self.body {
            Body::ResNet { stem, .. } => stem.0.in_channels,
            Body::WideResNet { stem, .. } => stem.in_channels,
            Body::VisionTransformer { conv_proj, .. } => conv_proj.in_channels,
        }
    }
}

/// What kind of parameter a tensor is: lets a synthetic source draw sensible random values.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ParamKind {
    ConvWeight {
        fan_in: usize,
    },
    BnWeight,
    BnBias,
    BnMean,
    BnVar,
    FcWeight {
        fan_in: usize,
    },
    FcBias,
    LnWeight,
    LnBias,
    /// A ViT's class token and position embedding.
    Embedding,
}

/// Where the builder takes tensors from: a checkpoint, or a random generator.
pub trait TensorSource {
    fn take(&mut self, name: &str, shape: &[usize], kind: ParamKind) -> Result<Vec<f32>>;

    /// Whether the source holds `name` (where a checkpoint may use one of two namings); a
    /// generator holds nothing and gets the current naming.
    fn has(&self, _name: &str) -> bool {
        false
    }
}

/// Takes tensors from a loaded checkpoint, checking names and shapes and remembering what was used.
pub struct StoreSource<'a> {
    store: &'a TensorStore,
    used: BTreeSet<String>,
}

impl<'a> StoreSource<'a> {
    pub fn new(store: &'a TensorStore) -> Self {
        StoreSource { store, used: BTreeSet::new() }
    }

    fn error(&self, message: String) -> Error {
        Error::Weights { path: self.store.path.clone(), message }
    }

    /// Fails on any tensor the architecture did not read (RobustBench's unused `sub_block1` aside).
    pub fn check_all_used(&self, spec: ArchSpec) -> Result<()> {
        let extra: Vec<&String> = self
            .store
            .tensors
            .keys()
            .filter(|k| !self.used.contains(*k))
            .filter(|k| !(matches!(spec, ArchSpec::WideResNet { .. }) && k.starts_with("sub_block1.")))
            .collect();
        if extra.is_empty() {
            return Ok(());
        }
        let shown: Vec<&str> = extra.iter().take(5).map(|s| s.as_str()).collect();
        Err(self.error(format!(
            "unexpected tensor `{}` for architecture {spec}{}",
            shown.join("`, `"),
            if extra.len() > 5 { format!(" (and {} more)", extra.len() - 5) } else { String::new() }
        )))
    }
}

impl TensorSource for StoreSource<'_> {
    fn has(&self, name: &str) -> bool {
        self.store.tensors.contains_key(name)
    }

    /// The tensor `name`, which must have `shape`, finite values, and (a BatchNorm
    /// `running_var`) no negative value: a NaN or Inf weight, or a negative variance (whose
    /// square root is NaN), would make every output NaN without an error.
    fn take(&mut self, name: &str, shape: &[usize], kind: ParamKind) -> Result<Vec<f32>> {
        let t = self.store.tensors.get(name).ok_or_else(|| self.error(format!("missing tensor `{name}` (expected shape {shape:?})")))?;
        if t.shape != shape {
            return Err(self.error(format!("tensor `{name}`: expected shape {shape:?}, found {:?}", t.shape)));
        }
        let bad = |v: f32| !v.is_finite() || (kind == ParamKind::BnVar && v < 0.0);
        if let Some(i) = t.data.iter().position(|&v| bad(v)) {
            let v = t.data[i];
            let why = if v.is_finite() { "a negative variance" } else { "not a finite number" };
            return Err(self.error(format!("tensor `{name}`: element {i} (index {:?}) is {v}, {why}", unravel(i, shape))));
        }
        self.used.insert(name.to_string());
        Ok(t.data.clone())
    }
}

/// The multi-index of flat element `i` of a C-order array of `shape`.
fn unravel(mut i: usize, shape: &[usize]) -> Vec<usize> {
    let mut index = vec![0; shape.len()];
    for (slot, &d) in index.iter_mut().zip(shape).rev() {
        if d > 0 {
            *slot = i % d;
            i /= d;
        }
    }
    index
}

/// Guesses the architecture from tensor names and shapes.
pub fn detect(store: &TensorStore) -> Result<ArchSpec> {
    let t = &store.tensors;
    let err = |message: String| Error::Weights { path: store.path.clone(), message };
    let count_blocks = |prefix: &str| (0..).take_while(|i| t.contains_key(&format!("{prefix}.{i}.conv1.weight"))).count();
    if t.contains_key("conv_proj.weight") || t.contains_key("class_token") {
        return detect_vit(store, None).map(ArchSpec::VisionTransformer);
    }
    if t.contains_key("init_conv.weight") {
        return detect_dm(store, None);
    }
    if t.contains_key("block1.layer.0.conv1.weight") {
        let name = "block1.layer.0.conv1.weight";
        let shape = &t[name].shape;
        let out = match shape.as_slice() {
            &[out, _, _, _] => out,
            _ => return Err(err(format!("tensor `{name}`: expected 4 dimensions [out, in, kh, kw], found shape {shape:?}"))),
        };
        if out == 0 || !out.is_multiple_of(16) {
            return Err(err(format!("tensor `{name}`: {out} output channels is not 16·k (k ≥ 1) as WideResNet requires")));
        }
        let n = count_blocks("block1.layer");
        let (depth, width) = (n.saturating_mul(6).saturating_add(4), out / 16);
        check_wrn(depth, width).map_err(|why| err(format!("WideResNet detected from `{name}` and the blocks of `block1`: {why}")))?;
        return Ok(ArchSpec::WideResNet { depth, width });
    }
    let stem = t.get("conv1.weight").ok_or_else(|| {
        let names: Vec<&str> = t.keys().take(6).map(|s| s.as_str()).collect();
        err(format!(
            "unknown architecture: no `conv1.weight`, `block1.layer.0.conv1.weight` or `init_conv.weight` (first tensors: {}); pass the architecture explicitly",
            names.join(", ")
        ))
    })?;
    let blocks: Vec<usize> = (1..=4).map(|i| count_blocks(&format!("layer{i}"))).collect();
    match stem.shape.get(2) {
        Some(3) if blocks == [2, 2, 2, 2] => Ok(ArchSpec::ResNet18_32x32),
        Some(7) => {
            let bottleneck = t.contains_key("layer1.0.conv3.weight");
            [18, 34, 50, 101, 152]
                .into_iter()
                .find(|&d| torch_resnet_layout(d).map(|(b, bn)| b.as_slice() == blocks && bn == bottleneck) == Some(true))
                .map(|depth| ArchSpec::TorchResNet { depth })
                .ok_or_else(|| err(format!("unknown architecture: 7×7 stem with blocks per stage {blocks:?} (bottleneck: {bottleneck}) matches no torchvision ResNet")))
        }
        _ => Err(err(format!("unknown architecture: stem `conv1.weight` has shape {:?} and blocks per stage {blocks:?}", stem.shape))),
    }
}

/// A DMWideResNet's depth and width from its tensors (width from `layer.0.block.0.conv_0.weight`,
/// depth from the blocks of `layer.0`); the activation from `given` (`--arch dm-wrn-swish`),
/// else the checkpoint's `activation` metadata, never guessed.
fn detect_dm(store: &TensorStore, given: Option<Activation>) -> Result<ArchSpec> {
    let t = &store.tensors;
    let err = |message: String| Error::Weights { path: store.path.clone(), message };
    let name = "layer.0.block.0.conv_0.weight";
    let shape = t
        .get(name)
        .map(|x| x.shape.as_slice())
        .ok_or_else(|| err(format!("DMWideResNet (from `init_conv.weight`): missing tensor `{name}`")))?;
    let out = match *shape {
        [out, _, _, _] if out > 0 && out.is_multiple_of(16) => out,
        _ => return Err(err(format!("tensor `{name}`: expected [16·width, 16, 3, 3] (width ≥ 1), found shape {shape:?}"))),
    };
    let n = (0..).take_while(|i| t.contains_key(&format!("layer.0.block.{i}.conv_0.weight"))).count();
    let (depth, width) = (n.saturating_mul(6).saturating_add(4), out / 16);
    check_wrn(depth, width).map_err(|why| err(format!("DMWideResNet detected from `{name}` and the blocks of `layer.0`: {why}")))?;
    let activation = match (given, store.metadata.get(ACTIVATION_METADATA)) {
        (Some(a), _) => a,
        (None, Some(text)) => Activation::parse(text)
            .ok_or_else(|| err(format!("metadata `{ACTIVATION_METADATA}` is `{text}`: expected `relu` or `swish`")))?,
        (None, None) => {
            return Err(err(format!(
                "DMWideResNet-{depth}-{width}: its activation is not in the tensors; give it as `--arch dm-wrn-swish` or `--arch dm-wrn-relu` (in full dm-wrn-{depth}-{width}-swish), or as `{ACTIVATION_METADATA}` = `swish` or `relu` in the safetensors metadata"
            )))
        }
    };
    Ok(ArchSpec::DmWideResNet { depth, width, activation })
}

/// A Vision Transformer's shape from its tensors: width and patch from `conv_proj.weight`, the
/// image side from the tokens of `encoder.pos_embedding`, depth from the blocks present, the MLP
/// width from the first block; the heads from `given` (`--arch vit-hN`), else the checkpoint's
/// `num_heads` metadata, else the torchvision family of (width, MLP width). A full `given`
/// spec must match the tensors.
fn detect_vit(store: &TensorStore, given: Option<VitSpec>) -> Result<VitSpec> {
    let t = &store.tensors;
    let err = |message: String| Error::Weights { path: store.path.clone(), message };
    let shape_of =
        |name: &str| t.get(name).map(|x| x.shape.as_slice()).ok_or_else(|| err(format!("Vision Transformer: missing tensor `{name}`")));
    let (width, patch) = match shape_of("conv_proj.weight")? {
        &[d, 3, p, q] if p == q && d > 0 && (1..=limits::MAX_IMAGE_SIDE).contains(&p) => (d, p),
        other => {
            return Err(err(format!(
                "tensor `conv_proj.weight`: expected [width, 3, patch, patch] with 1 ≤ patch ≤ {}, found shape {other:?}",
                limits::MAX_IMAGE_SIDE
            )))
        }
    };
    let tokens = match shape_of("encoder.pos_embedding")? {
        &[1, tokens, d] if d == width && tokens >= 2 => tokens,
        other => {
            return Err(err(format!(
                "tensor `encoder.pos_embedding`: expected [1, tokens ≥ 2, {width}] (width from `conv_proj.weight`), found shape {other:?}"
            )))
        }
    };
    let side = (tokens - 1).isqrt();
    if side * side != tokens - 1 {
        return Err(err(format!(
            "tensor `encoder.pos_embedding`: {tokens} tokens is not a class token plus a square grid of patches (n² + 1)"
        )));
    }
    let block = |i: usize| format!("encoder.layers.encoder_layer_{i}");
    let depth = (0..).take_while(|&i| t.contains_key(&format!("{}.ln_1.weight", block(i)))).count();
    if depth == 0 {
        return Err(err("Vision Transformer: missing tensor `encoder.layers.encoder_layer_0.ln_1.weight` (no encoder block)".into()));
    }
    let mlp_name = ["mlp.0.weight", "mlp.linear_1.weight"].iter().map(|n| format!("{}.{n}", block(0))).find(|n| t.contains_key(n));
    let mlp_name = mlp_name
        .ok_or_else(|| err(format!("Vision Transformer: missing tensor `{}.mlp.0.weight` (or `mlp.linear_1.weight`)", block(0))))?;
    let mlp = match shape_of(&mlp_name)? {
        &[m, d] if d == width && m > 0 => m,
        other => return Err(err(format!("tensor `{mlp_name}`: expected [mlp width, {width}], found shape {other:?}"))),
    };
    let heads =
        match (given.map(|g| g.heads), store.metadata.get(VIT_HEADS_METADATA)) {
            (Some(h), _) => h,
            (None, Some(text)) => text.trim().parse::<usize>().ok().filter(|&h| h > 0).ok_or_else(|| {
                err(format!("metadata `{VIT_HEADS_METADATA}` is `{text}`: expected a positive number of attention heads"))
            })?,
            (None, None) => match TORCHVISION_VIT_HEADS.iter().find(|&&(w, m, _, _)| w == width && m == mlp) {
                Some(&(_, _, h, _)) => h,
                None => {
                    return Err(err(format!(
                        "Vision Transformer of width {width} and MLP width {mlp}: the number of attention heads is not in the tensors; \
                     give it as `--arch vit-hN` or as `{VIT_HEADS_METADATA}` in the safetensors metadata (known without: {})",
                        TORCHVISION_VIT_HEADS.iter().map(|(w, m, h, n)| format!("{n} {w}/{m} → {h}")).collect::<Vec<_>>().join(", ")
                    )))
                }
            },
        };
    let image = side.checked_mul(patch).filter(|&i| i <= limits::MAX_IMAGE_SIDE).ok_or_else(|| {
        err(format!(
            "Vision Transformer: {side}×{side} patches of {patch} pixels is over the image side limit of {} (MAX_IMAGE_SIDE, see `nac::limits`)",
            limits::MAX_IMAGE_SIDE
        ))
    })?;
    let spec = VitSpec { image, patch, depth, width, heads, mlp };
    if let Some(g) = given.filter(|g| g.image > 0) {
        if g != spec {
            return Err(err(format!(
                "architecture {} does not match the tensors, which hold {}",
                ArchSpec::VisionTransformer(g),
                ArchSpec::VisionTransformer(spec)
            )));
        }
    }
    check_vit(&spec).map_err(|why| err(format!("Vision Transformer {}: {why}", ArchSpec::VisionTransformer(spec))))?;
    Ok(spec)
}

struct Builder<'s> {
    src: &'s mut dyn TensorSource,
}

impl Builder<'_> {
    fn conv(&mut self, name: &str, cin: usize, cout: usize, kernel: usize, stride: usize, padding: usize) -> Result<Conv> {
        let weight = self.src.take(
            &format!("{name}.weight"),
            &[cout, cin, kernel, kernel],
            ParamKind::ConvWeight { fan_in: cin * kernel * kernel },
        )?;
        Ok(Conv { name: name.to_string(), out_channels: cout, in_channels: cin, kernel, stride, padding, padding_end: padding, weight })
    }

    fn bn(&mut self, name: &str, c: usize) -> Result<BatchNorm> {
        Ok(BatchNorm {
            name: name.to_string(),
            gamma: self.src.take(&format!("{name}.weight"), &[c], ParamKind::BnWeight)?,
            beta: self.src.take(&format!("{name}.bias"), &[c], ParamKind::BnBias)?,
            mean: self.src.take(&format!("{name}.running_mean"), &[c], ParamKind::BnMean)?,
            var: self.src.take(&format!("{name}.running_var"), &[c], ParamKind::BnVar)?,
        })
    }

    fn linear(&mut self, name: &str, fin: usize, fout: usize) -> Result<Linear> {
        Ok(Linear {
            out_features: fout,
            in_features: fin,
            weight: self.src.take(&format!("{name}.weight"), &[fout, fin], ParamKind::FcWeight { fan_in: fin })?,
            bias: self.src.take(&format!("{name}.bias"), &[fout], ParamKind::FcBias)?,
        })
    }

    fn layer_norm(&mut self, name: &str, c: usize) -> Result<LayerNorm> {
        Ok(LayerNorm {
            name: name.to_string(),
            gamma: self.src.take(&format!("{name}.weight"), &[c], ParamKind::LnWeight)?,
            beta: self.src.take(&format!("{name}.bias"), &[c], ParamKind::LnBias)?,
        })
    }

    fn vision_transformer(&mut self, spec: ArchSpec, v: VitSpec, num_classes: usize) -> Result<Network> {
        let d = v.width;
        let conv_proj = self.conv("conv_proj", 3, d, v.patch, v.patch, 0)?;
        let conv_proj_bias = self.src.take("conv_proj.bias", &[d], ParamKind::FcBias)?;
        let class_token = self.src.take("class_token", &[1, 1, d], ParamKind::Embedding)?;
        let pos_embedding = self.src.take("encoder.pos_embedding", &[1, v.tokens(), d], ParamKind::Embedding)?;
        let mut blocks = Vec::with_capacity(v.depth);
        for i in 0..v.depth {
            let p = format!("encoder.layers.encoder_layer_{i}");
            let old_naming = self.src.has(&format!("{p}.mlp.linear_1.weight"));
            let mlp_names = if old_naming { ["mlp.linear_1", "mlp.linear_2"] } else { ["mlp.0", "mlp.3"] }.map(|n| format!("{p}.{n}"));
            let attention = format!("{p}.self_attention");
            blocks.push(EncoderBlock {
                ln_1: self.layer_norm(&format!("{p}.ln_1"), d)?,
                in_proj: Linear {
                    out_features: 3 * d,
                    in_features: d,
                    weight: self.src.take(&format!("{attention}.in_proj_weight"), &[3 * d, d], ParamKind::FcWeight { fan_in: d })?,
                    bias: self.src.take(&format!("{attention}.in_proj_bias"), &[3 * d], ParamKind::FcBias)?,
                },
                out_proj: self.linear(&format!("{attention}.out_proj"), d, d)?,
                ln_2: self.layer_norm(&format!("{p}.ln_2"), d)?,
                mlp_1: self.linear(&mlp_names[0], d, v.mlp)?,
                mlp_2: self.linear(&mlp_names[1], v.mlp, d)?,
                mlp_names,
                name: p,
            });
        }
        let ln = self.layer_norm("encoder.ln", d)?;
        let fc = self.linear("heads.head", d, num_classes)?;
        Ok(Network {
            spec,
            body: Body::VisionTransformer { spec: v, conv_proj, conv_proj_bias, class_token, pos_embedding, blocks, ln },
            fc,
        })
    }

    fn resnet(&mut self, spec: ArchSpec, num_classes: usize) -> Result<Network> {
        let (torchvision, blocks, bottleneck) = match spec {
            ArchSpec::ResNet18_32x32 => (false, [2, 2, 2, 2], false),
            ArchSpec::TorchResNet { depth } => {
                let (b, bn) = torch_resnet_layout(depth).expect("validated depth");
                (true, b, bn)
            }
            ArchSpec::WideResNet { .. } | ArchSpec::DmWideResNet { .. } | ArchSpec::VisionTransformer(_) => unreachable!(),
        };
        let stem = if torchvision { self.conv("conv1", 3, 64, 7, 2, 3)? } else { self.conv("conv1", 3, 64, 3, 1, 1)? };
        let stem = (stem, self.bn("bn1", 64)?);
        let proj_name = if torchvision { "downsample" } else { "shortcut" };
        let expansion = if bottleneck { 4 } else { 1 };
        let mut in_planes = 64;
        let mut stages = Vec::new();
        for (s, &n) in blocks.iter().enumerate() {
            let planes = 64 << s;
            let mut stage = Vec::new();
            for b in 0..n {
                let stride = if b == 0 && s > 0 { 2 } else { 1 };
                let p = format!("layer{}.{b}", s + 1);
                let mut convs = Vec::new();
                if bottleneck {
                    convs.push((self.conv(&format!("{p}.conv1"), in_planes, planes, 1, 1, 0)?, self.bn(&format!("{p}.bn1"), planes)?));
                    convs.push((self.conv(&format!("{p}.conv2"), planes, planes, 3, stride, 1)?, self.bn(&format!("{p}.bn2"), planes)?));
                    convs.push((self.conv(&format!("{p}.conv3"), planes, planes * 4, 1, 1, 0)?, self.bn(&format!("{p}.bn3"), planes * 4)?));
                } else {
                    convs.push((self.conv(&format!("{p}.conv1"), in_planes, planes, 3, stride, 1)?, self.bn(&format!("{p}.bn1"), planes)?));
                    convs.push((self.conv(&format!("{p}.conv2"), planes, planes, 3, 1, 1)?, self.bn(&format!("{p}.bn2"), planes)?));
                }
                let out = planes * expansion;
                let projection = if stride != 1 || in_planes != out {
                    Some((
                        self.conv(&format!("{p}.{proj_name}.0"), in_planes, out, 1, stride, 0)?,
                        self.bn(&format!("{p}.{proj_name}.1"), out)?,
                    ))
                } else {
                    None
                };
                stage.push(ResBlock { convs, projection });
                in_planes = out;
            }
            stages.push(stage);
        }
        let fc = self.linear("fc", in_planes, num_classes)?;
        Ok(Network { spec, body: Body::ResNet { stem, max_pool: torchvision, stages }, fc })
    }

    fn wide_resnet(&mut self, spec: ArchSpec, depth: usize, width: usize, num_classes: usize) -> Result<Network> {
        let n = (depth - 4) / 6;
        let channels = [16, 16 * width, 32 * width, 64 * width];
        let stem = self.conv("conv1", 3, channels[0], 3, 1, 1)?;
        let mut stages = Vec::new();
        for s in 0..3 {
            let mut stage = Vec::new();
            for i in 0..n {
                let (cin, cout) = (if i == 0 { channels[s] } else { channels[s + 1] }, channels[s + 1]);
                let stride = if i == 0 && s > 0 { 2 } else { 1 };
                let p = format!("block{}.layer.{i}", s + 1);
                stage.push(WrnBlock {
                    bn1: self.bn(&format!("{p}.bn1"), cin)?,
                    conv1: self.conv(&format!("{p}.conv1"), cin, cout, 3, stride, 1)?,
                    bn2: self.bn(&format!("{p}.bn2"), cout)?,
                    conv2: self.conv(&format!("{p}.conv2"), cout, cout, 3, 1, 1)?,
                    shortcut: if cin != cout { Some(self.conv(&format!("{p}.convShortcut"), cin, cout, 1, stride, 0)?) } else { None },
                });
            }
            stages.push(stage);
        }
        let final_bn = self.bn("bn1", channels[3])?;
        let fc = self.linear("fc", channels[3], num_classes)?;
        Ok(Network { spec, body: Body::WideResNet { stem, stages, final_bn, activation: Activation::Relu }, fc })
    }

    /// RobustBench's `DMWideResNet`: `conv_0` is padded by hand to TF's SAME (stride 1: 1 all
    /// round; stride 2: 0 before, 1 after), the shortcut exists where in ≠ out channels.
    fn dm_wide_resnet(
        &mut self,
        spec: ArchSpec,
        depth: usize,
        width: usize,
        activation: Activation,
        num_classes: usize,
    ) -> Result<Network> {
        let n = (depth - 4) / 6;
        let channels = [16, 16 * width, 32 * width, 64 * width];
        let stem = self.conv("init_conv", 3, channels[0], 3, 1, 1)?;
        let mut stages = Vec::new();
        for g in 0..3 {
            let mut stage = Vec::new();
            for b in 0..n {
                let (cin, cout) = (if b == 0 { channels[g] } else { channels[g + 1] }, channels[g + 1]);
                let stride = if b == 0 && g > 0 { 2 } else { 1 };
                let p = format!("layer.{g}.block.{b}");
                let mut conv_0 = self.conv(&format!("{p}.conv_0"), cin, cout, 3, stride, 1)?;
                conv_0.padding = if stride == 1 { 1 } else { 0 };
                stage.push(WrnBlock {
                    bn1: self.bn(&format!("{p}.batchnorm_0"), cin)?,
                    conv1: conv_0,
                    bn2: self.bn(&format!("{p}.batchnorm_1"), cout)?,
                    conv2: self.conv(&format!("{p}.conv_1"), cout, cout, 3, 1, 1)?,
                    shortcut: if cin != cout { Some(self.conv(&format!("{p}.shortcut"), cin, cout, 1, stride, 0)?) } else { None },
                });
            }
            stages.push(stage);
        }
        let final_bn = self.bn("batchnorm", channels[3])?;
        let fc = self.linear("logits", channels[3], num_classes)?;
        Ok(Network { spec, body: Body::WideResNet { stem, stages, final_bn, activation }, fc })
    }
}

/// Builds the typed network for `spec`, taking every parameter from `src` in the public naming.
pub fn build(spec: ArchSpec, num_classes: usize, src: &mut dyn TensorSource) -> Result<Network> {
    let mut b = Builder { src };
    match spec {
        ArchSpec::ResNet18_32x32 | ArchSpec::TorchResNet { .. } => b.resnet(spec, num_classes),
        ArchSpec::WideResNet { depth, width } => b.wide_resnet(spec, depth, width, num_classes),
        ArchSpec::DmWideResNet { depth: 0, .. } => Err(Error::Input(format!(
            "architecture {spec} names only the activation; the rest is read from a checkpoint's tensors, so a random DMWideResNet needs the full dm-wrn-DEPTH-WIDTH-ACTIVATION"
        ))),
        ArchSpec::DmWideResNet { depth, width, activation } => b.dm_wide_resnet(spec, depth, width, activation, num_classes),
        ArchSpec::VisionTransformer(v) => {
            check_vit(&v).map_err(|why| Error::Input(format!("architecture {spec}: {why}")))?;
            b.vision_transformer(spec, v, num_classes)
        }
    }
}

/// Builds a network from a checkpoint: detects (or checks) the architecture, reads the class
/// count from `fc.weight`, and rejects missing, misshapen or extra tensors.
pub fn from_store(store: &TensorStore, spec_override: Option<ArchSpec>) -> Result<Network> {
    let spec = match spec_override {
        // `vit-hN`: the heads given, the rest read from the tensors (and a full spec checked).
        Some(ArchSpec::VisionTransformer(v)) => ArchSpec::VisionTransformer(detect_vit(store, Some(v))?),
        // `dm-wrn-ACT`: the activation given, depth and width read from the tensors.
        Some(ArchSpec::DmWideResNet { depth: 0, activation, .. }) => detect_dm(store, Some(activation))?,
        Some(s) => s,
        None => detect(store)?,
    };
    let head = format!("{}.weight", spec.head_name());
    let fc = store.tensors.get(&head).ok_or_else(|| Error::Weights {
        path: store.path.clone(),
        message: format!("missing tensor `{head}` (the classifier head of {spec})"),
    })?;
    if fc.shape.len() != 2 {
        return Err(Error::Weights {
            path: store.path.clone(),
            message: format!("tensor `{head}`: expected 2 dimensions [classes, features], found {:?}", fc.shape),
        });
    }
    let num_classes = fc.shape[0];
    if num_classes == 0 {
        return Err(Error::Weights {
            path: store.path.clone(),
            message: format!("tensor `{head}`: shape {:?} has 0 rows, a classifier needs at least one class", fc.shape),
        });
    }
    let mut src = StoreSource::new(store);
    let net = build(spec, num_classes, &mut src)?;
    src.check_all_used(spec)?;
    check_foldable(&net).map_err(|message| Error::Weights { path: store.path.clone(), message })?;
    Ok(net)
}

/// Every BatchNorm's eval-mode `(scale, shift)`, and every convolution weight with the scale of
/// the BatchNorm folded into it at upload, fit in f32: finite values whose product overflows
/// (a huge `weight` over a tiny `running_var`) would reach the GPU as Inf and make the outputs
/// NaN without an error.
fn check_foldable(net: &Network) -> std::result::Result<(), String> {
    let bn_ok = |bn: &BatchNorm| -> std::result::Result<Vec<f64>, String> {
        let (scale, shift) = bn.scale_shift();
        let fits = |v: f64| (v as f32).is_finite();
        if let Some(c) = (0..scale.len()).find(|&c| !fits(scale[c]) || !fits(shift[c])) {
            return Err(format!(
                "BatchNorm `{}`: channel {c} has scale {:e} and shift {:e} (from weight, bias, running_mean, running_var), beyond f32",
                bn.name, scale[c], shift[c]
            ));
        }
        Ok(scale)
    };
    let folded = |conv: &Conv, bn: &BatchNorm| -> std::result::Result<(), String> {
        let scale = bn_ok(bn)?;
        let per_channel = conv.weight.len() / conv.out_channels.max(1);
        if let Some(i) = (0..conv.weight.len()).find(|&i| !((conv.weight[i] as f64 * scale[i / per_channel]) as f32).is_finite()) {
            return Err(format!(
                "tensor `{}.weight`: element {i} ({}) times the scale {:e} of BatchNorm `{}` overflows f32",
                conv.name,
                conv.weight[i],
                scale[i / per_channel],
                bn.name
            ));
        }
        Ok(())
    };
    match &net.body {
        Body::ResNet { stem, stages, .. } => {
            folded(&stem.0, &stem.1)?;
            for block in stages.iter().flatten() {
                for (c, b) in block.convs.iter().chain(&block.projection) {
                    folded(c, b)?;
                }
            }
        }
        Body::WideResNet { stages, final_bn, .. } => {
            for block in stages.iter().flatten() {
                bn_ok(&block.bn1)?;
                folded(&block.conv1, &block.bn2)?;
            }
            bn_ok(final_bn)?;
        }
        // Nothing is folded: LayerNorm parameters are applied as they are.
        Body::VisionTransformer { .. } => {}
    }
    Ok(())
}

impl Network {
    /// Visits every parameter tensor with its checkpoint name, in a fixed order (stem, blocks
    /// shallow to deep, head).
    pub fn for_each_param(&self, f: &mut dyn FnMut(&str, &[f32])) {
        let conv = |c: &Conv, f: &mut dyn FnMut(&str, &[f32])| f(&format!("{}.weight", c.name), &c.weight);
        let bn = |b: &BatchNorm, f: &mut dyn FnMut(&str, &[f32])| {
            for (suffix, v) in [("weight", &b.gamma), ("bias", &b.beta), ("running_mean", &b.mean), ("running_var", &b.var)] {
                f(&format!("{}.{suffix}", b.name), v);
            }
        };
        match &self.body {
            Body::ResNet { stem, stages, .. } => {
                conv(&stem.0, f);
                bn(&stem.1, f);
                for block in stages.iter().flatten() {
                    for (c, b) in block.convs.iter().chain(&block.projection) {
                        conv(c, f);
                        bn(b, f);
                    }
                }
            }
            Body::WideResNet { stem, stages, final_bn, .. } => {
                conv(stem, f);
                for block in stages.iter().flatten() {
                    bn(&block.bn1, f);
                    conv(&block.conv1, f);
                    bn(&block.bn2, f);
                    conv(&block.conv2, f);
                    if let Some(s) = &block.shortcut {
                        conv(s, f);
                    }
                }
                bn(final_bn, f);
            }
            Body::VisionTransformer { conv_proj, conv_proj_bias, class_token, pos_embedding, blocks, ln, .. } => {
                let ln_params = |l: &LayerNorm, f: &mut dyn FnMut(&str, &[f32])| {
                    f(&format!("{}.weight", l.name), &l.gamma);
                    f(&format!("{}.bias", l.name), &l.beta);
                };
                let linear = |name: &str, l: &Linear, f: &mut dyn FnMut(&str, &[f32])| {
                    f(&format!("{name}.weight"), &l.weight);
                    f(&format!("{name}.bias"), &l.bias);
                };
                f("class_token", class_token);
                conv(conv_proj, f);
                f("conv_proj.bias", conv_proj_bias);
                f("encoder.pos_embedding", pos_embedding);
                for b in blocks {
                    ln_params(&b.ln_1, f);
                    f(&format!("{}.self_attention.in_proj_weight", b.name), &b.in_proj.weight);
                    f(&format!("{}.self_attention.in_proj_bias", b.name), &b.in_proj.bias);
                    linear(&format!("{}.self_attention.out_proj", b.name), &b.out_proj, f);
                    ln_params(&b.ln_2, f);
                    linear(&b.mlp_names[0], &b.mlp_1, f);
                    linear(&b.mlp_names[1], &b.mlp_2, f);
                }
                ln_params(ln, f);
            }
        }
        let head = self.head_name();
        f(&format!("{head}.weight"), &self.fc.weight);
        f(&format!("{head}.bias"), &self.fc.bias);
    }

    /// Identity of the weights: architecture, then FNV-1a (64-bit) over every parameter's name and
    /// f32 bits. Profiles record it so they cannot be applied to another model by mistake.
    pub fn fingerprint(&self) -> String {
        let mut h = crate::fingerprint::Fnv64::new();
        self.for_each_param(&mut |name, values| {
            h.bytes(name.as_bytes());
            h.f32s(values);
        });
        format!("{}:{:016x}", self.spec, h.finish())
    }
}
