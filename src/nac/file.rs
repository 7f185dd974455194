//! Profile files: safetensors with one u32 tensor `counts.<layer>` of shape `[bins, neurons]`
//! per layer and a JSON header (metadata key `nac_profile`) saying how the counts were made.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};

use super::bins::BinEdges;
use super::params::LayerParams;
use crate::error::{write_atomic, Error, Result};
use crate::limits;

pub const PROFILE_FORMAT: &str = "nac-profile";
pub const PROFILE_VERSION: u32 = 1;
const METADATA_KEY: &str = "nac_profile";

/// How the bin edges are laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Binning {
    /// NAC-UE (spec §2): log-spaced, symmetric around 0.5, last edges 1.01 and 1.2.
    LogSymmetric,
    /// NAC-ME (spec §6): `linspace(0, 1, M)`.
    Uniform,
}

impl Binning {
    /// Whether this binning accepts `m` edges (see [`BinEdges::check_log_symmetric`] and
    /// [`BinEdges::check_uniform`]), without building them.
    pub fn check_m(self, m: usize) -> Result<()> {
        match self {
            Binning::LogSymmetric => BinEdges::check_log_symmetric(m),
            Binning::Uniform => BinEdges::check_uniform(m),
        }
    }

    pub fn edges(self, m: usize) -> Result<BinEdges> {
        match self {
            Binning::LogSymmetric => BinEdges::log_symmetric(m),
            Binning::Uniform => BinEdges::uniform(m),
        }
    }
}

/// Which profiling samples enter the histograms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Counted {
    /// Every sample (NAC-UE, spec §3).
    All,
    /// Only samples the model classifies correctly (NAC-ME, spec §6).
    Correct,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerHeader {
    pub name: String,
    pub neurons: usize,
    pub o: f64,
    pub m: usize,
    pub alpha: f64,
    /// The float64 edges, for readers that re-bin without this crate.
    pub edges: Vec<f64>,
}

/// Everything about a profile except its counts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProfileHeader {
    pub format: String,
    pub version: u32,
    pub arch: String,
    /// `Network::fingerprint()` of the profiled weights.
    pub model_fingerprint: String,
    /// What was done to the images before they became the N×3×H×W input (free text; compared
    /// for equality when a profile is used).
    pub preprocessing: String,
    pub binning: Binning,
    pub counted: Counted,
    /// Samples fed (with `counted = correct`, only the correctly classified ones are counted).
    pub samples: u64,
    pub layers: Vec<LayerHeader>,
    /// Which part of a sharded profiling run this is (`--shard i/n`); merging checks that the
    /// shards cover every part exactly once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<Shard>,
    /// The source samples counted, in order, as `[start, end)` index ranges of the input array
    /// or dataset (`nac profile` records them, merged shards keep them; empty when unknown, as
    /// after merging profiles of different inputs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<[u64; 2]>,
}

/// `indices` as ascending runs `[start, end)`, appended to `ranges` (joined to its last run
/// where they continue it).
pub fn push_index_ranges(ranges: &mut Vec<[u64; 2]>, indices: impl IntoIterator<Item = u64>) {
    for i in indices {
        match ranges.last_mut() {
            Some(last) if last[1] == i => last[1] += 1,
            _ => ranges.push([i, i + 1]),
        }
    }
}

/// Part `index` of `count` (`--shard index/count`): the `index`-th of `count` contiguous,
/// near-equal slices of the selected samples.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// Parses `i/n` with `0 ≤ i < n ≤ MAX_SHARDS`.
    pub fn parse(text: &str) -> Result<Shard> {
        let bad = |why: &str| Error::Input(format!("--shard `{text}`: {why}; expected INDEX/COUNT with 0 ≤ INDEX < COUNT, e.g. 0/4"));
        let (i, n) = text.split_once('/').ok_or_else(|| bad("no `/`"))?;
        let (index, count): (usize, usize) = (
            i.trim().parse().map_err(|_| bad("INDEX is not a whole number"))?,
            n.trim().parse().map_err(|_| bad("COUNT is not a whole number"))?,
        );
        if count == 0 || index >= count {
            return Err(bad("INDEX must be below COUNT"));
        }
        limits::check("the shard count", count, limits::MAX_SHARDS, "MAX_SHARDS")?;
        Ok(Shard { index, count })
    }

    /// This shard's positions among `total` selected samples.
    pub fn range(self, total: usize) -> std::ops::Range<usize> {
        let at = |k: usize| (k as u128 * total as u128 / self.count as u128) as usize;
        at(self.index)..at(self.index + 1)
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl ProfileHeader {
    pub fn layer_names(&self) -> Vec<&str> {
        self.layers.iter().map(|l| l.name.as_str()).collect()
    }

    /// Differences that forbid summing two profiles' counts, named.
    fn mismatch(&self, other: &ProfileHeader) -> Option<String> {
        let checks = [
            (self.arch != other.arch, format!("architecture {} vs {}", self.arch, other.arch)),
            (
                self.model_fingerprint != other.model_fingerprint,
                format!("model fingerprint {} vs {}", self.model_fingerprint, other.model_fingerprint),
            ),
            (self.preprocessing != other.preprocessing, format!("preprocessing `{}` vs `{}`", self.preprocessing, other.preprocessing)),
            (self.binning != other.binning, format!("binning {:?} vs {:?}", self.binning, other.binning)),
            (self.counted != other.counted, format!("counted samples {:?} vs {:?}", self.counted, other.counted)),
            (
                self.layer_names() != other.layer_names(),
                format!("layers {} vs {}", self.layer_names().join(","), other.layer_names().join(",")),
            ),
        ];
        if let Some((_, why)) = checks.into_iter().find(|(differs, _)| *differs) {
            return Some(why);
        }
        self.layers
            .iter()
            .zip(&other.layers)
            .find(|(a, b)| a != b)
            .map(|(a, b)| format!("layer `{}` settings O/M/α {}/{}/{} vs {}/{}/{}", a.name, a.o, a.m, a.alpha, b.o, b.m, b.alpha))
    }
}

/// A profile on the host: header and counts (`[bins][neurons]` per layer, row-major).
#[derive(Clone, Debug, PartialEq)]
pub struct ProfileData {
    pub header: ProfileHeader,
    pub counts: Vec<Vec<u32>>,
}

/// Shards merge only as a whole: all parts are shards of one count, each index exactly once;
/// or none is a shard.
fn check_shards(parts: &[ProfileData], names: &[String]) -> Result<()> {
    let name = |k: usize| names.get(k).cloned().unwrap_or_else(|| format!("part {}", k + 1));
    let Some(k) = parts.iter().position(|p| p.header.shard.is_some()) else { return Ok(()) };
    let count = parts[k].header.shard.map_or(0, |s| s.count);
    let mut seen: Vec<Option<usize>> = vec![None; count];
    for (i, part) in parts.iter().enumerate() {
        match part.header.shard {
            None => {
                return Err(Error::Input(format!(
                    "{} is not a shard, but {} is shard {}: merge shards of one run only",
                    name(i),
                    name(k),
                    parts[k].header.shard.unwrap()
                )))
            }
            Some(s) if s.count != count => {
                return Err(Error::Input(format!(
                    "{} is shard {s}, but {} is shard {} (another shard count)",
                    name(i),
                    name(k),
                    parts[k].header.shard.unwrap()
                )))
            }
            Some(s) => match seen[s.index] {
                Some(j) => return Err(Error::Input(format!("shard {s} is given twice: {} and {}", name(j), name(i)))),
                None => seen[s.index] = Some(i),
            },
        }
    }
    let missing: Vec<String> = seen.iter().enumerate().filter(|(_, s)| s.is_none()).map(|(i, _)| format!("{i}/{count}")).collect();
    if !missing.is_empty() {
        return Err(Error::Input(format!("shard {} missing: the {count} shards must all be merged", missing.join(", "))));
    }
    Ok(())
}

impl ProfileData {
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let header = serde_json::to_string(&self.header).map_err(|e| Error::Input(format!("encoding the profile header: {e}")))?;
        let bytes: Vec<Vec<u8>> = self.counts.iter().map(|c| c.iter().flat_map(|v| v.to_le_bytes()).collect()).collect();
        let views = self
            .header
            .layers
            .iter()
            .zip(&bytes)
            .map(|(l, b)| {
                let view = safetensors::tensor::TensorView::new(Dtype::U32, vec![l.m - 1, l.neurons], b)
                    .map_err(|e| Error::Input(format!("counts of layer `{}`: {e}", l.name)))?;
                Ok((format!("counts.{}", l.name), view))
            })
            .collect::<Result<Vec<_>>>()?;
        safetensors::serialize(views, Some(HashMap::from([(METADATA_KEY.to_string(), header)])))
            .map_err(|e| Error::Input(format!("serialising the profile: {e}")))
    }

    /// Writes the profile atomically (temp file, then rename).
    pub fn save(&self, path: &Path) -> Result<()> {
        write_atomic(path, &self.to_bytes()?)
    }

    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::Io { path: path.to_path_buf(), source: e })?;
        Self::from_bytes(&bytes, path)
    }

    /// Parses and validates a profile: format and version; layers (at most `MAX_LAYERS`,
    /// names distinct) whose settings pass [`LayerParams::validate_for`] like settings given on
    /// the command line, with 1 to `MAX_LAYER_NEURONS` neurons; edges equal to what the binning
    /// and M produce; counts present with the shapes the header implies, and no neuron counted
    /// more often than there were samples. Every size is checked before it sizes an allocation.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self> {
        let fail = |message: String| Error::Weights { path: PathBuf::from(path), message };
        let tensors = SafeTensors::deserialize(bytes).map_err(|e| fail(crate::model::weights::invalid_safetensors(bytes, &e)))?;
        let (_, metadata) = SafeTensors::read_metadata(bytes).map_err(|e| fail(crate::model::weights::invalid_safetensors(bytes, &e)))?;
        let header_text = metadata
            .metadata()
            .as_ref()
            .and_then(|m| m.get(METADATA_KEY))
            .ok_or_else(|| fail(format!("no `{METADATA_KEY}` header: not a NAC profile")))?;
        let header: ProfileHeader = serde_json::from_str(header_text).map_err(|e| fail(format!("profile header: {e}")))?;
        if header.format != PROFILE_FORMAT || header.version != PROFILE_VERSION {
            return Err(fail(format!(
                "profile format {} version {}; this build reads {PROFILE_FORMAT} version {PROFILE_VERSION}",
                header.format.escape_debug(),
                header.version
            )));
        }
        if header.layers.is_empty() {
            return Err(fail("the profile has no layers".into()));
        }
        limits::check("layers in the profile", header.layers.len(), limits::MAX_LAYERS, "MAX_LAYERS").map_err(|e| fail(e.to_string()))?;
        let mut counts = Vec::with_capacity(header.layers.len());
        for (i, layer) in header.layers.iter().enumerate() {
            let lfail = |why: String| fail(format!("layer `{}`: {why}", layer.name.escape_debug()));
            if header.layers[..i].iter().any(|l| l.name == layer.name) {
                return Err(lfail("listed twice".into()));
            }
            LayerParams::new(&layer.name, layer.o, layer.m, layer.alpha).validate_for(header.binning).map_err(|e| fail(e.to_string()))?;
            if layer.neurons == 0 {
                return Err(lfail("0 neurons".into()));
            }
            limits::check("neurons", layer.neurons, limits::MAX_LAYER_NEURONS, "MAX_LAYER_NEURONS").map_err(|e| lfail(e.to_string()))?;
            let expected = header.binning.edges(layer.m).map_err(|e| lfail(e.to_string()))?;
            if expected.edges != layer.edges {
                return Err(lfail(format!("the edges in the header are not the {:?} edges for M = {}", header.binning, layer.m)));
            }
            let name = format!("counts.{}", layer.name);
            let t = tensors.tensor(&name).map_err(|_| fail(format!("missing tensor `{}`", name.escape_debug())))?;
            let (bins, neurons) = (layer.m - 1, layer.neurons);
            if t.dtype() != Dtype::U32 || t.shape() != [bins, neurons] {
                return Err(fail(format!(
                    "tensor `{}`: expected U32 {:?}, found {:?} {:?}",
                    name.escape_debug(),
                    [bins, neurons],
                    t.dtype(),
                    t.shape()
                )));
            }
            // The tensor's bytes are in the file (checked by the safetensors parser): this
            // allocation is no larger than the file.
            let c: Vec<u32> = t.data().chunks_exact(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
            // Each counted sample adds one to at most one bin of every neuron.
            let mut per_neuron = vec![0u64; neurons];
            for row in c.chunks_exact(neurons) {
                for (sum, &v) in per_neuron.iter_mut().zip(row) {
                    *sum += v as u64;
                }
            }
            if let Some((j, &sum)) = per_neuron.iter().enumerate().find(|(_, &sum)| sum > header.samples) {
                return Err(lfail(format!(
                    "neuron {j} is counted {sum} times over its bins, more than the header's {} samples",
                    header.samples
                )));
            }
            counts.push(c);
        }
        if tensors.len() != header.layers.len() {
            return Err(fail(format!("{} tensors for {} layers", tensors.len(), header.layers.len())));
        }
        Ok(ProfileData { header, counts })
    }

    /// Sums the counts of profiles built with the same model and settings (shards of one
    /// profiling set); `names` label the parts in errors.
    pub fn merge(parts: &[ProfileData], names: &[String]) -> Result<ProfileData> {
        let (first, rest) = parts.split_first().ok_or_else(|| Error::Input("nothing to merge".into()))?;
        check_shards(parts, names)?;
        let mut merged = first.clone();
        merged.header.shard = None;
        // Source indices only mean something within one source: shards of one run give the
        // run's (in shard order); profiles of other inputs merge into "unknown".
        let mut order: Vec<&ProfileData> = parts.iter().collect();
        order.sort_by_key(|p| p.header.shard.map_or(0, |s| s.index));
        merged.header.sources = Vec::new();
        if first.header.shard.is_some() && order.iter().all(|p| !p.header.sources.is_empty()) {
            for part in order {
                push_index_ranges(&mut merged.header.sources, part.header.sources.iter().flat_map(|r| r[0]..r[1]));
            }
        }
        for (i, part) in rest.iter().enumerate() {
            let name = |k: usize| names.get(k).cloned().unwrap_or_else(|| format!("part {}", k + 1));
            if let Some(why) = first.header.mismatch(&part.header) {
                return Err(Error::Input(format!("cannot merge {} into {}: {why}", name(i + 1), name(0))));
            }
            merged.header.samples =
                merged.header.samples.checked_add(part.header.samples).ok_or_else(|| {
                    Error::Input(format!("cannot merge {} into {}: the sample counts overflow u64", name(i + 1), name(0)))
                })?;
            if merged.counts.len() != part.counts.len() || merged.counts.iter().zip(&part.counts).any(|(a, b)| a.len() != b.len()) {
                return Err(Error::Input(format!("cannot merge {} into {}: count arrays differ in size", name(i + 1), name(0))));
            }
            for (acc, add) in merged.counts.iter_mut().zip(&part.counts) {
                for (a, b) in acc.iter_mut().zip(add) {
                    *a = a.checked_add(*b).ok_or_else(|| Error::Input(format!("merging {}: counts overflow u32", name(i + 1))))?;
                }
            }
        }
        Ok(merged)
    }
}
